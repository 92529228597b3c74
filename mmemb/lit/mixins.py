"""What the LightningModules share: rebuilding from a checkpoint without unpickling code, resuming
from an end-of-epoch checkpoint at the right batch, and the validation/test loop (collect per-batch
outputs, merge them across DDP ranks at the end of the epoch, score them, log)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..eval.metrics import retrieval_metrics
from .resume import fix_loop_progress

__all__ = ["EvalLoopMixin", "CheckpointWeightsMixin", "PROGRESS_METRICS"]

# Metrics also shown in the progress bar (all of retrieval_metrics go to the logger).
PROGRESS_METRICS = ("t2v_r1_category", "chance_r1_category")


class CheckpointWeightsMixin:
    """``from_checkpoint_weights``: a module rebuilt from the hyper-parameters and weights of a
    Lightning checkpoint, read with ``torch.load(weights_only=True)`` (no pickled code runs); and
    ``on_load_checkpoint``, which repairs the loop progress of end-of-epoch checkpoints before the
    Trainer restores its loops (see :mod:`mmemb.lit.resume`)."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this (``restore_model``) before it restores the loops from
        ``checkpoint["loops"]`` (``restore_training_state``), so patching the dict here takes effect."""
        super().on_load_checkpoint(checkpoint)
        fix_loop_progress(checkpoint)

    @classmethod
    def from_checkpoint_weights(cls, path: str, map_location: str | torch.device = "cpu"):
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
        overrides = dict(hparams.get("overrides") or {})
        overrides.pop("vision_pretrained_path", None)  # the checkpoint holds the weights
        module = cls(**{**hparams, "overrides": overrides})
        module.load_state_dict(ckpt["state_dict"])
        return module


class EvalLoopMixin:
    """Mix into a ``LightningModule`` that defines ``_eval_step(batch, prefix)`` (appending a dict of
    CPU tensors to ``self._eval_outputs``: ``video``, ``text``, their masks, ``category`` and the
    hashtag rows of :class:`~mmemb.lit.labels.HashtagScoringMixin`, also mixed in). At the end of the
    epoch :meth:`_eval_epoch_end` scores retrieval and hashtags and logs them."""

    _eval_outputs: list[dict[str, torch.Tensor]]

    def _eval_epoch_end(self, prefix: str) -> dict[str, float]:
        merged = self._merged_eval_outputs()
        if merged is None:
            return {}
        metrics = retrieval_metrics(merged["video"], merged["text"], merged["category"],
                                    merged["video_mask"], merged["text_mask"])
        logged = {k: v for k, v in metrics.items() if not k.endswith("_chance") and k not in PROGRESS_METRICS}
        for k, v in self._hashtag_metrics(merged).items():
            metrics[k] = v
            if not math.isnan(v):
                logged[k] = v
        self.log_dict({f"{prefix}/{k}": v for k, v in logged.items()})
        self.log_dict({f"{prefix}/{k}": metrics[k] for k in PROGRESS_METRICS}, prog_bar=True)
        return metrics

    def _merged_eval_outputs(self) -> dict[str, torch.Tensor] | None:
        """The epoch's outputs concatenated per key (then cleared); on several ranks, every rank gets
        the whole split (the DistributedSampler pads equal shards). None when nothing was collected."""
        if not self._eval_outputs:
            return None
        keys = self._eval_outputs[0].keys()
        merged = {k: torch.cat([o[k] for o in self._eval_outputs]) for k in keys}
        self._eval_outputs.clear()
        if self.trainer.world_size > 1:
            merged = {k: self.all_gather(v.to(self.device)).flatten(0, 1).cpu() for k, v in merged.items()}
        return merged

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.clear()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_outputs.clear()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
