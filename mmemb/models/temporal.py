"""Attention pooling over time: a learned query attends over per-frame features."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TemporalAttentionPool"]


class TemporalAttentionPool(nn.Module):
    """Per-frame features ``(B, T, W)`` + frame mask ``(B, T)`` -> ``(B, W)``.

    One learned query attends (pre-norm ``nn.MultiheadAttention``) over the valid frames. A row
    without any valid frame gives a zero vector (never NaN).
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if width < 1 or heads < 1 or width % heads:
            raise ValueError(f"TemporalAttentionPool needs width >= 1 divisible by heads >= 1, got {width}, {heads}")
        self.query = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

    def no_weight_decay(self) -> set[str]:
        """The learned query is an embedding (a position in feature space, not a weight to shrink)."""
        return {"query"}

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, w = x.shape
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=x.device)  # (B, T)
        frame_mask = frame_mask.bool()
        has_frame = frame_mask.any(dim=-1)  # (B,)
        attend = frame_mask.clone()  # (B, T)
        attend[:, 0] |= ~has_frame  # a row without frames attends to frame 0 (zeroed below): no NaN
        kv = self.norm(x)  # (B, T, W)
        q = self.query.expand(b, -1, -1)  # (B, 1, W)
        out, _ = self.attn(q, kv, kv, key_padding_mask=~attend, need_weights=False)  # (B, 1, W)
        return out.squeeze(1) * has_frame.unsqueeze(-1).to(out.dtype)  # (B, W)
