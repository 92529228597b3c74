"""SimCLR-style augmentations of a whole batch, on tensors (run them on the device, after the copy).

* :func:`augment_frames`: per clip, one random resized crop (the same for all its frames), a
  horizontal flip, brightness/contrast/saturation jitter and a temporal jitter of the frame order;
* :func:`augment_mel`: SpecAugment-style time and frequency masking of log-mel spectrograms;
* :func:`two_views`: two independently augmented copies of a batch (``frames`` and ``mel`` replaced).

Every random draw comes from the given ``torch.Generator`` (or the global RNG when ``None``), in a
fixed order, so a seeded generator gives the same views every time. The draws are made on the
generator's device and moved to the data's device: a CPU generator also drives CUDA batches.
Missing modalities (all-zero clips, or ``False`` in the batch's masks) stay exactly zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_frames", "augment_mel", "two_views"]

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights (torchvision's rgb_to_grayscale)


@dataclass
class AugmentConfig:
    """Strength of the augmentations of :func:`two_views`."""

    crop_scale: tuple[float, float] = (0.4, 1.0)  # area of the random crop as a share of the frame, (min, max)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio w/h of the crop, log-uniform in (min, max)
    color_jitter: float = 0.4  # brightness, contrast, saturation factors uniform in [1 - s, 1 + s]; 0 = off
    p_flip: float = 0.5  # probability of a horizontal flip of a clip
    temporal_jitter: int = 1  # each frame index moves by up to this many frames (then re-sorted); 0 = off
    audio_mask_frac: float = 0.1  # each time (freq) mask is up to this share of the frames (mel bins) wide
    num_time_masks: int = 2  # SpecAugment time masks per clip
    num_freq_masks: int = 2  # SpecAugment frequency masks per clip

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale = tuple(self.crop_scale)  # type: ignore[assignment]
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"AugmentConfig.crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio = tuple(self.crop_ratio)  # type: ignore[assignment]
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentConfig.crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"AugmentConfig.color_jitter must lie in [0, 1), got {self.color_jitter}")
        if not 0 <= self.p_flip <= 1:
            raise ValueError(f"AugmentConfig.p_flip must lie in [0, 1], got {self.p_flip}")
        if self.temporal_jitter < 0:
            raise ValueError(f"AugmentConfig.temporal_jitter must be >= 0, got {self.temporal_jitter}")
        if not 0 <= self.audio_mask_frac <= 1:
            raise ValueError(f"AugmentConfig.audio_mask_frac must lie in [0, 1], got {self.audio_mask_frac}")
        if self.num_time_masks < 0 or self.num_freq_masks < 0:
            raise ValueError("AugmentConfig.num_time_masks and num_freq_masks must be >= 0")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 drawn on the generator's device, moved to ``device``."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=source).to(device)


def _keep_rows(out: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``out`` where ``mask`` is True, ``original`` elsewhere (per row of dim 0)."""
    if mask is None:
        return out
    m = mask.to(device=out.device, dtype=torch.bool).view(-1, *([1] * (out.dim() - 1)))  # (B, 1, ...)
    return torch.where(m, out, original)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other`` clamped to [0, 1] (torchvision's _blend)."""
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def augment_frames(
    frames: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment clips ``(B, T, 3, S, S)``: uint8 RGB in, uint8 out; float in [0, 1] in, float out.

    Per clip (the same for all its frames):

    * random resized crop: area ``U(crop_scale)`` of the frame, aspect ratio log-uniform in
      ``crop_ratio`` (clipped to the frame), position uniform; resampled bilinearly back to ``S x S``
      (one batched ``affine_grid``/``grid_sample``);
    * horizontal flip with probability ``p_flip`` (folded into the same affine map);
    * brightness, then contrast (blend with the clip's mean gray), then saturation (blend with each
      pixel's gray), each factor ``U(1 - color_jitter, 1 + color_jitter)``;
    * temporal jitter: frame ``t`` is replaced by frame ``clamp(t + d_t, 0, T - 1)`` with ``d_t``
      uniform in ``[-temporal_jitter, temporal_jitter]``, the indices re-sorted so that time still
      runs forward (some frames repeat, some drop).

    Clips where ``mask`` ``(B,)`` is False are returned unchanged; an all-zero clip stays zero anyway.
    """
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"augment_frames: expected (B, T, 3, H, W), got {tuple(frames.shape)}")
    is_uint8 = frames.dtype == torch.uint8
    b, t, c, h, w = frames.shape
    device = frames.device
    x = frames.float() / 255.0 if is_uint8 else frames.float()  # (B, T, 3, H, W) in [0, 1]

    # draws, in a fixed order
    area = cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * _rand((b,), generator, device)
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * _rand((b,), generator, device))
    pos = _rand((b, 2), generator, device)
    flip = _rand((b,), generator, device) < cfg.p_flip
    jitter = 1.0 + cfg.color_jitter * (2.0 * _rand((b, 3), generator, device) - 1.0)  # (B, 3)
    shift = _rand((b, t), generator, device)

    # crop + flip as an affine map of normalised coordinates [-1, 1]
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # (B,) crop width as a share of the frame
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2.0 * pos[:, 0] - 1.0) * (1.0 - cw)  # (B,) crop centre, keeping the crop inside
    cy = (2.0 * pos[:, 1] - 1.0) * (1.0 - ch)
    sx = torch.where(flip, -cw, cw)
    zero = torch.zeros_like(cw)
    theta = torch.stack([torch.stack([sx, zero, cx], -1), torch.stack([zero, ch, cy], -1)], 1)  # (B, 2, 3)
    theta = theta.repeat_interleave(t, dim=0)  # (B*T, 2, 3): one crop per clip
    flat = x.reshape(b * t, c, h, w)  # (B*T, 3, H, W)
    grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
    x = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False).view(b, t, c, h, w)

    # colour: brightness, contrast, saturation
    gray_w = x.new_tensor(_GRAY).view(1, 1, 3, 1, 1)
    f = jitter.view(b, 3, 1, 1, 1, 1)  # (B, 3, 1, 1, 1, 1): one factor per clip and operation
    x = (x * f[:, 0]).clamp(0.0, 1.0)
    mean_gray = (x * gray_w).sum(dim=2, keepdim=True).mean(dim=(1, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)
    x = _blend(x, mean_gray, f[:, 1])
    gray = (x * gray_w).sum(dim=2, keepdim=True)  # (B, T, 1, H, W)
    x = _blend(x, gray, f[:, 2])

    # temporal jitter
    if cfg.temporal_jitter > 0 and t > 1:
        j = cfg.temporal_jitter
        d = torch.floor(shift * (2 * j + 1)).long() - j  # (B, T) in [-j, j]
        idx = (torch.arange(t, device=device) + d).clamp(0, t - 1).sort(dim=1).values  # (B, T)
        x = torch.gather(x, 1, idx.view(b, t, 1, 1, 1).expand(b, t, c, h, w))

    out = (x * 255.0).round().clamp(0, 255).to(torch.uint8) if is_uint8 else x.to(frames.dtype)
    return _keep_rows(out, frames, mask)


def _band_mask(b: int, size: int, count: int, frac: float, generator: torch.Generator | None,
               device: torch.device) -> torch.Tensor:
    """``(B, size)`` bool: the union of ``count`` bands per row, each of width ``U{0..floor(frac*size)}``
    at a uniform start."""
    width_max = int(frac * size)
    u = _rand((b, count, 2), generator, device)  # always drawn, so the stream does not depend on sizes
    if count == 0 or width_max == 0:
        return torch.zeros(b, size, dtype=torch.bool, device=device)
    width = torch.floor(u[..., 0] * (width_max + 1)).long()  # (B, M) in [0, width_max]
    start = torch.floor(u[..., 1] * (size - width + 1)).long()  # (B, M) in [0, size - width]
    ar = torch.arange(size, device=device).view(1, 1, size)
    inside = (ar >= start.unsqueeze(-1)) & (ar < (start + width).unsqueeze(-1))  # (B, M, size)
    return inside.any(dim=1)


def augment_mel(
    mel: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """SpecAugment masking of log-mels ``(B, n_mels, F)``: ``num_time_masks`` bands of frames and
    ``num_freq_masks`` bands of mel bins per clip, each up to ``audio_mask_frac`` of the axis wide,
    set to the clip's mean value (0 for an all-zero, missing clip, which thus stays zero). Clips where
    ``mask`` ``(B,)`` is False are returned unchanged. Same dtype and shape."""
    if mel.dim() != 3:
        raise ValueError(f"augment_mel: expected (B, n_mels, F), got {tuple(mel.shape)}")
    b, n_mels, n_frames = mel.shape
    time = _band_mask(b, n_frames, cfg.num_time_masks, cfg.audio_mask_frac, generator, mel.device)  # (B, F)
    freq = _band_mask(b, n_mels, cfg.num_freq_masks, cfg.audio_mask_frac, generator, mel.device)  # (B, n_mels)
    hide = time.unsqueeze(1) | freq.unsqueeze(2)  # (B, n_mels, F)
    fill = mel.mean(dim=(1, 2), keepdim=True).expand_as(mel)  # (B, n_mels, F)
    return _keep_rows(torch.where(hide, fill, mel), mel, mask)


def two_views(
    batch: Mapping[str, Any], cfg: AugmentConfig, generator: torch.Generator | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two independently augmented copies of ``batch`` (shallow: every other entry is shared).

    ``frames`` and ``mel`` are replaced when present, using ``video_mask`` / ``audio_mask`` so that
    missing clips stay untouched; the first view's draws come before the second's.
    """
    views = []
    for _ in range(2):
        view = dict(batch)
        if "frames" in batch:
            view["frames"] = augment_frames(batch["frames"], cfg, generator, batch.get("video_mask"))
        if "mel" in batch:
            view["mel"] = augment_mel(batch["mel"], cfg, generator, batch.get("audio_mask"))
        views.append(view)
    return views[0], views[1]
