"""Token outputs of several depths of a timm ViT from one forward pass (multi-scale features)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.checkpoint import checkpoint

__all__ = ["vit_multiscale_tokens"]


def vit_multiscale_tokens(vit: VisionTransformer, x: torch.Tensor, depths: Sequence[int],
                          norm: Literal["all", "last", "none"] = "all",
                          grad_checkpointing: bool = False) -> list[torch.Tensor]:
    """Tokens ``[(B*T, N, W), ...]`` after the blocks ``depths`` of ``vit``, shallow to deep.

    ``x``: normalised images ``(B*T, 3, S, S)`` (see :func:`mmemb.models.visual.normalize_frames`).
    ``depths``: 0-based block indices (negative counts from the end: -1 = last block), strictly
    increasing; the blocks run once, and only up to the deepest one asked for. ``N`` includes the
    prefix ([CLS] / register) tokens, as in ``vit.forward_features``.

    ``norm``: where ``vit.norm`` (the final LayerNorm) is applied.
      * ``"all"`` (default, like timm's ``forward_intermediates(norm=True)``): every collected
        output, so all depths share one scale, which suits a fusion that projects each of them;
      * ``"last"``: only the deepest collected output;
      * ``"none"``: none (raw residual stream).
    With ``"all"`` or ``"last"``, depth ``-1`` equals ``vit.forward_features(x)``.

    ``grad_checkpointing``: recompute each block in the backward pass (``torch.utils.checkpoint``,
    ``use_reentrant=False``) instead of storing its activations; same outputs and gradients.
    """
    if norm not in ("all", "last", "none"):
        raise ValueError(f"norm must be 'all', 'last' or 'none', got {norm!r}")
    num_blocks = len(vit.blocks)
    if not depths:
        raise ValueError("depths must name at least one block")
    resolved = []
    for d in depths:
        if not -num_blocks <= d < num_blocks:
            raise ValueError(f"block index {d} is out of range for a ViT of {num_blocks} blocks")
        resolved.append(d % num_blocks)
    if any(a >= b for a, b in zip(resolved, resolved[1:])):
        raise ValueError(f"depths must be strictly increasing block indices, got {list(depths)} -> {resolved}")

    x = vit.patch_embed(x)  # (B*T, N_patches, W) (or (B*T, H, W', C) with dynamic_img_size)
    x = vit._pos_embed(x)  # (B*T, N, W): prefix tokens prepended, positions added
    x = vit.patch_drop(x)  # (B*T, N', W)
    x = vit.norm_pre(x)  # (B*T, N', W)
    wanted = set(resolved)
    outputs = []
    for i, block in enumerate(vit.blocks[: resolved[-1] + 1]):
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)  # (B*T, N', W)
        else:
            x = block(x)  # (B*T, N', W)
        if i in wanted:
            last = i == resolved[-1]
            outputs.append(vit.norm(x) if norm == "all" or (norm == "last" and last) else x)
    return outputs
