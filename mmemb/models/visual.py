"""Visual tower: a timm ViT applied to every frame; ImageNet normalisation of the frames; local ViT weights."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from .config import VisionConfig

__all__ = ["FrameEncoder", "MatmulPatchEmbed", "load_vit_weights", "normalize_frames"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCALE = tuple(1.0 / (255.0 * s) for s in IMAGENET_STD)  # (x / 255 - mean) / std = x * scale + shift
_SHIFT = tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(..., 3, S, S)`` -> float normalised with ImageNet mean/std; float input is returned
    unchanged (taken as already normalised)."""
    if frames.dtype != torch.uint8:
        return frames
    scale = frames.new_tensor(_SCALE, dtype=torch.float32).view(3, 1, 1)  # (3, 1, 1)
    shift = frames.new_tensor(_SHIFT, dtype=torch.float32).view(3, 1, 1)
    return frames.float().mul_(scale).add_(shift)  # (x / 255 - mean) / std: one new tensor, not three

log = logging.getLogger(__name__)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` file or a ``torch.save`` file (loaded with ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_vit_weights(vit: VisionTransformer, path: str | Path) -> None:
    """Load local timm/OpenCLIP ViT weights into ``vit`` (position embeddings resampled to its grid).

    The classifier head is dropped; any other missing or unexpected key is an error.
    """
    state = checkpoint_filter_fn(_read_state_dict(path), vit)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"weights {path} do not fit the ViT: missing {missing[:8]}, unexpected {unexpected[:8]}")
    log.info("loaded ViT weights from %s", path)


class MatmulPatchEmbed(PatchEmbed):
    """timm's :class:`~timm.layers.PatchEmbed` computed as a reshape and one matrix product with the
    convolution's own weight (the same parameters, names and outputs to float rounding): on the CPU at
    the small sizes of the light models the convolution call costs more than the arithmetic (0.28 against
    0.16 ms for 4 frames of 64 px in 16 x 16 patches at width 64, one thread). Padding and non-flat output
    formats take timm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flatten or self.dynamic_img_pad:
            return super().forward(x)
        _, c, h, w = x.shape
        ph, pw = self.patch_size
        if self.img_size is not None and self.strict_img_size and (h, w) != tuple(self.img_size):
            raise ValueError(f"frames of {h}x{w} px, the ViT's are {self.img_size[0]}x{self.img_size[1]}")
        if h % ph or w % pw:
            raise ValueError(f"frames of {h}x{w} px do not split into {ph}x{pw} patches")
        gh, gw = h // ph, w // pw
        x = x.reshape(-1, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
        x = x.reshape(-1, gh * gw, c * ph * pw)  # (B, N, C*ph*pw): the conv weight's (C, ph, pw) order
        x = F.linear(x, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)  # (B, N, W)
        return self.norm(x)


class FrameEncoder(nn.Module):
    """The ViT of the visual tower (``vit``), applied to every frame by the model
    (:func:`mmemb.models.vit_features.vit_multiscale_tokens`); local weights from ``pretrained_path``."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.vit = VisionTransformer(
            img_size=cfg.frame_size,
            patch_size=cfg.patch_size,
            num_classes=0,  # no classifier
            global_pool="token",
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path,
            embed_layer=MatmulPatchEmbed,
        )
        if cfg.pretrained_path:
            load_vit_weights(self.vit, cfg.pretrained_path)
