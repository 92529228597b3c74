"""Named model presets and :func:`create_model`.

>>> model = create_model("teacher_tiny", text={"vocab_size": 500}, heads={"num_hashtags": 20})
>>> list_models()
['student_small', 'student_tiny', 'teacher_base', 'teacher_small', 'teacher_small_minilm', 'teacher_text_small', 'teacher_text_wide', 'teacher_tiny', 'two_tower_base', 'two_tower_small', 'two_tower_tiny']

* ``teacher_*``: the full model (visual, audio and text towers, multi-scale fusion, label heads);
* ``two_tower_*``: the first model, the baseline row of every comparison: the same model with the
  ViT and BERT towers only (no audio, no fusion, no heads, no n-gram bag, frames mean-pooled over time),
  trained with the video-text InfoNCE alone;
* ``student_*``: light models distilled from a teacher (:class:`mmemb.lit.distill.DistillModule`): the
  same outputs and label heads as the teacher, a small ViT, no audio tower, channel attention instead
  of the cross-attention fusion, a 2-layer text tower with the char-3-gram bag.

Overrides are :class:`ModelConfig` fields; a part (``vision``, ``text``, ``audio``, ``fusion``,
``heads``) takes a dict of the fields to change, merged into the preset's part, e.g.
``create_model("teacher_tiny", audio={"depth": 1}, use_fusion="none")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .audio import AudioConfig
from .config import HeadsConfig, ModelConfig, TextEncoderConfig, VisionConfig, apply_overrides
from .fusion import FusionConfig
from .model import EmbeddingModel, LabelInputs

__all__ = ["register_model", "list_models", "get_model_config", "create_model", "RENAMED_PRESETS"]

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}

# Preset names of earlier versions -> their name now (the error for an old name says which).
RENAMED_PRESETS = {"tiny": "two_tower_tiny", "small": "two_tower_small", "base": "two_tower_base"}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a preset under the function's name (a function returning a :class:`ModelConfig`)."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"model preset {fn.__name__!r} is already registered")
    _PRESETS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(_PRESETS)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset ``name`` with ``overrides`` applied (see :func:`mmemb.models.config.apply_overrides`)."""
    if name not in _PRESETS:
        renamed = f" ({name!r} is now {RENAMED_PRESETS[name]!r})" if name in RENAMED_PRESETS else ""
        raise KeyError(f"unknown model preset {name!r}{renamed}; valid names: {', '.join(list_models())}")
    return apply_overrides(_PRESETS[name](), overrides)


def create_model(name_or_config: str | ModelConfig, hashtags: LabelInputs | None = None,
                 queries: LabelInputs | None = None, **overrides: Any) -> EmbeddingModel:
    """A randomly initialised :class:`EmbeddingModel` (local ``vision.pretrained_path`` weights aside)."""
    if isinstance(name_or_config, ModelConfig):
        cfg = apply_overrides(name_or_config, overrides)
    else:
        cfg = get_model_config(name_or_config, **overrides)
    return EmbeddingModel(cfg, hashtags=hashtags, queries=queries)


# ----------------------------------------------------------------------------- the full model


@register_model
def teacher_tiny() -> ModelConfig:
    """For tests: 32 px frames, 2-block ViT, 2-layer BERT, 1-layer audio tower, all of width 64."""
    return ModelConfig(
        vision=VisionConfig(frame_size=32, patch_size=8, width=64, depth=2, heads=2, fusion_depths=[0, 1]),
        text=TextEncoderConfig(width=64, depth=2, heads=2, max_length=128),
        audio=AudioConfig(n_mels=64, patch_frames=16, width=64, depth=1, heads=2, max_tokens=64),
        fusion=FusionConfig(width=64, heads=2, mlp_ratio=2.0),
        heads=HeadsConfig(gcn_hidden=64, gcn_layers=2, label_max_length=8),
        embed_dim=64,
    )


