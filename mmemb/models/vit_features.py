"""Token outputs of several depths of a timm ViT from one forward pass (multi-scale features)."""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch.utils.checkpoint import checkpoint

__all__ = ["vit_multiscale_tokens", "block_prefix_tokens"]


def block_prefix_tokens(block: torch.nn.Module, x: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The outputs ``(B, P, W)`` of ``block`` at the first ``P = num_prefix`` tokens of ``x`` ``(B, N, W)``
    (every token is still a key and a value): ``block(x)[:, :P]`` without the queries, projection and MLP
    of the other ``N - P`` tokens. Computed by the formulas of timm's :class:`~timm.models.vision_transformer.Block`
    and :class:`~timm.layers.attention.Attention`; any other block type runs whole and is sliced."""
    attn = getattr(block, "attn", None)
    if type(block) is not Block or type(attn) is not Attention or getattr(attn, "gate", None) is not None:
        return block(x)[:, :num_prefix]
    h = block.norm1(x)  # (B, N, W)
    b, n, _ = h.shape
    p, d, heads, hd = num_prefix, attn.attn_dim, attn.num_heads, attn.head_dim
    w, bias = attn.qkv.weight, attn.qkv.bias  # rows: q, k, v
    q = F.linear(h[:, :p], w[:d], None if bias is None else bias[:d])  # (B, P, D)
    kv = F.linear(h, w[d:], None if bias is None else bias[d:])  # (B, N, 2D)
    q = q.reshape(b, p, heads, hd).transpose(1, 2)  # (B, H, P, hd)
    k, v = kv.reshape(b, n, 2, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, hd) each
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout = attn.attn_drop.p if attn.training else 0.0
    if attn.fused_attn:
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, H, P, hd)
    else:
        o = attn.attn_drop((q * attn.scale @ k.transpose(-2, -1)).softmax(dim=-1)) @ v  # (B, H, P, hd)
    o = attn.proj_drop(attn.proj(attn.norm(o.transpose(1, 2).reshape(b, p, d))))  # (B, P, W)
    y = x[:, :p] + block.drop_path1(block.ls1(o))  # (B, P, W)
    return y + block.drop_path2(block.ls2(block.mlp(block.norm2(y))))


def vit_multiscale_tokens(vit: VisionTransformer, x: torch.Tensor, depths: Sequence[int],
                          norm: Literal["all", "last", "none"] = "all",
                          grad_checkpointing: bool = False, prefix_only_last: bool = False) -> list[torch.Tensor]:
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

    ``prefix_only_last``: the deepest block computes only the prefix tokens' outputs
    (:func:`block_prefix_tokens`), so the last output is ``(B*T, num_prefix_tokens, W)``: the same values,
    for a caller that reads only the [CLS] token there.
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

    if prefix_only_last and not vit.num_prefix_tokens:
        raise ValueError("prefix_only_last needs a ViT with prefix tokens ([CLS] or registers); this one has none")
    x = vit.patch_embed(x)  # (B*T, N_patches, W) (or (B*T, H, W', C) with dynamic_img_size)
    x = vit._pos_embed(x)  # (B*T, N, W): prefix tokens prepended, positions added
    x = vit.patch_drop(x)  # (B*T, N', W)
    x = vit.norm_pre(x)  # (B*T, N', W)
    wanted = set(resolved)
    outputs = []
    for i, block in enumerate(vit.blocks[: resolved[-1] + 1]):
        if prefix_only_last and i == resolved[-1]:
            fn = partial(block_prefix_tokens, block, num_prefix=vit.num_prefix_tokens)
        else:
            fn = block
        if grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(fn, x, use_reentrant=False)  # (B*T, N', W)
        else:
            x = fn(x)  # (B*T, N', W)
        if i in wanted:
            last = i == resolved[-1]
            outputs.append(vit.norm(x) if norm == "all" or (norm == "last" and last) else x)
    return outputs
