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
        that still backpropagate to the embeddings and ``logit_scale`` (to keep distributed/AMP steps
        uniform).
    """
    keep = _pair_mask(video.shape[0], video.device, video_mask, text_mask)  # (B,)
    v, t = video[keep], text[keep]  # (P, D)
    if v.shape[0] == 0:
        zero = (video.sum() + text.sum()) * 0.0
        if isinstance(logit_scale, torch.Tensor):  # every parameter gets a (zero) gradient under DDP
            zero = zero + logit_scale.sum() * 0.0
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


# ----------------------------------------------------------------------------- teacher objectives
# (appended for the teacher model, issue #3; the names below are not in ``__all__`` above to leave that
# line untouched, see ``__all__ += [...]`` at the end)


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SimCLR's NT-Xent over the ``2N`` views of ``N`` pairs.

    Args:
        z1, z2: ``(N, D)`` embeddings of two augmented views; row ``i`` of both is pair ``i``. They are
            L2-normalised here (the similarity is the cosine).
        temperature: the cosine similarities are divided by it (> 0).
        mask: ``(N,)`` bools; a ``False`` pair is dropped entirely (neither anchor, positive nor negative).

    Returns:
        ``{"simclr": ...}``: with ``z = cat(z1, z2)`` over the ``2P`` kept views and
        ``s_ab = cos(z_a, z_b) / temperature``, the mean over anchors ``a`` of
        ``-log(exp(s_ap) / sum_{b != a} exp(s_ab))`` where ``p`` is ``a``'s other view: the positive
        against the ``2P - 2`` other views as negatives. Symmetric in ``z1``/``z2``. Zero that still
        backpropagates when no pair is kept.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent: z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    keep = _pair_mask(z1.shape[0], z1.device, mask)  # (N,)
    a, b = z1[keep], z2[keep]  # (P, D)
    p = a.shape[0]
    if p == 0:
        return {"simclr": (z1.sum() + z2.sum()) * 0.0}
    z = F.normalize(torch.cat([a, b]), dim=-1)  # (2P, D)
    logits = z @ z.T / temperature  # (2P, 2P)
    self_mask = torch.eye(2 * p, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # a view is not its own negative
    target = torch.cat([torch.arange(p, 2 * p), torch.arange(0, p)]).to(z.device)  # (2P,): the other view
    return {"simclr": F.cross_entropy(logits, target)}


def text_view_infonce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """InfoNCE between two text views of the same videos (e.g. the caption alone and the cover text
    alone): :func:`nt_xent` of ``z1``, ``z2`` ``(N, D)`` over the pairs kept by ``mask`` ``(N,)`` (the
    rows that have both views), named ``{"text_views": ...}``."""
    return {"text_views": nt_xent(z1, z2, temperature, mask)["simclr"]}


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ``(n_r, ...)`` of every DDP rank along dim 0, in rank order: ``(sum n_r, ...)``.

    Identity when ``torch.distributed`` is not initialised (or has one process). Otherwise the gather is
    ``torch.distributed.nn.functional.all_gather``, which is differentiable: the local shard's slice
    carries the gradient of this rank's loss and, through the backward reduce-scatter, the gradients the
    other ranks' losses put on it. Ranks may hold different numbers of rows (a last, smaller batch): the
    sizes are gathered first and every shard is zero-padded to the largest for the collective, then the
    padding is cut off again.
    """
    if not _is_distributed() or torch.distributed.get_world_size() == 1:
        return x
    import warnings

    import torch.distributed.nn.functional as dist_fn

    world = torch.distributed.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    torch.distributed.all_gather(sizes, n)
    sizes_list = [int(s.item()) for s in sizes]
    most = max(sizes_list)
    padded = x
    if x.shape[0] < most:
        padded = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))])  # (most, ...)
    with warnings.catch_warnings():  # deprecated in favour of the (private) _functional_collectives API
        warnings.simplefilter("ignore", FutureWarning)
        shards = dist_fn.all_gather(padded)  # world x (most, ...)
    return torch.cat([s[:k] for s, k in zip(shards, sizes_list)])  # (sum n_r, ...)