@register_model
def teacher_small() -> ModelConfig:
    """For the CPU quickstart: 64 px frames in 16x16 patches, 4-block ViT of width 128 fused at blocks
    1 and 3, 2-layer BERT and audio tower of width 128."""
    return ModelConfig(
        vision=VisionConfig(frame_size=64, patch_size=16, width=128, depth=4, heads=4, fusion_depths=[1, 3]),
        text=TextEncoderConfig(width=128, depth=2, heads=4, max_length=128),
        audio=AudioConfig(n_mels=64, patch_frames=8, width=128, depth=2, heads=4, max_tokens=128),
        fusion=FusionConfig(width=128, heads=4),
        heads=HeadsConfig(gcn_hidden=128, gcn_layers=2, label_max_length=8),
        embed_dim=128,
    )


@register_model
def teacher_text_small() -> ModelConfig:
    """For text-only corpora (KuaiRec: captions, cover texts, hashtags; no clips): ``teacher_small``'s
    text tower (2-layer BERT of width 128), n-gram bag, hashtag head over the tag GCN and keyword head,
    without the audio tower and the cross-attention fusion (nothing to fuse the text with: the heads
    read the text through channel attention). The visual tower is a one-block stub of width 32 on
    16 px frames: every row's video is masked, so it only costs one 1-patch ViT pass per step."""
    return dataclasses.replace(
        teacher_small(),
        vision=VisionConfig(frame_size=16, patch_size=16, width=32, depth=1, heads=1, fusion_depths=[0]),
        use_audio=False, use_fusion="none")


@register_model
def teacher_text_wide() -> ModelConfig:
    """``teacher_text_small`` with wide label heads (``configs/kuairec_text.yaml``): each head adds a linear
    model of the text's hashed char n-grams, pooled as sublinear-tf features at unit L2 norm and trained by a
    one-vs-rest BCE term of its own (``wide_pooling="l2_sublinear"``, ``wide_loss="bce"``); the deep head
    learns on top of it. Chosen on KuaiRec's validation split (README, "The KuaiRec text model")."""
    return dataclasses.replace(teacher_text_small(), wide_ngram_heads=True, wide_pooling="l2_sublinear",
                               wide_loss="bce")


@register_model
def teacher_small_minilm() -> ModelConfig:
    """``teacher_small`` with the text tower of all-MiniLM-L6-v2 (6 x 384, 12 heads), initialised from
    its pretrained weights (``text.init="minilm"``; train with ``data.text.base_vocab: minilm``)."""
    return apply_overrides(teacher_small(), {"text": {"width": 384, "depth": 6, "heads": 12, "init": "minilm"}})


@register_model
def teacher_base() -> ModelConfig:
    """For GPUs: ViT-B/16 at 224 px (timm ``vit_base_patch16_224`` layout) fused at blocks 3, 7, 11,
    a BERT-base sized text tower (12 x 768), a 4-layer audio tower of width 384, fusion of width 512."""
    return ModelConfig(
        vision=VisionConfig(frame_size=224, patch_size=16, width=768, depth=12, heads=12, drop_path=0.1,
                            fusion_depths=[3, 7, 11]),
        text=TextEncoderConfig(width=768, depth=12, heads=12, max_length=512),
        audio=AudioConfig(n_mels=64, patch_frames=4, width=384, depth=4, heads=6, max_tokens=256),
        fusion=FusionConfig(width=512, heads=8),
        heads=HeadsConfig(gcn_hidden=1024, gcn_layers=2, label_max_length=16),
        embed_dim=512,
    )


# ----------------------------------------------------------------------------- the first (two-tower) model


def _two_tower(vision: VisionConfig, text: TextEncoderConfig, embed_dim: int) -> ModelConfig:
    """The towers of ``vision`` and ``text`` and nothing else: frames mean-pooled over time, no audio,
    no fusion, no heads (hashtags are scored zero-shot), no n-gram bag."""
    return ModelConfig(vision=dataclasses.replace(vision, temporal_pool="mean"), text=text, embed_dim=embed_dim,
                       use_audio=False, use_fusion="none", use_ngram_bag=False, use_gcn=False,
                       hashtag_head=False, query_head=False, keyword_head=False)


