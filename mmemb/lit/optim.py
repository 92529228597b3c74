"""The optimizer and learning-rate schedule shared by the LightningModules."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import nn

from ..lamb import Lamb

__all__ = ["warmup_cosine", "configure_warmup_cosine"]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear from ~0 to 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class of ``name``: ``adamw`` -> ``torch.optim.AdamW``; ``lamb`` -> ``torch.optim.Lamb``
    where this torch has it, else :class:`mmemb.lamb.Lamb`."""
    if name == "adamw":
        return torch.optim.AdamW
    if name == "lamb":
        return getattr(torch.optim, "Lamb", None) or Lamb
    raise ValueError(f"unknown optimizer {name!r}; valid names: adamw, lamb")


def configure_warmup_cosine(module: pl.LightningModule, model: nn.Module, optimizer: str = "adamw") -> dict:
    """``configure_optimizers`` of a module whose hparams hold ``lr``, ``betas``, ``weight_decay``,
    ``warmup_fraction`` and ``min_lr_ratio``: two parameter groups (no weight decay for 1-D
    parameters and ``model.no_weight_decay()``), then a per-step warmup-cosine schedule."""
    hp = module.hparams
    no_decay_names = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name in no_decay_names else decay).append(p)
    groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = _optimizer_class(optimizer)(groups, lr=hp.lr, betas=tuple(hp.betas))
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError("cannot schedule the learning rate over an unknown number of steps: set trainer.max_steps")
    total = max(1, int(total))
    warmup = int(hp.warmup_fraction * total)
    min_ratio = hp.min_lr_ratio

    def lr_lambda(step: int) -> float:  # a plain function: LambdaLR does not pickle it into checkpoints
        return warmup_cosine(step, warmup, total, min_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
