"""Lightning callbacks shared by the training entry points."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

from ..data.decode import PARTIAL
from ..data.failures import FailureLog

__all__ = ["DecodeFailureSummary", "DataWaitTimer"]

log = logging.getLogger(__name__)

_FILE_LEVEL = ("missing", "empty", "not_media")  # failures of the whole file, reported for both modalities


class DecodeFailureSummary(pl.Callback):
    """Counts masked modalities (bad or missing clips) from each batch and summarises them at the end
    of every train/validation epoch: printed once, and logged as ``data/<split>_<modality>_<reason>``.

    Clips without an audio track (``no_audio``) are masked but are not failures: not counted here.
    Streams that decode only partway (``video_partial`` / ``audio_partial`` of the batch: a file cut
    short, kept for training) are counted as ``<modality>_partial``.
    """

    def __init__(self) -> None:
        self.logs = {"train": FailureLog(), "val": FailureLog()}

    def _record(self, split: str, batch) -> None:
        if not isinstance(batch, dict) or "ids" not in batch:
            return
        failures = self.logs[split]
        for vid, v_err, a_err in zip(batch["ids"], batch.get("video_error", []), batch.get("audio_error", [])):
            if v_err:
                failures.record(str(vid), "video", v_err)
            if a_err and a_err != "no_audio" and a_err not in _FILE_LEVEL:  # file-level: counted once, as video
                failures.record(str(vid), "audio", a_err)
        for modality in ("video", "audio"):
            for vid, share in zip(batch["ids"], batch.get(f"{modality}_partial", [])):
                if share is not None:
                    failures.record(str(vid), modality, PARTIAL, f"decodes {share:.0%}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._record("train", batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._record("val", batch)

    def _summarize(self, split: str, trainer, pl_module) -> None:
        failures = self.logs[split]
        if failures.total():
            counts = {f"data/{split}_{k.replace('/', '_')}": float(v) for k, v in failures.as_dict().items()}
            pl_module.log_dict(counts, on_epoch=True, rank_zero_only=True)
            if trainer.is_global_zero:
                log.warning("epoch %d %s decode summary:\n%s", trainer.current_epoch, split, failures.summary())
        failures.reset()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._summarize("train", trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._summarize("val", trainer, pl_module)


class DataWaitTimer(pl.Callback):
    """Measures the share of training step time spent waiting for the next batch.

    ``wait`` is the time from the end of one step to the start of the next (the loader's
    ``__next__``), ``step`` the time inside the step. Logged as ``perf/data_wait_share``.
    """

    def __init__(self) -> None:
        self.wait = 0.0
        self.busy = 0.0
        self.steps = 0
        self._last_end: float | None = None
        self._start: float | None = None
        self._seen = 0  # batches started; only the very first (worker start-up) is excluded

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        if self._last_end is not None and self._seen > 0:  # the first batch pays worker start-up; later
            self.wait += self._start - self._last_end  # epochs' first batches (pipeline refill) count
        self._seen += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = time.perf_counter()
        if self._start is not None and self._seen > 1:
            self.busy += end - self._start
            self.steps += 1
        self._last_end = end

    @property
    def wait_share(self) -> float:
        total = self.wait + self.busy
        return self.wait / total if total > 0 else 0.0

    @property
    def steps_per_second(self) -> float:
        total = self.wait + self.busy
        return self.steps / total if total > 0 else 0.0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log_dict({"perf/data_wait_share": self.wait_share, "perf/steps_per_s": self.steps_per_second},
                           rank_zero_only=True)
