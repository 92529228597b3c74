"""Named teacher presets and :func:`create_teacher`.

>>> model = create_teacher("teacher_tiny", vocab_size=500, num_hashtags=20)
>>> list_teachers()
['teacher_base', 'teacher_small', 'teacher_small_minilm', 'teacher_tiny']

Overrides are :class:`TeacherConfig` fields; ``audio`` and ``fusion`` take dicts of the nested
fields to change (merged into the preset's nested config), e.g.
``create_teacher("teacher_tiny", audio={"depth": 1}, use_fusion="none")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from .audio import AudioConfig
from .fusion import FusionConfig
from .teacher import LabelInputs, TeacherConfig, TeacherModel

__all__ = ["register_teacher", "list_teachers", "get_teacher_config", "create_teacher"]

_PRESETS: dict[str, Callable[[], TeacherConfig]] = {}
_NESTED = {"audio": AudioConfig, "fusion": FusionConfig}


def register_teacher(fn: Callable[[], TeacherConfig]) -> Callable[[], TeacherConfig]:
    """Register a preset under the function's name."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"teacher preset {fn.__name__!r} is already registered")
    _PRESETS[fn.__name__] = fn
    return fn


def list_teachers() -> list[str]:
    """Names of the registered teacher presets, sorted."""
    return sorted(_PRESETS)


def get_teacher_config(name: str, **overrides: Any) -> TeacherConfig:
    """The preset ``name`` with ``overrides`` applied (nested ``audio``/``fusion`` dicts are merged)."""
    if name not in _PRESETS:
        raise KeyError(f"unknown teacher preset {name!r}; valid names: {', '.join(list_teachers())}")
    cfg = _PRESETS[name]()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TeacherConfig)}
    if unknown:
        raise TypeError(f"unknown TeacherConfig fields {sorted(unknown)}")
    overrides = dict(overrides)
    for key, cls in _NESTED.items():
        value = overrides.get(key)
        if isinstance(value, Mapping):
            bad = set(value) - {f.name for f in dataclasses.fields(cls)}
            if bad:
                raise TypeError(f"unknown {cls.__name__} fields {sorted(bad)}")
            overrides[key] = dataclasses.replace(getattr(cfg, key), **value)
    return dataclasses.replace(cfg, **overrides)


def create_teacher(name_or_config: str | TeacherConfig, hashtags: LabelInputs | None = None,
                   queries: LabelInputs | None = None, **overrides: Any) -> TeacherModel:
    """A randomly initialised :class:`TeacherModel` (local ``vision_pretrained_path`` weights aside)."""
    if isinstance(name_or_config, TeacherConfig):
        cfg = dataclasses.replace(name_or_config, **overrides)
    else:
        cfg = get_teacher_config(name_or_config, **overrides)
    return TeacherModel(cfg, hashtags=hashtags, queries=queries)


# ----------------------------------------------------------------------------- presets


@register_teacher
def teacher_tiny() -> TeacherConfig:
    """For tests: 32 px frames, 2-block ViT, 2-layer BERT, 1-layer audio tower, all of width 64."""
    return TeacherConfig(
        frame_size=32, patch_size=8, vision_width=64, vision_depth=2, vision_heads=2, fusion_depths=[0, 1],
        text_width=64, text_depth=2, text_heads=2, text_max_length=128,
        audio=AudioConfig(n_mels=64, patch_frames=16, width=64, depth=1, heads=2, max_tokens=64),
        fusion=FusionConfig(width=64, heads=2, mlp_ratio=2.0),
        gcn_hidden=64, gcn_layers=2, label_max_length=8, embed_dim=64,
    )


@register_teacher
def teacher_small() -> TeacherConfig:
    """For the CPU quickstart: 64 px frames in 16x16 patches, 4-block ViT of width 128 fused at blocks
    1 and 3, 2-layer BERT and audio tower of width 128."""
    return TeacherConfig(
        frame_size=64, patch_size=16, vision_width=128, vision_depth=4, vision_heads=4, fusion_depths=[1, 3],
        text_width=128, text_depth=2, text_heads=4, text_max_length=128,
        audio=AudioConfig(n_mels=64, patch_frames=8, width=128, depth=2, heads=4, max_tokens=128),
        fusion=FusionConfig(width=128, heads=4),
        gcn_hidden=128, gcn_layers=2, label_max_length=8, embed_dim=128,
    )


@register_teacher
def teacher_small_minilm() -> TeacherConfig:
    """``teacher_small`` with the text tower of all-MiniLM-L6-v2 (6 x 384, 12 heads), initialised from
    its pretrained weights (``text_init="minilm"``; train with ``data.text.base_vocab: minilm``)."""
    return dataclasses.replace(teacher_small(), text_width=384, text_depth=6, text_heads=12, text_init="minilm")


@register_teacher
def teacher_base() -> TeacherConfig:
    """For GPUs: ViT-B/16 at 224 px (timm ``vit_base_patch16_224`` layout) fused at blocks 3, 7, 11,
    a BERT-base sized text tower (12 x 768), a 4-layer audio tower of width 384, fusion of width 512."""
    return TeacherConfig(
        frame_size=224, patch_size=16, vision_width=768, vision_depth=12, vision_heads=12, drop_path=0.1,
        fusion_depths=[3, 7, 11], text_width=768, text_depth=12, text_heads=12, text_max_length=512,
        audio=AudioConfig(n_mels=64, patch_frames=4, width=384, depth=4, heads=6, max_tokens=256),
        fusion=FusionConfig(width=512, heads=8),
        gcn_hidden=1024, gcn_layers=2, label_max_length=16, embed_dim=512,
    )
