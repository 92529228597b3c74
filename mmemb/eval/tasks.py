"""The evaluation tasks of ``mmemb eval`` (``evaluate.py``) on a model's outputs over a split.

:func:`embed_split` runs a module (:class:`~mmemb.lit.module.EmbeddingModule`, or any module whose
``module(batch)`` returns ``video`` and ``text`` embeddings) over a DataLoader and keeps, per sample: the id, the ``video`` and ``text``
embeddings, ``multimodal`` when the model has a fused path, the masks, the category and, when the
model scores hashtags, the hashtag scores and targets. :func:`task_metrics` turns that into one flat
dict of metrics:

* **retrieval** (:func:`mmemb.eval.metrics.retrieval_metrics`, keys unchanged): text-to-video and
  video-to-text recall@1/5/10 and median rank, category and instance level, each with its chance.
  A sample is in the video gallery when its video embedding is not a zero row (the models zero the
  rows of videos without frames *and* audio), in the text queries when ``text_mask`` is set.
* **hashtags** (:func:`mmemb.eval.tagging.tagging_metrics`): ``hashtag_p1``, ``hashtag_r5``,
  ``hashtag_map`` over the videos with at least one hashtag of the vocabulary (the others are
  excluded and counted in ``hashtag_n_excluded``), and the **label popularity baseline**
  ``hashtag_{p1,r5,map}_popularity``: every video gets the train split's share of each hashtag.
  Scores come from ``module.hashtag_scores(out)`` when the module has that method (the head's logits,
  or a zero-shot fallback for a model without a head; it is called with ``batch=`` too when its
  signature takes a ``batch`` argument, and may return None), else from ``out["hashtag_logits"]``;
  a model with neither gets the baseline only.
* **category linear probe** (:func:`mmemb.eval.probe.linear_probe`): a logistic regression trained
  on the frozen video embeddings of the train split (evaluation-mode decoding) and scored on the
  evaluated split: ``probe_video_accuracy``, ``probe_video_macro_f1`` and the majority-class
  baseline ``probe_video_chance_majority``; the same on ``multimodal`` (``probe_multimodal_*``) when
  the model has it. Rows without the embedded modality or without a category are left out.

:func:`ensemble_outputs` combines the outputs of several models on the same split into those of
their weighted-concatenation ensemble (:func:`mmemb.eval.ensemble.ensemble`), so an ensemble is
scored by the same :func:`task_metrics`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .ensemble import ensemble
from .metrics import retrieval_metrics
from .probe import linear_probe
from .report import progress
from .tagging import label_popularity_scores, tagging_metrics

__all__ = [
    "SplitOutputs",
    "call_hashtag_scores",
    "embed_split",
    "train_hashtag_targets",
    "hashtag_task",
    "probe_task",
    "task_metrics",
    "ensemble_outputs",
]

log = logging.getLogger(__name__)

RETRIEVAL_KS = (1, 5, 10)


@dataclass
class SplitOutputs:
    """A model's outputs over one split, row ``i`` = sample ``ids[i]`` (numpy, on the CPU)."""

    ids: list[str]
    video: np.ndarray  # (N, D) float32, zero rows without video
    text: np.ndarray  # (N, D) float32, zero rows without text
    video_mask: np.ndarray  # (N,) bool
    text_mask: np.ndarray  # (N,) bool
    category: np.ndarray  # (N,) int64, -1 unknown
    multimodal: np.ndarray | None = None  # (N, D) fused embedding (teacher)
    multimodal_mask: np.ndarray | None = None  # (N,) bool
    hashtag_scores: np.ndarray | None = None  # (N, H)
    hashtag_targets: np.ndarray | None = None  # (N, H) multi-hot
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "SplitOutputs":
        """The outputs of ``rows`` (indices), in that order."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return replace(self, ids=[self.ids[i] for i in rows], video=self.video[rows], text=self.text[rows],
                       video_mask=self.video_mask[rows], text_mask=self.text_mask[rows],
                       category=self.category[rows], multimodal=pick(self.multimodal),
                       multimodal_mask=pick(self.multimodal_mask), hashtag_scores=pick(self.hashtag_scores),
                       hashtag_targets=pick(self.hashtag_targets))


# ----------------------------------------------------------------------------- running the model


def _takes_batch(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "batch" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_hashtag_scores(module, out: dict, batch: dict) -> torch.Tensor | None:
    """``(B, H)`` hashtag scores of a forward output, or None (see the module docstring)."""
    fn = getattr(module, "hashtag_scores", None)
    if callable(fn):
        scores = fn(out, batch=batch) if _takes_batch(fn) else fn(out)
        if scores is not None:
            return scores
    return out.get("hashtag_logits")


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _nonzero_rows(x: torch.Tensor) -> torch.Tensor:
    return (x != 0).any(dim=-1)


@torch.inference_mode()
def embed_split(module, loader: Iterable[dict], device: str | torch.device = "cpu", show_progress: bool = True,
                desc: str = "embedding", hashtags: bool = True) -> SplitOutputs:
    """Run ``module`` over ``loader`` and collect its :class:`SplitOutputs` (see the module docstring)."""
    device = torch.device(device)
    module.eval().to(device)
    parts: dict[str, list] = {}
    ids: list[str] = []
    warned = False
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch in progress(loader, total=total, desc=desc, unit="batch", enabled=show_progress):
        batch = _to_device(batch, device)
        out = module(batch)
        ids += [str(i) for i in batch["ids"]]
        row = {
            "video": out["video"].float(),
            "text": out["text"].float(),
            "video_mask": _nonzero_rows(out["video"]),
            "text_mask": batch["text_mask"].bool() if "text_mask" in batch else _nonzero_rows(out["text"]),
            "category": batch["category"].long(),
        }
        if "multimodal" in out:
            row["multimodal"] = out["multimodal"].float()
            row["multimodal_mask"] = out["multimodal_mask"].bool() if "multimodal_mask" in out \
                else _nonzero_rows(out["multimodal"])
        if hashtags and "hashtag_targets" in batch and batch["hashtag_targets"].shape[-1] > 0:
            scores = call_hashtag_scores(module, out, batch)
            if scores is not None and scores.shape != batch["hashtag_targets"].shape:
                if not warned:
                    log.warning("hashtag scores %s do not match the targets %s (another vocabulary?): skipped",
                                tuple(scores.shape), tuple(batch["hashtag_targets"].shape))
                    warned = True
                scores = None
            if scores is not None:
                row["hashtag_scores"] = scores.float()
            row["hashtag_targets"] = batch["hashtag_targets"].float()
        for key, value in row.items():
            parts.setdefault(key, []).append(value.detach().cpu())
    if not ids:
        raise ValueError(f"{desc}: the split is empty")
    arrays = {k: torch.cat(v).numpy() for k, v in parts.items()}
    if "hashtag_scores" in arrays and arrays["hashtag_scores"].shape[0] != len(ids):
        arrays.pop("hashtag_scores")  # scored in some batches only
    return SplitOutputs(ids=ids, video=arrays["video"], text=arrays["text"], video_mask=arrays["video_mask"],
                        text_mask=arrays["text_mask"], category=arrays["category"].astype(np.int64),
                        multimodal=arrays.get("multimodal"), multimodal_mask=arrays.get("multimodal_mask"),
                        hashtag_scores=arrays.get("hashtag_scores"), hashtag_targets=arrays.get("hashtag_targets"))


def train_hashtag_targets(dm) -> np.ndarray:
    """``(N_train, H)`` multi-hot hashtag targets of the train split, from the records (no decoding)."""
    from ..data.dataset import encode_labels

    records = dm.splits["train"]
    h = len(dm.vocabs.hashtags)
    if not records or h == 0:
        return np.zeros((len(records), h), np.float32)
    return np.stack([encode_labels(r, dm.vocabs, None, None)["hashtag_targets"].numpy() for r in records])


# ----------------------------------------------------------------------------- tasks


def hashtag_task(scores: np.ndarray | None, targets: np.ndarray | None,
                 train_targets: np.ndarray | None = None) -> dict[str, float]:
    """``hashtag_{p1,r5,map,n_samples,n_excluded}`` of ``scores`` and the popularity baseline
    ``hashtag_{p1,r5,map}_popularity`` from ``train_targets``; empty without targets or labels."""
    if targets is None or targets.ndim != 2 or targets.shape[1] == 0:
        return {}
    out: dict[str, float] = {}
    if scores is not None:
        out.update({f"hashtag_{k}": v for k, v in tagging_metrics(scores, targets, ks=(1, 5)).items()})
    if train_targets is not None and train_targets.shape[1] == targets.shape[1]:
        base = tagging_metrics(label_popularity_scores(train_targets, targets.shape[0]), targets, ks=(1, 5))
        out.update({f"hashtag_{k}_popularity": base[k] for k in ("p1", "r5", "map")})
        out.setdefault("hashtag_n_samples", base["n_samples"])
        out.setdefault("hashtag_n_excluded", base["n_excluded"])
    return out


PROBE_KEYS = ("accuracy", "macro_f1", "chance_majority", "chance_uniform", "num_classes", "n_train", "n_test")


def probe_task(name: str, train_x: np.ndarray, train_mask: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
               test_mask: np.ndarray, test_y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``probe_{name}_*``: the category linear probe on the rows that have the embedding; empty (with a
    warning) when the train rows hold fewer than two known categories."""
    try:
        m = linear_probe(train_x[train_mask], train_y[train_mask], test_x[test_mask], test_y[test_mask], seed=seed)
    except ValueError as err:
        log.warning("category probe on %s embeddings skipped: %s", name, err)
        return {}
    return {f"probe_{name}_{k}": m[k] for k in PROBE_KEYS}


