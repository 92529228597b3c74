"""Audio tower: a log-mel spectrogram cut into time patches and encoded by a small transformer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["AudioConfig", "AudioEncoder"]


@dataclass
class AudioConfig:
    """Architecture of :class:`AudioEncoder`."""

    n_mels: int = 64  # mel bands of the input; must equal the data's decode.n_mels
    patch_frames: int = 4  # log-mel time frames per token (10 ms hop: 4 frames = 40 ms)
    width: int = 128  # token width
    depth: int = 2  # transformer encoder layers
    heads: int = 4  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden = ratio * width
    max_tokens: int = 256  # learned positions: clips up to max_tokens * patch_frames mel frames
    dropout: float = 0.0  # dropout of the encoder layers (attention and MLP)

    def __post_init__(self) -> None:
        for name in ("n_mels", "patch_frames", "width", "depth", "heads", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"AudioConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"AudioConfig.width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"AudioConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"AudioConfig.dropout must lie in [0, 1), got {self.dropout}")


class AudioEncoder(nn.Module):
    """Log-mel ``(B, n_mels, F)`` -> tokens ``(B, N, width)``, ``N = ceil(F / patch_frames)``.

    Each token embeds ``patch_frames`` consecutive mel frames (flattened ``n_mels * patch_frames``
    -> Linear). Mel frames past ``mel_valid`` (zero padding of short clips) are zeroed before the
    patch embedding, and tokens without a real frame are masked out of attention, so the padding
    never reaches the output. A sample without any real frame (missing audio) gives zero tokens,
    an all-False token mask and a zero pooled vector, never NaN.
    """

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.n_mels * cfg.patch_frames, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_tokens, cfg.width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.width,
            nhead=cfg.heads,
            dim_feedforward=int(cfg.width * cfg.mlp_ratio),
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor is off: it does not apply to norm_first layers (and would warn)
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.depth, norm=nn.LayerNorm(cfg.width),
                                             enable_nested_tensor=False)
        self.width = cfg.width

    def num_tokens(self, num_frames: int) -> int:
        """Tokens of a log-mel of ``num_frames`` frames."""
        return -(-num_frames // self.cfg.patch_frames)

    def forward_tokens(self, mel: torch.Tensor, mel_valid: torch.Tensor | None = None,
                       audio_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(B, N, W)`` and their mask ``(B, N)`` (True = real audio).

        ``mel_valid`` ``(B,)`` long: real mel frames per sample (None = all ``F``);
        ``audio_mask`` ``(B,)`` bool: False marks a sample without audio (all its tokens masked).
        Masked tokens are zeros.
        """
        b, n_mels, f = mel.shape
        p = self.cfg.patch_frames
        if n_mels != self.cfg.n_mels:
            raise ValueError(f"mel has {n_mels} bands but AudioConfig.n_mels is {self.cfg.n_mels}: "
                             "make the data's decode.n_mels and the audio tower's n_mels equal")
        n = self.num_tokens(f)
        if n > self.cfg.max_tokens:
            raise ValueError(f"a log-mel of {f} frames makes {n} tokens > AudioConfig.max_tokens="
                             f"{self.cfg.max_tokens}; raise max_tokens or patch_frames, or shorten audio_seconds")
        frame_idx = torch.arange(f, device=mel.device)  # (F,)
        if mel_valid is None:
            frame_ok = torch.ones(b, f, dtype=torch.bool, device=mel.device)  # (B, F)
        else:
            frame_ok = frame_idx.unsqueeze(0) < mel_valid.to(mel.device).view(b, 1)  # (B, F)
        if audio_mask is not None:
            frame_ok = frame_ok & audio_mask.to(mel.device).view(b, 1).bool()  # (B, F)
        x = mel * frame_ok.unsqueeze(1).to(mel.dtype)  # (B, n_mels, F): padding frames zeroed
        x = nn.functional.pad(x, (0, n * p - f))  # (B, n_mels, N*P)
        x = x.reshape(b, n_mels, n, p).permute(0, 2, 3, 1)  # (B, N, P, n_mels)
        x = x.reshape(b, n, p * n_mels)  # (B, N, P*n_mels)
        x = self.patch_embed(x) + self.pos_embed[:, :n]  # (B, N, W)

        frame_ok = nn.functional.pad(frame_ok, (0, n * p - f))  # (B, N*P)
        token_mask = frame_ok.reshape(b, n, p).any(dim=-1)  # (B, N): a token with >= 1 real frame
        has_audio = token_mask.any(dim=-1)  # (B,)
        # Attention over only masked keys is NaN: let rows without audio attend to their first
        # token (its output is zeroed below), so that every row has one key.
        attend = token_mask.clone()  # (B, N)
        attend[:, 0] |= ~has_audio
        x = self.encoder(x, src_key_padding_mask=~attend)  # (B, N, W)
        x = x * token_mask.unsqueeze(-1).to(x.dtype)  # (B, N, W): masked tokens -> 0
        return x, token_mask

    def forward(self, mel: torch.Tensor, audio_mask: torch.Tensor | None = None,
                mel_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean of the tokens ``(B, W)``; zero rows where ``audio_mask`` is False."""
        tokens, token_mask = self.forward_tokens(mel, mel_valid, audio_mask)  # (B, N, W), (B, N)
        weights = token_mask.to(tokens.dtype).unsqueeze(-1)  # (B, N, 1)
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, W)