@register_model
def two_tower_tiny() -> ModelConfig:
    """For tests: 32 px frames, 2-block ViT and 2-layer BERT of width 64."""
    return _two_tower(VisionConfig(frame_size=32, patch_size=8, width=64, depth=2, heads=2),
                      TextEncoderConfig(width=64, depth=2, heads=2, max_length=128), embed_dim=64)


@register_model
def two_tower_small() -> ModelConfig:
    """For the CPU baseline: 64 px frames in 16x16 patches, 4-block ViT of width 128, 2-layer BERT of width 128."""
    return _two_tower(VisionConfig(frame_size=64, patch_size=16, width=128, depth=4, heads=4),
                      TextEncoderConfig(width=128, depth=2, heads=4, max_length=128), embed_dim=128)


@register_model
def two_tower_base() -> ModelConfig:
    """For GPUs: ViT-B/16 at 224 px (timm ``vit_base_patch16_224`` layout) and a 6-layer BERT of width 384."""
    return _two_tower(VisionConfig(frame_size=224, patch_size=16, width=768, depth=12, heads=12, drop_path=0.1),
                      TextEncoderConfig(width=384, depth=6, heads=6, max_length=512), embed_dim=512)


# ----------------------------------------------------------------------------- students (distillation)


def _student(vision: VisionConfig, text: TextEncoderConfig, embed_dim: int, gcn_hidden: int) -> ModelConfig:
    """A light model with the teacher's outputs (``video``, ``text``, ``multimodal``) and label heads:
    a small ViT over the same frames, no audio tower, channel attention
    instead of the cross-attention fusion (``multimodal`` = ChannelAttention(visual, text)), the text
    tower with its hashed char-3-gram bag, hashtag and query heads over a tag GCN, no keyword head
    (a training-only objective). Trained by distillation (:class:`mmemb.lit.distill.DistillModule`)."""
    return ModelConfig(vision=vision, text=text, heads=HeadsConfig(gcn_hidden=gcn_hidden, gcn_layers=2,
                                                                    label_max_length=8),
                       embed_dim=embed_dim, use_audio=False, use_fusion="none", keyword_head=False)


@register_model
def student_tiny() -> ModelConfig:
    """For tests: a 1-block ViT of width 32 over teacher_tiny's 32 px frames, 2-layer BERT of width 32,
    embeddings of width 32 (half the teacher's: the distillation projections are exercised)."""
    return _student(VisionConfig(frame_size=32, patch_size=8, width=32, depth=1, heads=2),
                    TextEncoderConfig(width=32, depth=2, heads=2, max_length=128), embed_dim=32, gcn_hidden=32)


@register_model
def student_small() -> ModelConfig:
    """The student of ``teacher_small`` (CPU quickstart): a 2-block ViT of width 64 over the same 64 px
    frames in 16x16 patches, its frames mean-pooled over time (the clip path about 5-6x faster than the
    teacher's 4-block ViT of width 128 with its audio tower, measured at batch 1 on one thread; see README
    "Distillation"), the Que2Search-like text tower (2 layers of width 128 plus the char-3-gram bag),
    embeddings of width 128 (the teacher's)."""
    return _student(VisionConfig(frame_size=64, patch_size=16, width=64, depth=2, heads=2, temporal_pool="mean"),
                    TextEncoderConfig(width=128, depth=2, heads=4, max_length=128), embed_dim=128, gcn_hidden=128)


@register_model
def student_small_ffn2() -> ModelConfig:
    """``student_small`` with a text tower of half the feed-forward width (``text.ffn_ratio`` 2: intermediate
    size 256 instead of BERT's 512), the student of ``configs/distill.yaml`` since 2026-12-03: as good on
    validation (README "Distillation") with about 15% less time per search query in the exported text graph
    (BENCHMARKS.md)."""
    return apply_overrides(student_small(), {"text": {"ffn_ratio": 2}})
