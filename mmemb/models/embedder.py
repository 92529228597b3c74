"""The two-tower video-text model: frames and text projected to one L2-normalised space."""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .text import TextEncoder
from .visual import FrameEncoder

__all__ = ["VideoTextModel"]


class VideoTextModel(nn.Module):
    """CLIP-style dual encoder over the batch contract of :mod:`mmemb.data.dataset`.

    ``encode_video`` / ``encode_text`` return ``(B, embed_dim)`` unit vectors; the rows of samples
    whose modality is missing (``video_mask`` / ``text_mask`` False) are zeros, so that nothing
    is invented for them (losses and metrics exclude them through the masks).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = FrameEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.video_proj = nn.Linear(cfg.vision_width, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)),
                                        requires_grad=cfg.learn_logit_scale)

    # ------------------------------------------------------------------ features (before the heads)

    def forward_video_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled visual features ``(B, vision_width)``."""
        return self.visual(batch["frames"], batch.get("frame_mask"))

    def forward_text_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled text features ``(B, text_width)``."""
        return self.text(batch["text_ids"], batch["text_attention"], batch.get("text_field_ids"))

    # ------------------------------------------------------------------ embeddings

    @staticmethod
    def _embed(features: torch.Tensor, proj: nn.Linear, mask: torch.Tensor | None) -> torch.Tensor:
        x = F.normalize(proj(features), dim=-1)  # (B, D)
        if mask is not None:
            x = x * mask.to(x.dtype).unsqueeze(-1)  # missing modality -> zero row
        return x

    def encode_video(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised video embeddings ``(B, D)``; zero rows where ``video_mask`` is False."""
        return self._embed(self.forward_video_features(batch), self.video_proj, batch.get("video_mask"))

    def encode_text(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, D)``; zero rows where ``text_mask`` is False."""
        return self._embed(self.forward_text_features(batch), self.text_proj, batch.get("text_mask"))

    def get_logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at ``max_logit_scale`` (a scalar tensor)."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "video": self.encode_video(batch),
            "text": self.encode_text(batch),
            "logit_scale": self.get_logit_scale(),
        }

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay besides 1-D ones (biases, norms, scale)."""
        return {f"visual.vit.{n}" for n in self.visual.vit.no_weight_decay()}
