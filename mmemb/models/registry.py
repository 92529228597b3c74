"""Named model presets and :func:`create_model`.

>>> model = create_model("tiny", vocab_size=500)
>>> sorted(list_models())
['base', 'small', 'tiny']
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from .config import ModelConfig
from .embedder import VideoTextModel

__all__ = ["register_model", "list_models", "get_model_config", "create_model"]

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a preset under the function's name (a function returning a :class:`ModelConfig`)."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"model preset {fn.__name__!r} is already registered")
    _PRESETS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(_PRESETS)


def get_model_config(name: str, **overrides) -> ModelConfig:
    """The preset ``name`` with ``overrides`` applied (validated by ``ModelConfig.__post_init__``)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; valid names: {', '.join(list_models())}")
    cfg = _PRESETS[name]()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise TypeError(f"unknown ModelConfig fields {sorted(unknown)}")
    return dataclasses.replace(cfg, **overrides)


def create_model(name_or_config: str | ModelConfig, **overrides) -> VideoTextModel:
    """A randomly initialised :class:`VideoTextModel` (local ``vision_pretrained_path`` weights aside)."""
    if isinstance(name_or_config, ModelConfig):
        cfg = dataclasses.replace(name_or_config, **overrides)
    else:
        cfg = get_model_config(name_or_config, **overrides)
    return VideoTextModel(cfg)


# ----------------------------------------------------------------------------- presets


@register_model
def tiny() -> ModelConfig:
    """For tests: 32 px frames, 2-block ViT and 2-layer BERT of width 64 (~0.2M parameters besides word embeddings)."""
    return ModelConfig(
        frame_size=32, patch_size=8, vision_width=64, vision_depth=2, vision_heads=2,
        text_width=64, text_depth=2, text_heads=2, text_max_length=128, embed_dim=64,
    )


@register_model
def small() -> ModelConfig:
    """For the CPU quickstart: 64 px frames in 16x16 patches, 4-block ViT of width 128, 2-layer BERT of width 128."""
    return ModelConfig(
        frame_size=64, patch_size=16, vision_width=128, vision_depth=4, vision_heads=4,
        text_width=128, text_depth=2, text_heads=4, text_max_length=128, embed_dim=128,
    )


@register_model
def base() -> ModelConfig:
    """For GPUs: ViT-B/16 at 224 px (timm ``vit_base_patch16_224`` layout) and a 6-layer BERT of width 384."""
    return ModelConfig(
        frame_size=224, patch_size=16, vision_width=768, vision_depth=12, vision_heads=12, drop_path=0.1,
        text_width=384, text_depth=6, text_heads=6, text_max_length=512, embed_dim=512,
    )