def task_metrics(ev: SplitOutputs, train: SplitOutputs | None = None, train_targets: np.ndarray | None = None,
                 ks: Sequence[int] = RETRIEVAL_KS, seed: int = 0) -> dict[str, float]:
    """Every task's metrics on the evaluated split ``ev``; the probe needs ``train`` (the train
    split's outputs), the popularity baseline ``train_targets`` (see the module docstring)."""
    metrics = retrieval_metrics(ev.video, ev.text, ev.category, ev.video_mask, ev.text_mask, ks=ks)
    metrics.update(hashtag_task(ev.hashtag_scores, ev.hashtag_targets, train_targets))
    if train is not None:
        metrics.update(probe_task("video", train.video, train.video_mask, train.category, ev.video, ev.video_mask,
                                  ev.category, seed))
        if ev.multimodal is not None and train.multimodal is not None:
            metrics.update(probe_task("multimodal", train.multimodal, train.multimodal_mask, train.category,
                                      ev.multimodal, ev.multimodal_mask, ev.category, seed))
    return metrics


# ----------------------------------------------------------------------------- ensembles


def _aligned(members: Sequence[SplitOutputs]) -> list[SplitOutputs]:
    """The members reordered to the first one's ids (each must hold exactly the same ids)."""
    ref = members[0].ids
    out = [members[0]]
    for i, m in enumerate(members[1:], start=1):
        if m.ids == ref:
            out.append(m)
            continue
        if sorted(m.ids) != sorted(ref):
            raise ValueError(f"ensemble member {i} was evaluated on other samples ({len(m.ids)} vs {len(ref)} ids): "
                             "the members must share the manifest and the split")
        where = {v: j for j, v in enumerate(m.ids)}
        out.append(m.take(np.array([where[v] for v in ref])))
    for i, m in enumerate(out[1:], start=1):
        if not np.array_equal(m.category, out[0].category):
            raise ValueError(f"ensemble member {i} has other categories for the same ids (another vocabulary?)")
    return out


