"""Training objectives: small functions of tensors returning a dict of named loss terms.

The training loss is :func:`total_loss` of the terms with one weight per term, and every term is
logged on its own. No Lightning here.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

__all__ = ["clip_infonce", "total_loss", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = {"clip_v2t": 0.5, "clip_t2v": 0.5}  # symmetric InfoNCE = mean of both directions


def _pair_mask(n: int, device: torch.device, *masks: torch.Tensor | None) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool, device=device)
    for m in masks:
        if m is not None:
            keep = keep & m.to(device=device, dtype=torch.bool)
    return keep


def clip_infonce(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    video_mask: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Symmetric video-text InfoNCE (CLIP) over the pairs of a batch.

    Args:
        video, text: ``(B, D)`` embeddings (normally L2-normalised); row ``i`` of both is pair ``i``.
        logit_scale: inverse temperature multiplying the cosine similarities.
        video_mask, text_mask: ``(B,)`` bools; a sample lacking either modality contributes
            neither a positive pair nor a negative (its row and column are dropped).

    Returns:
        ``{"clip_v2t": ..., "clip_t2v": ...}``: cross-entropy of each video over the texts and of
        each text over the videos, averaged over the kept pairs. With no kept pair both are zeros
        that still backpropagate (to keep distributed/AMP steps uniform).
    """
    keep = _pair_mask(video.shape[0], video.device, video_mask, text_mask)  # (B,)
    v, t = video[keep], text[keep]  # (P, D)
    if v.shape[0] == 0:
        zero = (video.sum() + text.sum()) * 0.0
        return {"clip_v2t": zero, "clip_t2v": zero}
    logits = logit_scale * v @ t.T  # (P, P): videos x texts
    labels = torch.arange(v.shape[0], device=v.device)
    return {
        "clip_v2t": F.cross_entropy(logits, labels),
        "clip_t2v": F.cross_entropy(logits.T, labels),
    }


def total_loss(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum(weights[k] * terms[k])``. Every term needs a weight and every weight a term (0 disables)."""
    missing = set(weights) - set(terms)
    unweighted = set(terms) - set(weights)
    if missing or unweighted:
        raise KeyError(f"loss terms {sorted(terms)} and weights {sorted(weights)} differ: "
                       f"no term for {sorted(missing)}, no weight for {sorted(unweighted)}")
    return sum(float(weights[k]) * terms[k] for k in sorted(terms))
