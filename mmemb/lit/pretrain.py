"""Contrastive video-text pretraining as a LightningModule (the model itself is plain PyTorch)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from ..losses import DEFAULT_WEIGHTS, clip_infonce, total_loss
from ..models.config import ModelOverrides, overrides_dict
from ..models.registry import create_model, get_model_config
from .labels import HashtagScoringMixin
from .mixins import CheckpointWeightsMixin, EvalLoopMixin
from .optim import configure_warmup_cosine, warmup_cosine

__all__ = ["PretrainModule", "warmup_cosine"]

HASHTAG_NAME_LENGTH = 8  # tokens per hashtag name ([CLS] name [SEP]) for zero-shot scoring


class PretrainModule(CheckpointWeightsMixin, EvalLoopMixin, HashtagScoringMixin, pl.LightningModule):
    """CLIP-style pretraining of :class:`mmemb.models.VideoTextModel` on video-text pairs.

    Args:
        preset: model preset (``mmemb.models.list_models()``: tiny, small, base).
        vocab_size: text vocabulary size; linked from ``data.vocab_size`` by ``train.py``.
        num_hashtags: hashtag vocabulary size (linked from the data); the model has no hashtag head,
            the hashtags are scored zero-shot for evaluation (:mod:`mmemb.lit.labels`).
        overrides: preset fields to change (e.g. ``{vision_depth: 6}``); None keeps the preset.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms, the logit scale,
            position embeddings and the class token).
        betas: AdamW betas.
        warmup_fraction: share of the optimizer steps spent in linear warmup.
        min_lr_ratio: final learning rate of the cosine as a share of ``lr``.
        loss_weights: weight of each loss term (default: 0.5 for ``clip_v2t`` and ``clip_t2v``).
    """

    def __init__(
        self,
        preset: str = "small",
        vocab_size: int = 8000,
        overrides: ModelOverrides | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.0,
        loss_weights: dict[str, float] | None = None,
        num_hashtags: int = 0,
    ):
        super().__init__()
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        self.save_hyperparameters(ignore=["overrides"])
        self.hparams["overrides"] = overrides_dict(overrides)  # plain dict: checkpoints load with weights_only
        self.config = get_model_config(preset, vocab_size=vocab_size, **self.hparams["overrides"])
        self.model = create_model(self.config)
        self.loss_weights = dict(loss_weights or DEFAULT_WEIGHTS)
        self._init_hashtag_names(num_hashtags, HASHTAG_NAME_LENGTH)
        self._eval_outputs: list[dict[str, torch.Tensor]] = []

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocabs"):
            self.set_vocabularies(dm.vocabs)

    def set_vocabularies(self, vocabs) -> None:
        """The hashtag names and train counts of the data's :class:`Vocabularies` (zero-shot scoring)."""
        if self._num_hashtag_names:
            self.set_hashtag_names(vocabs.tokenizer, list(vocabs.hashtags.labels), list(vocabs.hashtags.counts))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    # ------------------------------------------------------------------ training

    def _losses(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = self.model(batch)
        terms = clip_infonce(out["video"], out["text"], out["logit_scale"], batch["video_mask"], batch["text_mask"])
        return out, terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out, terms = self._losses(batch)
        loss = total_loss(terms, self.loss_weights)
        bs = len(batch["ids"])
        pairs = (batch["video_mask"] & batch["text_mask"]).sum().float()
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/logit_scale", out["logit_scale"], prog_bar=True, batch_size=bs)
        self.log("train/pairs", pairs, batch_size=bs)
        return loss

    def configure_optimizers(self):
        return configure_warmup_cosine(self, self.model)

    # ------------------------------------------------------------------ evaluation

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        out, terms = self._losses(batch)
        self.log(f"{prefix}/loss", total_loss(terms, self.loss_weights), batch_size=len(batch["ids"]))
        self._eval_outputs.append({
            "video": out["video"].detach().float().cpu(),
            "text": out["text"].detach().float().cpu(),
            "video_mask": batch["video_mask"].cpu(),
            "text_mask": batch["text_mask"].cpu(),
            "category": batch["category"].cpu(),
            **self._hashtag_row(out, batch),
        })

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``ids`` and the embeddings of a batch (zero rows where a modality is missing)."""
        out = self.model(batch)
        pred = {"ids": list(batch["ids"]), "video": out["video"], "text": out["text"],
                "video_mask": batch["video_mask"], "text_mask": batch["text_mask"], "category": batch["category"]}
        scores = self.hashtag_scores(out)
        if scores is not None:
            pred["hashtag_scores"] = scores  # zero-shot cosines (no head)
        return pred