def _row_standardised(x: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (constant rows -> 0): the members' scores
    (logits, cosines) are on different scales; a row's label ranking is unchanged."""
    x = x.astype(np.float64)
    sd = x.std(axis=1, keepdims=True)
    return np.where(sd > 0, (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)


def ensemble_outputs(members: Sequence[SplitOutputs], weights: Sequence[float]) -> SplitOutputs:
    """The outputs of the weighted-concatenation ensemble of ``members`` (same split, same ids).

    ``video``, ``text`` and (when every member has it) ``multimodal`` are :func:`ensemble` of the
    members' embeddings; a modality is present when any member has it. Hashtag scores are the
    weighted mean of the members' row-standardised scores when all have scores over the same number
    of labels (so the ensemble of a model with itself ranks labels as the model does).
    """
    if len(members) != len(weights) or not members:
        raise ValueError(f"got {len(members)} members and {len(weights)} weights")
    ms = _aligned(members)
    w = [float(x) for x in weights]
    any_of = lambda masks: np.logical_or.reduce(masks)  # noqa: E731
    mm = mm_mask = None
    if all(m.multimodal is not None for m in ms):
        mm = ensemble([m.multimodal for m in ms], w)
        mm_mask = any_of([m.multimodal_mask for m in ms])
    scores = None
    if all(m.hashtag_scores is not None for m in ms) and len({m.hashtag_scores.shape for m in ms}) == 1:
        scores = sum(wi * _row_standardised(m.hashtag_scores) for wi, m in zip(w, ms)) / sum(w)
    return SplitOutputs(ids=list(ms[0].ids), video=ensemble([m.video for m in ms], w),
                        text=ensemble([m.text for m in ms], w), video_mask=any_of([m.video_mask for m in ms]),
                        text_mask=any_of([m.text_mask for m in ms]), category=ms[0].category.copy(),
                        multimodal=mm, multimodal_mask=mm_mask, hashtag_scores=scores,
                        hashtag_targets=ms[0].hashtag_targets)