def _rank_offset(n_local: int, device: torch.device) -> int:
    """Number of rows of the ranks before this one (0 when not distributed)."""
    if not _is_distributed() or torch.distributed.get_world_size() == 1:
        return 0
    n = torch.tensor([n_local], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(sizes, n)
    return int(sum(int(s.item()) for s in sizes[: torch.distributed.get_rank()]))


def clip_infonce_global(
    video: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    video_mask: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`clip_infonce` with the negatives of every DDP rank (open_clip's ``gather_with_grad`` +
    ``local_loss``).

    Each rank's kept pairs are the anchors; the candidates are the kept pairs of all ranks, gathered
    with :func:`gather_with_grad`. Each term is the mean over this rank's anchors (DDP then averages the
    ranks' gradients). Masks as in :func:`clip_infonce` (a sample lacking either modality is dropped
    everywhere). On one process (or without ``torch.distributed``) this equals :func:`clip_infonce`.

    Every rank runs the same collectives in forward and in backward, whatever its batch holds: the
    videos and texts travel in one gather (one backward collective, so two gathers cannot be matched
    in a different order on different ranks), and a rank without a kept pair returns zeros built from
    the gathered tensors and ``logit_scale``, so that its backward still enters the gather's backward
    (the reduce-scatter the other ranks wait in) and every parameter gets a (zero) gradient.
    """
    keep = _pair_mask(video.shape[0], video.device, video_mask, text_mask)  # (B,)
    offset = _rank_offset(video.shape[0], video.device)
    dim_v = video.shape[1]
    both = gather_with_grad(torch.cat([video, text.to(video.dtype)], dim=1))  # (G, Dv + Dt)
    all_video, all_text = both[:, :dim_v], both[:, dim_v:]  # (G, Dv), (G, Dt)
    all_keep = gather_with_grad(keep.to(torch.uint8)).bool()  # (G,)
    # the global row of every local anchor, then its column among the kept candidates
    col = torch.cumsum(all_keep.long(), dim=0) - 1  # (G,): column of each kept global row
    local_rows = torch.arange(video.shape[0], device=video.device)[keep] + offset  # (P,)
    labels = col[local_rows]  # (P,)
    v, t = video[keep], text[keep]  # (P, D) local anchors
    if v.shape[0] == 0:
        # no host sync beyond the shape test every rank makes; the zero reaches the gather and the scale
        zero = both.sum() * 0.0
        if isinstance(logit_scale, torch.Tensor):
            zero = zero + logit_scale.sum() * 0.0
        return {"clip_v2t": zero, "clip_t2v": zero}
    cand_v, cand_t = all_video[all_keep], all_text[all_keep]  # (Pg, D)
    logits_v2t = logit_scale * v @ cand_t.T  # (P, Pg): local videos x all texts
    logits_t2v = logit_scale * t @ cand_v.T  # (P, Pg): local texts x all videos
    return {"clip_v2t": F.cross_entropy(logits_v2t, labels), "clip_t2v": F.cross_entropy(logits_t2v, labels)}


def weighted_multilabel_bce(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    neg_weight: float = 1.0,
    name: str = "hashtag",
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """TF-IDF-weighted multi-label binary cross-entropy (hashtags, queries).

    Args:
        logits: ``(B, H)`` scores of the ``H`` labels.
        targets: ``(B, H)`` multi-hot (1 positive, 0 negative; soft values interpolate the weights).
        weights: ``(B, H)`` weight of each positive (the batch's ``hashtag_weights`` /
            ``query_weights``: TF-IDF, x clicks for queries); ignored where ``targets`` is 0.
        neg_weight: weight of every negative entry.
        name: the term is called ``f"{name}_bce"``.
        mask: ``(B,)`` bools; ``False`` rows (e.g. samples without labels at all, when they should not
            push every label down) are dropped.

    Returns:
        ``{f"{name}_bce": sum_ij w_ij * bce_ij / sum_ij w_ij}`` over the kept rows, with
        ``w_ij = t_ij * weights_ij + (1 - t_ij) * neg_weight`` and ``bce_ij`` the binary cross-entropy
        of ``logits_ij`` against ``t_ij``. A kept row with no positive still contributes its ``H``
        negatives (to the numerator and the normaliser). A positive whose weight is 0 contributes
        nothing. Zero that still backpropagates when the weights sum to 0 (no kept row, or
        ``neg_weight=0`` and no weighted positive).
    """
    if logits.shape != targets.shape or logits.shape != weights.shape or logits.dim() != 2:
        raise ValueError(f"weighted_multilabel_bce: logits, targets, weights must all be (B, H), got "
                         f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(weights.shape)}")
    if neg_weight < 0:
        raise ValueError(f"weighted_multilabel_bce: neg_weight must be >= 0, got {neg_weight}")
    keep = _pair_mask(logits.shape[0], logits.device, mask).to(logits.dtype)  # (B,)
    t, w_pos = targets.to(logits.dtype), weights.to(logits.dtype)  # (B, H)
    w = (t * w_pos + (1.0 - t) * neg_weight) * keep[:, None]  # (B, H); dropped rows weigh 0
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")  # (B, H)
    # no host sync: with all weights 0 the numerator is 0 too, so the clamp gives an exact 0 with grad
    return {f"{name}_bce": (w * bce).sum() / w.sum().clamp(min=torch.finfo(logits.dtype).tiny)}


def keyword_mask_loss(
    logits: torch.Tensor, target_ids: torch.Tensor, valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-entropy of the masked keyword tokens (see :mod:`mmemb.models.keywords`).

    Args:
        logits: ``(B, K, V)`` vocabulary scores at the ``K`` masked slots of each text.
        target_ids: ``(B, K)`` the original token ids at those slots.
        valid: ``(B, K)`` bools; ``False`` slots (padding: a text with fewer masked tokens) are ignored.

    Returns:
        ``{"keyword": ...}``: mean cross-entropy over the valid slots; zero that still backpropagates
        when there is none.
    """
    if logits.dim() != 3 or logits.shape[:2] != target_ids.shape or target_ids.shape != valid.shape:
        raise ValueError(f"keyword_mask_loss: expected logits (B, K, V), target_ids and valid (B, K), got "
                         f"{tuple(logits.shape)}, {tuple(target_ids.shape)}, {tuple(valid.shape)}")
    b, k, v = logits.shape
    sel = valid.to(logits.dtype).reshape(b * k)  # (B*K,)
    target = torch.where(valid.to(torch.bool), target_ids.long(), 0).reshape(b * k)  # padding slots -> id 0
    ce = F.cross_entropy(logits.reshape(b * k, v), target, reduction="none")  # (B*K,)
    return {"keyword": (ce * sel).sum() / sel.sum().clamp(min=1.0)}  # 0 with grad when no slot is valid


__all__ += ["nt_xent", "gather_with_grad", "clip_infonce_global", "weighted_multilabel_bce", "keyword_mask_loss",
            "text_view_infonce"]


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
