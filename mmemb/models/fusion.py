"""Multi-scale cross-attention fusion of text, visual and audio tokens, and channel attention.

:class:`MultiScaleFusion` fuses bottom to top, one visual scale (ViT depth) per layer, with text as
the hub: in layer ``i`` the text tokens attend to the visual tokens of depth ``i`` (and to the
audio tokens), while the visual and audio tokens attend to the text. Masks flow through every
step, so any subset of modalities per row works: a cross-attention whose context is missing for
a row is skipped for that row (a per-row gate), and a missing modality's outputs are zeros.

:class:`ChannelAttentionFusion` then weighs the pooled per-modality vectors (Que2Search-style).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = ["FusionConfig", "FusionOutput", "CrossAttentionBlock", "FusionLayer", "MultiScaleFusion",
           "ChannelAttentionFusion", "masked_mean"]

Modality = Literal["text", "visual", "audio"]
MODALITIES: tuple[str, ...] = ("text", "visual", "audio")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(B, N, W)`` over the tokens where ``mask`` ``(B, N)`` is True; zeros for a row
    without any."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, W)


def _token_mask(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    """A bool ``(B, N)`` token mask from None (all valid), a row mask ``(B,)`` or a token mask ``(B, N)``."""
    b, n = tokens.shape[:2]
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=tokens.device)  # (B, N)
    mask = mask.to(tokens.device).bool()
    if mask.dim() == 1:
        mask = mask.unsqueeze(1).expand(b, n)  # (B, N)
    if tuple(mask.shape) != (b, n):
        raise ValueError(f"a mask of shape {tuple(mask.shape)} does not fit tokens of shape {tuple(tokens.shape)}; "
                         "pass a row mask (B,) or a token mask (B, N)")
    return mask


@dataclass
class FusionConfig:
    """Architecture of :class:`MultiScaleFusion`."""

    width: int = 256  # width of the fused tokens (every modality is projected to it)
    heads: int = 4  # attention heads; must divide width
    num_layers: int = 2  # fusion layers = visual scales (ViT depths), fed shallow to deep
    mlp_ratio: float = 4.0  # MLP hidden = ratio * width
    dropout: float = 0.0  # attention and MLP dropout of the cross-attention blocks
    modalities: tuple[Modality, ...] = ("text", "visual", "audio")  # fused streams; "text" is the hub
    text_width: int = 64  # width of the incoming text tokens
    visual_width: int = 64  # width of the incoming visual tokens (the ViT's embed_dim)
    audio_width: int = 128  # width of the incoming audio tokens

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        for name in ("width", "heads", "num_layers", "text_width", "visual_width", "audio_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"FusionConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"FusionConfig.width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"FusionConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"FusionConfig.dropout must lie in [0, 1), got {self.dropout}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"FusionConfig.modalities must be distinct names among {MODALITIES}, "
                             f"got {self.modalities}")
        if "text" not in self.modalities or len(self.modalities) < 2:
            raise ValueError("FusionConfig.modalities must hold 'text' (the hub every other modality attends "
                             f"with) and at least one of 'visual', 'audio'; got {self.modalities}")


@dataclass
class FusionOutput:
    """What :class:`MultiScaleFusion` returns, per configured modality."""

    pooled: dict[str, torch.Tensor]  # (B, W) masked mean of the fused tokens; zeros where missing
    tokens: dict[str, torch.Tensor]  # (B, N, W) fused tokens (visual: of the last scale); zeros where masked
    token_masks: dict[str, torch.Tensor]  # (B, N) bool, True = real token
    available: dict[str, torch.Tensor]  # (B,) bool, True = the row has this modality


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention + MLP, both residual: ``x`` ``(B, Nq, W)`` attends over ``context``
    ``(B, Nc, W)``.

    Where ``context_mask`` ``(B, Nc)`` masks every context token of a row, the block is the identity
    for that row (a per-row gate zeros both residual branches), with finite outputs and gradients.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nc = context.shape[:2]
        if nc == 0:
            return x
        context_mask = _token_mask(context_mask, context)  # (B, Nc)
        has_context = context_mask.any(dim=-1)  # (B,)
        attend = context_mask.clone()  # (B, Nc)
        attend[:, 0] |= ~has_context  # every row keeps one key: no NaN (the gate drops the result)
        gate = has_context.to(x.dtype).view(b, 1, 1)  # (B, 1, 1)
        kv = self.norm_kv(context)  # (B, Nc, W)
        a, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=~attend, need_weights=False)  # (B, Nq, W)
        x = x + gate * a  # (B, Nq, W)
        return x + gate * self.mlp(self.norm_mlp(x))  # (B, Nq, W)


class FusionLayer(nn.Module):
    """One scale of :class:`MultiScaleFusion`: two cross-attention blocks (one per direction) between
    the text and each other modality."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.others = tuple(m for m in cfg.modalities if m != "text")  # attended in this order
        self.blocks = nn.ModuleDict()
        for m in self.others:
            self.blocks[f"text_from_{m}"] = CrossAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout)
            self.blocks[f"{m}_from_text"] = CrossAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout)

    def forward(self, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``streams``/``masks``: modality -> ``(B, N, W)`` / ``(B, N)``, ``"text"`` included; modalities
        absent from ``streams`` are skipped. Every stream attends to the layer's input text (the
        directions run in parallel); the text attends to the others in turn, in config order."""
        text_in = streams["text"]
        out = dict(streams)
        for m in self.others:
            if m not in streams:
                continue
            tokens = streams[m]
            out["text"] = self.blocks[f"text_from_{m}"](out["text"], tokens, masks[m])  # (B, L, W)
            out[m] = self.blocks[f"{m}_from_text"](tokens, text_in, masks["text"])  # (B, N_m, W)
        return out


class MultiScaleFusion(nn.Module):
    """Layer-by-layer bidirectional cross-attention fusion of text, multi-scale visual and audio tokens.

    Layer ``i``: the visual stream is the visual tokens of depth ``i`` (own projection per depth)
    plus the pooled visual stream of layer ``i - 1`` (broadcast over the tokens, so the depths may
    have different token counts); the text attends to it and to the audio stream; the visual and
    audio streams attend to the text. The audio stream carries over from layer to layer.
    """

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.modalities = cfg.modalities
        self.text_proj = nn.Sequential(nn.LayerNorm(cfg.text_width), nn.Linear(cfg.text_width, cfg.width))
        if "visual" in cfg.modalities:  # one projection per depth: each depth has its own statistics
            self.visual_proj = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(cfg.visual_width), nn.Linear(cfg.visual_width, cfg.width))
                for _ in range(cfg.num_layers))
        if "audio" in cfg.modalities:
            self.audio_proj = nn.Sequential(nn.LayerNorm(cfg.audio_width), nn.Linear(cfg.audio_width, cfg.width))
        self.layers = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.num_layers))
        self.norms = nn.ModuleDict({m: nn.LayerNorm(cfg.width) for m in cfg.modalities})

    def forward(self, text_tokens: torch.Tensor, text_mask: torch.Tensor | None,
                visual_tokens: Optional[Sequence[torch.Tensor]] = None,
                visual_mask: torch.Tensor | Sequence[torch.Tensor] | None = None,
                audio_tokens: torch.Tensor | None = None,
                audio_mask: torch.Tensor | None = None) -> FusionOutput:
        """Fuse the modalities.

        ``text_tokens`` ``(B, L, text_width)``; ``visual_tokens``: ``num_layers`` tensors
        ``(B, Nv_i, visual_width)``, shallow to deep; ``audio_tokens`` ``(B, Na, audio_width)``.
        Each mask is None (all valid), a row mask ``(B,)`` or a token mask ``(B, N)`` (True = real);
        ``visual_mask`` may also be one mask per depth. Combine the row and token masks before
        (e.g. ``text_attention.bool() & text_mask[:, None]``). A configured modality passed as None
        is missing in every row.
        """
        cfg = self.cfg
        b = text_tokens.shape[0]
        for name, given in (("visual", visual_tokens), ("audio", audio_tokens)):
            if given is not None and name not in self.modalities:
                raise ValueError(f"{name} tokens were given but FusionConfig.modalities is {self.modalities}")

        streams = {"text": self.text_proj(text_tokens)}  # (B, L, W)
        masks = {"text": _token_mask(text_mask, text_tokens)}  # (B, L)
        visual_masks: list[torch.Tensor] = []
        if visual_tokens is not None:
            if len(visual_tokens) != cfg.num_layers:
                raise ValueError(f"{len(visual_tokens)} visual token sets given for FusionConfig.num_layers="
                                 f"{cfg.num_layers}: pass one per fusion layer (ViT depth)")
            if visual_mask is None or isinstance(visual_mask, torch.Tensor):
                visual_mask = [visual_mask] * cfg.num_layers
            if len(visual_mask) != cfg.num_layers:
                raise ValueError(f"{len(visual_mask)} visual masks given for {cfg.num_layers} visual token sets")
            visual_masks = [_token_mask(m, v) for m, v in zip(visual_mask, visual_tokens)]  # [(B, Nv_i)]
        if audio_tokens is not None:
            streams["audio"] = self.audio_proj(audio_tokens)  # (B, Na, W)
            masks["audio"] = _token_mask(audio_mask, audio_tokens)  # (B, Na)

        visual_summary = text_tokens.new_zeros(b, 1, cfg.width)  # (B, 1, W): the pooled visual stream so far
        for i, layer in enumerate(self.layers):
            if visual_tokens is not None:
                streams["visual"] = self.visual_proj[i](visual_tokens[i]) + visual_summary  # (B, Nv_i, W)
                masks["visual"] = visual_masks[i]  # (B, Nv_i)
            streams = layer(streams, masks)
            if visual_tokens is not None:
                visual_summary = masked_mean(streams["visual"], masks["visual"]).unsqueeze(1)  # (B, 1, W)

        out = FusionOutput(pooled={}, tokens={}, token_masks={}, available={})
        for m in self.modalities:
            if m in streams:
                mask = masks[m]  # (B, N)
                tokens = self.norms[m](streams[m]) * mask.unsqueeze(-1).to(streams[m].dtype)  # (B, N, W)
            else:  # configured but not given: missing in every row
                mask = torch.zeros(b, 0, dtype=torch.bool, device=text_tokens.device)  # (B, 0)
                tokens = text_tokens.new_zeros(b, 0, cfg.width)  # (B, 0, W)
            out.tokens[m] = tokens
            out.token_masks[m] = mask
            out.available[m] = mask.any(dim=-1)  # (B,)
            out.pooled[m] = masked_mean(tokens, mask) if tokens.shape[1] else text_tokens.new_zeros(b, cfg.width)
        return out


class ChannelAttentionFusion(nn.Module):
    """Attention-weighted sum of per-channel vectors (Que2Search): ``(B, C, W)`` -> ``(B, W)``.

    A small MLP (shared over channels, plus a learned bias per channel) scores each channel vector;
    the softmax runs over the available channels only (the others get weight 0); a row without any
    channel gives a zero vector and zero weights. Returns the fused vectors and the weights
    ``(B, C)`` (to log or report per sample).
    """

    def __init__(self, width: int, channels: int | Sequence[str], hidden: int | None = None):
        super().__init__()
        self.channels = None if isinstance(channels, int) else tuple(channels)
        self.num_channels = channels if isinstance(channels, int) else len(self.channels)
        if self.num_channels < 1 or width < 1:
            raise ValueError(f"ChannelAttentionFusion needs width >= 1 and >= 1 channel, got {width}, {channels}")
        hidden = hidden or width
        # no bias in the last layer: one shift of every channel's score changes no softmax weight
        self.score = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.channel_bias = nn.Parameter(torch.zeros(self.num_channels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "score.2.bias", None)  # older checkpoints: a shift that changes no weight
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def stack(self, vectors: Mapping[str, torch.Tensor],
              available: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Named ``(B, W)`` vectors and ``(B,)`` masks -> ``(B, C, W)`` and ``(B, C)`` in channel order."""
        if self.channels is None:
            raise ValueError("ChannelAttentionFusion was built with a channel count: pass stacked tensors")
        missing = [c for c in self.channels if c not in vectors]
        if missing:
            raise ValueError(f"channel vectors {missing} are missing (have {sorted(vectors)})")
        x = torch.stack([vectors[c] for c in self.channels], dim=1)  # (B, C, W)
        mask = None if available is None else torch.stack([available[c].bool() for c in self.channels], dim=1)
        return x, mask  # (B, C, W), (B, C)

    def forward(self, vectors: torch.Tensor | Mapping[str, torch.Tensor],
                mask: torch.Tensor | Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``vectors`` ``(B, C, W)`` (or name -> ``(B, W)``), ``mask`` ``(B, C)`` bool (or name -> ``(B,)``;
        None = all available) -> fused ``(B, W)``, weights ``(B, C)``."""
        if isinstance(vectors, Mapping):
            if mask is not None and not isinstance(mask, Mapping):
                raise ValueError("pass the mask as a name -> (B,) mapping along with named vectors")
            vectors, mask = self.stack(vectors, mask)
        b, c, _ = vectors.shape
        if c != self.num_channels:
            raise ValueError(f"{c} channels given to a ChannelAttentionFusion of {self.num_channels}")
        if mask is None:
            mask = torch.ones(b, c, dtype=torch.bool, device=vectors.device)  # (B, C)
        mask = mask.bool()
        scores = self.score(vectors).squeeze(-1) + self.channel_bias  # (B, C)
        scores = scores.masked_fill(~mask, float("-inf"))  # (B, C)
        has_channel = mask.any(dim=-1, keepdim=True)  # (B, 1)
        scores = torch.where(has_channel, scores, torch.zeros_like(scores))  # (B, C): no all -inf row
        weights = scores.softmax(dim=-1) * mask.to(scores.dtype)  # (B, C): 0 on missing channels
        fused = (weights.unsqueeze(-1) * vectors).sum(dim=1)  # (B, W)
        return fused, weights
