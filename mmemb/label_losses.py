"""Multi-label loss against a per-sample target distribution (the ``softmax`` label weighting).

With ``LabelConfig.weighting = "softmax"`` the batch's ``hashtag_weights`` / ``query_weights`` hold, for
each video, a distribution over its positive labels proportional to IDF x clicks x freshness; this is
the cross-entropy of the label scores' softmax against it. (``bce_global`` and ``uniform`` weights go
with :func:`mmemb.losses.weighted_multilabel_bce`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_target_cross_entropy"]


def soft_target_cross_entropy(
    logits: torch.Tensor, weights: torch.Tensor, row_mask: torch.Tensor | None = None, name: str = "hashtag"
) -> dict[str, torch.Tensor]:
    """Softmax cross-entropy against soft targets.

    Args:
        logits: ``(B, N)`` scores of the ``N`` labels.
        weights: ``(B, N)`` non-negative weights of each video's positive labels (0 elsewhere); each
            row is normalised to the target ``p_ij = weights_ij / sum_k weights_ik``, so rows that
            already sum to 1 (the ``softmax`` weighting) are used as they are.
        row_mask: ``(B,)`` bools; ``False`` rows are dropped. Rows whose weights sum to 0 (no
            positive label) are dropped too.
        name: the term is called ``f"{name}_ce"``.

    Returns:
        ``{f"{name}_ce": mean over the kept rows i of -sum_j p_ij * log_softmax(logits_i)_j}``; zero
        that still backpropagates through ``logits`` when no row is kept.
    """
    if logits.dim() != 2 or logits.shape != weights.shape:
        raise ValueError(f"soft_target_cross_entropy: logits and weights must both be (B, N), got "
                         f"{tuple(logits.shape)} and {tuple(weights.shape)}")
    if row_mask is not None and row_mask.shape != logits.shape[:1]:
        raise ValueError(f"soft_target_cross_entropy: row_mask must be (B,) = {tuple(logits.shape[:1])}, "
                         f"got {tuple(row_mask.shape)}")
    w = weights.to(logits.dtype).clamp(min=0)  # (B, N)
    total = w.sum(dim=-1)  # (B,)
    keep = total > 0  # (B,)
    if row_mask is not None:
        keep = keep & row_mask.to(torch.bool)
    p = w / torch.where(keep, total, torch.ones_like(total))[:, None]  # (B, N); dropped rows are ignored below
    log_q = F.log_softmax(logits, dim=-1)  # (B, N)
    ce = -torch.where(p > 0, p * log_q, torch.zeros_like(log_q)).sum(dim=-1)  # (B,); 0 * -inf counts as 0
    kept = keep.to(logits.dtype)  # (B,)
    # no host sync: with no kept row the numerator is 0 * finite values, so the clamp gives an exact 0 with grad
    return {f"{name}_ce": (ce * kept).sum() / kept.sum().clamp(min=1.0)}
