"""Reading checkpoints of :class:`~mmemb.lit.module.EmbeddingModule`, earlier versions' included.

Checkpoints are read with ``torch.load(weights_only=True)`` (hyper-parameters and state dict, no
pickled code; no Lightning either: the export reads checkpoints through this module). Two earlier
layouts are upgraded on read:

* the full model's (``TeacherModule``, ``preset: teacher_*``): its ``overrides`` named the tower fields
  flat (``vision_depth``, ``text_width``, ``fusion_visual_tokens`` ...); they are moved into their part
  (``vision: {depth: ...}``, see :data:`mmemb.models.config.FLAT_FIELDS`). Its model without audio had a
  channel attention over the one visual channel, which the model no longer builds: those weights are
  dropped (they changed nothing: one channel always weighs 1).
* the first two-tower model's (``PretrainModule``, ``preset: tiny|small|base``): the preset becomes
  ``two_tower_*``, the loss weights its InfoNCE pair, the bias-free ``video_proj``/``text_proj``
  become ``visual_proj``/``text_proj`` with zero biases and the keyword IDF (unused) starts at ones;
  the embeddings are those of the old model. Its ``vision_pool: avg`` and ``text_pool: cls`` variants
  have no equivalent and are refused with the way out.
* ``student_small`` before 2026-12-03 attention-pooled its frames over time; the preset now takes their
  mean. A ``student_small`` checkpoint that holds the attention pooling's weights
  (``model.temporal_pool.*``) and does not name the pooling gets ``vision: {temporal_pool: attention}``,
  the model it was trained as.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import FLAT_FIELDS, PARTS
from .registry import RENAMED_PRESETS

__all__ = ["read_checkpoint", "upgrade_state_dict", "nest_overrides"]

_TWO_TOWER_WEIGHTS = {"clip_v2t": 0.5, "clip_t2v": 0.5}  # the first model's DEFAULT_WEIGHTS
# flat fields of the two-tower ModelConfig the one model does not have: (value it always has, what to do)
_FIXED = {"vision_pool": "token", "text_pool": "mean"}


def nest_overrides(overrides: dict[str, Any] | None, path: str) -> dict[str, Any]:
    """``overrides`` with the flat tower fields of earlier versions moved into their part (``path``
    names the checkpoint in errors)."""
    nested: dict[str, Any] = {}
    for key, value in dict(overrides or {}).items():
        if key in _FIXED:
            if value != _FIXED[key]:
                raise ValueError(f"{path}: the checkpoint's model has {key}={value!r}, which the model no longer "
                                 f"offers (only {_FIXED[key]!r}); retrain it with the two_tower preset")
            continue
        if key in FLAT_FIELDS:
            part, name = FLAT_FIELDS[key]
            nested.setdefault(part, {})[name] = value
        elif key in PARTS and isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
        else:
            nested[key] = value
    return nested


def read_checkpoint(path: str, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict]:
    """The ``EmbeddingModule`` keyword arguments and the state dict of the checkpoint at ``path``
    (earlier layouts upgraded; the local ViT weights path dropped: the checkpoint holds the weights)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
    state = dict(ckpt["state_dict"])
    preset = str(hparams.get("preset", ""))
    if preset in RENAMED_PRESETS:  # the first two-tower model (PretrainModule)
        hparams["preset"] = RENAMED_PRESETS[preset]
        hparams["loss_weights"] = hparams.get("loss_weights") or dict(_TWO_TOWER_WEIGHTS)
        for name in ("video", "text"):
            weight = state.pop(f"model.{name}_proj.weight")
            new = "visual" if name == "video" else "text"
            state[f"model.{new}_proj.weight"] = weight
            state[f"model.{new}_proj.bias"] = weight.new_zeros(weight.shape[0])
        state.setdefault("keyword_idf", torch.ones(int(hparams.get("vocab_size", 8000))))
    overrides = nest_overrides(hparams.get("overrides"), str(path))
    vision = overrides.get("vision")
    if isinstance(vision, dict):
        vision.pop("pretrained_path", None)
        if not vision:
            overrides.pop("vision")
    if (hparams.get("preset") == "student_small" and any(k.startswith("model.temporal_pool.") for k in state)
            and "temporal_pool" not in overrides.get("vision", {})):  # trained before the preset mean-pooled
        overrides.setdefault("vision", {})["temporal_pool"] = "attention"
    hparams["overrides"] = overrides
    return hparams, state


def upgrade_state_dict(state: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state`` without the weights of the channel attentions that ``module``'s model no longer builds
    (over a single channel)."""
    for name in ("video_attention", "text_attention"):
        if getattr(module.model, name) is None:
            prefix = f"model.{name}."
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return state
