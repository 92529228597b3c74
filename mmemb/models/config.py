"""Typed configuration of the video-text embedding model.

A :class:`ModelConfig` fully describes a :class:`mmemb.models.embedder.VideoTextModel`; named presets
live in :mod:`mmemb.models.registry` (``tiny`` for tests, ``small`` for the CPU quickstart, ``base``
for GPUs). :data:`ModelOverrides` mirrors every field as ``Optional`` (``None`` = keep the preset's
value) so that a preset can be tweaked field by field from a YAML config or the command line
(all but ``vocab_size``, which is set from the data).
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional

__all__ = ["ModelConfig", "ModelOverrides", "overrides_dict"]


@dataclass
class ModelConfig:
    """Architecture of :class:`~mmemb.models.embedder.VideoTextModel`."""

    # --- visual tower: a timm ViT applied to every frame, frame features pooled over time
    frame_size: int = 32  # frames are (S, S); must equal the data's decode.frame_size
    patch_size: int = 8  # ViT patch side; frame_size must be a multiple of it
    vision_width: int = 64  # ViT embed_dim
    vision_depth: int = 2  # ViT blocks
    vision_heads: int = 2  # attention heads; must divide vision_width
    vision_mlp_ratio: float = 4.0  # MLP hidden = ratio * width
    vision_pool: Literal["token", "avg"] = "token"  # per-frame pooling of the ViT tokens: [CLS] or mean of patches
    temporal_pool: Literal["mean"] = "mean"  # pooling of frame features over time (mean over valid frames)
    drop_path: float = 0.0  # stochastic depth rate of the ViT
    vision_pretrained_path: Optional[str] = None  # local timm ViT weights (.safetensors / .pth); never downloaded

    # --- text tower: a BERT encoder built from a config (random init); field ids -> token_type embeddings
    vocab_size: int = 8000  # tokenizer size, linked from the data module (``data.vocab_size``)
    text_width: int = 64  # hidden size
    text_depth: int = 2  # encoder layers
    text_heads: int = 2  # attention heads; must divide text_width
    text_max_length: int = 128  # position embeddings; must be >= the data's text max_length
    num_text_fields: int = 5  # token_type vocabulary: 0 [CLS]/pad, 1 caption, 2 cover, 3 asr, 4 comments
    text_pool: Literal["cls", "mean"] = "mean"  # [CLS] hidden state or masked mean over real tokens
    text_dropout: float = 0.0  # hidden and attention dropout of the encoder

    # --- shared space
    embed_dim: int = 64  # dimension of the L2-normalised joint embedding
    init_temperature: float = 0.07  # logit scale starts at 1 / init_temperature (CLIP)
    max_logit_scale: float = 100.0  # the logit scale is clamped at this value
    learn_logit_scale: bool = True  # False freezes the temperature at its initial value

    def __post_init__(self) -> None:
        positive = ("frame_size", "patch_size", "vision_width", "vision_depth", "vision_heads", "vocab_size",
                    "text_width", "text_depth", "text_heads", "text_max_length", "num_text_fields", "embed_dim")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.frame_size % self.patch_size:
            raise ValueError(f"frame_size {self.frame_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"vision_width {self.vision_width} is not divisible by vision_heads {self.vision_heads}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}")
        if self.vision_pool not in ("token", "avg"):
            raise ValueError(f"vision_pool must be 'token' or 'avg', got {self.vision_pool!r}")
        if self.temporal_pool != "mean":
            raise ValueError(f"temporal_pool must be 'mean', got {self.temporal_pool!r}")
        if self.text_pool not in ("cls", "mean"):
            raise ValueError(f"text_pool must be 'cls' or 'mean', got {self.text_pool!r}")
        if self.init_temperature <= 0 or 1 / self.init_temperature > self.max_logit_scale:
            raise ValueError(f"init_temperature must be > 0 and 1 / init_temperature <= max_logit_scale "
                             f"({self.max_logit_scale}), got {self.init_temperature}")
        if not (0 <= self.drop_path < 1 and 0 <= self.text_dropout < 1):
            raise ValueError("drop_path and text_dropout must lie in [0, 1)")


# Every field of ModelConfig but vocab_size (which comes from the data), Optional with default None.
ModelOverrides = dataclasses.make_dataclass(
    "ModelOverrides",
    [(f.name, Optional[f.type], dataclasses.field(default=None))
     for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"],
)
ModelOverrides.__doc__ = "Fields of :class:`ModelConfig` to change in a preset (``None`` keeps the preset's value)."
ModelOverrides.__module__ = __name__


def overrides_dict(overrides) -> dict:
    """The fields set (not ``None``) in a :data:`ModelOverrides` or a plain dict."""
    if overrides is None:
        return {}
    if dataclasses.is_dataclass(overrides):
        overrides = dataclasses.asdict(overrides)
    return {k: v for k, v in dict(overrides).items() if v is not None}
