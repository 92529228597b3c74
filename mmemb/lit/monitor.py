"""Checkpoint monitors that exist for the data: the best checkpoint of a run on text-only data.

The configs keep the best checkpoint by category-level text->video recall@1
(``val/t2v_r1_category``). On a manifest whose validation videos have no clip (KuaiRec imported by
``mmemb data import-kuairec``: captions, cover texts and hashtags only) every retrieval metric is NaN, so
"best" would mean nothing. Before training, :func:`adapt_checkpoint_monitors` looks at the validation
split and, for every :class:`~pytorch_lightning.callbacks.ModelCheckpoint` whose monitor cannot be
computed on it:

* a video-text retrieval monitor (``val/t2v_*``, ``val/v2t_*``) on a validation split without clips
  switches to validation hashtag mAP (``val/hashtag_map``, mode ``max``; the metric name in the
  checkpoint file name follows), logged as a warning, when some validation video carries a hashtag of
  the label vocabulary;
* otherwise (no clip and no known hashtag, or a hashtag monitor without labelled validation videos)
  :class:`~mmemb.errors.ConfigError` says which monitor, why, and what to set instead.

Monitors that the data can compute are left alone, as is any monitor of another metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from ..data.manifest import VideoRecord
from ..data.vocab import Vocabularies, record_label_ids
from ..errors import ConfigError

__all__ = ["TEXT_ONLY_MONITOR", "ValidationContent", "validation_content", "needs_video", "needs_hashtags",
           "adapt_checkpoint_monitors"]

log = logging.getLogger(__name__)

TEXT_ONLY_MONITOR = "val/hashtag_map"  # the monitor of a run whose validation videos have no clip
_VIDEO_METRICS = ("t2v_", "v2t_")  # retrieval metrics between the video and text embeddings (need clips)
_HASHTAG_METRICS = ("hashtag_",)  # hashtag recommendation metrics (need labelled validation videos)
_OPTIONS = ("set the ModelCheckpoint's `monitor` in the config's trainer.callbacks to a metric this data logs "
            "(e.g. `monitor: val/loss` with `mode: min`), or `monitor: null` to keep only the last checkpoint")


@dataclass(frozen=True)
class ValidationContent:
    """What the validation split can be scored on."""

    videos: int  # validation videos
    with_clip: int  # ... that have a clip (retrieval metrics exist)
    with_hashtag: int  # ... that carry at least one hashtag of the label vocabulary (hashtag metrics exist)


def validation_content(records: Sequence[VideoRecord], vocabs: Vocabularies) -> ValidationContent:
    """Count the validation ``records`` with a clip and with a known hashtag (as the batches see them)."""
    with_hashtag = sum(1 for r in records if r.hashtags and record_label_ids(r, vocabs)[0])
    return ValidationContent(len(records), sum(1 for r in records if r.video), with_hashtag)


def _metric(monitor: str) -> str:
    """``val/t2v_r1_category`` -> ``t2v_r1_category``."""
    return monitor.split("/", 1)[1] if "/" in monitor else monitor


def needs_video(monitor: str) -> bool:
    """Whether ``monitor`` is a video-text retrieval metric."""
    return _metric(monitor).startswith(_VIDEO_METRICS)


def needs_hashtags(monitor: str) -> bool:
    """Whether ``monitor`` is a hashtag recommendation metric."""
    return _metric(monitor).startswith(_HASHTAG_METRICS)


def _switch(callback: ModelCheckpoint, monitor: str) -> None:
    """Make ``callback`` keep the checkpoint of highest ``monitor`` (before training: nothing saved yet)."""
    old = callback.monitor
    if callback.filename:  # the metric in the file name follows the monitor
        callback.filename = callback.filename.replace(old, monitor).replace(_metric(old), _metric(monitor))
    callback.monitor = monitor
    callback.mode = "max"
    callback.kth_value = torch.tensor(-torch.inf)  # what ModelCheckpoint sets for mode "max"


def adapt_checkpoint_monitors(callbacks: Sequence[object], content: ValidationContent, num_hashtags: int,
                              source: str) -> list[str]:
    """Switch or reject the monitors of the :class:`ModelCheckpoint` ``callbacks`` that ``content``
    cannot compute (see the module docstring); returns one line per switched monitor. ``num_hashtags``:
    the size of the hashtag vocabulary; ``source``: the manifest and config files, for the messages."""
    if content.videos == 0:  # no validation loop: no monitor is ever computed, nothing to choose
        return []
    changes = []
    for cb in callbacks:
        if not isinstance(cb, ModelCheckpoint) or not cb.monitor:
            continue
        monitor = cb.monitor
        hashtags_ok = num_hashtags > 0 and content.with_hashtag > 0
        if needs_video(monitor) and content.with_clip == 0:
            if not hashtags_ok:
                raise ConfigError(
                    f"checkpoint monitor {monitor!r} ({source}) is a video-text retrieval metric, but none of the "
                    f"{content.videos} validation videos has a clip, so it would be NaN; and none carries a "
                    f"hashtag of the vocabulary ({num_hashtags} hashtags), so {TEXT_ONLY_MONITOR!r} cannot "
                    f"replace it: {_OPTIONS}")
            _switch(cb, TEXT_ONLY_MONITOR)
            changes.append(f"checkpoint monitor {monitor!r} -> {TEXT_ONLY_MONITOR!r} (mode max): none of the "
                           f"{content.videos} validation videos has a clip, {content.with_hashtag} carry hashtags "
                           f"({source})")
        elif needs_hashtags(monitor) and not hashtags_ok:
            raise ConfigError(
                f"checkpoint monitor {monitor!r} ({source}) is a hashtag metric, but none of the {content.videos} "
                f"validation videos carries a hashtag of the vocabulary ({num_hashtags} hashtags; lower "
                f"data.labels.hashtag_min_freq or add labelled videos): {_OPTIONS}")
    for line in changes:
        log.warning(line)
    return changes
