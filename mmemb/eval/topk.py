"""Chunked exact top-K retrieval by inner product or cosine similarity (pure numpy).

:func:`chunked_topk` computes, for every query, the ``k`` gallery items of highest similarity
without ever holding more than ``chunk_size x gallery_chunk_size`` similarities: for each block of
queries it walks the gallery in chunks and merges the chunk's scores into a running top-k.

Conventions (as in :mod:`mmemb.eval.metrics`)
--------------------------------------------
* Inputs are ``(Q, D)`` queries and ``(G, D)`` gallery rows; torch tensors are accepted.
  Scores are computed in float32 (what retrieval indexes use).
* **Deterministic ties**: items of equal score are ordered by gallery index, lower first. The
  result therefore equals a stable sort of each full similarity row by descending score,
  ``np.argsort(-sim, axis=1, kind="stable")[:, :k]``, independent of the chunk sizes.
* Non-finite inputs (``nan``/``inf``) are rejected: their scores have no order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .metrics import check_finite

__all__ = ["chunked_topk", "topk_peak_bytes", "full_topk"]

Metric = Literal["ip", "cosine"]
METRICS: tuple[str, ...] = ("ip", "cosine")


def _as_float32(x, name: str) -> np.ndarray:
    """``(N, D)`` C-contiguous float32 numpy copy/view of an array or torch tensor."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {x.shape}")
    check_finite(x, f"{name} (rows)")
    return x


def _normalise(x: np.ndarray) -> np.ndarray:
    """Unit-norm rows (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _check_args(num_queries: int, num_gallery: int, k: int, chunk_size: int, gallery_chunk_size: int) -> None:
    if num_gallery < 1:
        raise ValueError("gallery is empty: top-k needs at least one gallery item")
    if not 1 <= k <= num_gallery:
        raise ValueError(f"k={k} must be between 1 and the gallery size {num_gallery}")
    if chunk_size < 1 or gallery_chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} and gallery_chunk_size={gallery_chunk_size} must be >= 1")


def _select_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``(c, m)`` scores, ``m > k``: ``(c, k)`` scores and
    column positions, in ascending column order. Among scores equal to the k-th best, the lower
    columns are kept."""
    c, m = scores.shape
    kth = np.partition(scores, m - k, axis=1)[:, m - k]  # (c,) k-th largest score per row
    keep = scores > kth[:, None]  # (c, m) surely kept
    tied = scores == kth[:, None]  # (c, m) kept while there is room, lowest column first
    room = k - keep.sum(axis=1)  # (c,) >= 1
    crowded = np.flatnonzero(tied.sum(axis=1) > room)  # rows with more ties than room (rare)
    if crowded.size:
        first = np.cumsum(tied[crowded], axis=1, dtype=np.int32) <= room[crowded, None]  # (r, m)
        tied[crowded] &= first
    keep |= tied  # exactly k per row
    cols = np.nonzero(keep)[1].reshape(c, k)  # row-major: ascending columns within each row
    return np.take_along_axis(scores, cols, axis=1), cols


def _chunk_candidates(sims: np.ndarray, best_s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The entries of a ``(c, g)`` similarity chunk that can still enter the running top-k:
    ``(c, w)`` scores and chunk columns, ascending columns, padded with ``-inf`` (column ``g``).

    Once the running top-k is full, only scores *strictly* above its worst one matter: an equal
    score has a higher gallery index than every running entry, so it loses the tie. When more than
    ``k`` entries of a row qualify, the chunk's own top-k is taken instead.
    """
    c, g = sims.shape
    if best_s.shape[1] == k:
        above = sims > best_s.min(axis=1)[:, None]  # (c, g)
        counts = above.sum(axis=1)  # (c,)
        width = int(counts.max()) if c else 0
        if width <= k:
            rows, cols = np.nonzero(above)  # row-major: ascending columns within each row
            slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)  # place within its row
            cand_s = np.full((c, width), -np.inf, dtype=np.float32)
            cand_c = np.full((c, width), g, dtype=np.int64)
            cand_s[rows, slot], cand_c[rows, slot] = sims[rows, cols], cols
            return cand_s, cand_c
    if g > k:
        return _select_topk(sims, k)
    return sims, np.broadcast_to(np.arange(g, dtype=np.int64), sims.shape)


def _topk_block(queries: np.ndarray, gallery: np.ndarray, k: int, gallery_chunk_size: int):
    """Top-k of one block of queries, walking the gallery in chunks; ``(c, k)`` scores and indices
    sorted by descending score, then ascending index."""
    c = queries.shape[0]
    best_s = np.empty((c, 0), dtype=np.float32)  # running top-k, columns in ascending index order
    best_i = np.empty((c, 0), dtype=np.int64)
    for start in range(0, gallery.shape[0], gallery_chunk_size):
        stop = min(start + gallery_chunk_size, gallery.shape[0])
        sims = queries @ gallery[start:stop].T  # (c, chunk) float32
        new_s, new_c = _chunk_candidates(sims, best_s, k)  # (c, <= k)
        if new_s.shape[1] == 0:
            continue
        # every running index is < start, so appending keeps the columns in ascending index order
        cand_s = np.concatenate([best_s, new_s], axis=1)  # (c, <= 2k)
        cand_i = np.concatenate([best_i, new_c + start], axis=1)  # (c, <= 2k) gallery indices
        if cand_s.shape[1] > k:
            best_s, cols = _select_topk(cand_s, k)
            best_i = np.take_along_axis(cand_i, cols, axis=1)
        else:
            best_s, best_i = cand_s, cand_i
    order = np.argsort(-best_s, axis=1, kind="stable")  # (c, k) stable: equal scores keep index order
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def chunked_topk(
    queries,
    gallery,
    k: int,
    chunk_size: int = 1024,
    gallery_chunk_size: int = 16384,
    metric: Metric = "ip",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` gallery items of every query by inner product (or cosine similarity).

    Args:
        queries: ``(Q, D)`` array or tensor.
        gallery: ``(G, D)`` array or tensor.
        k: results per query, ``1 <= k <= G``.
        chunk_size: queries per block.
        gallery_chunk_size: gallery rows per block; at most ``chunk_size x gallery_chunk_size``
            similarities exist at once (see :func:`topk_peak_bytes`).
        metric: ``"ip"`` (inner product) or ``"cosine"`` (inner product of unit-normalised rows).

    Returns:
        ``(scores, indices)``: ``(Q, k)`` float32 and ``(Q, k)`` int64, each row sorted by
        descending score, ties by ascending gallery index (see the module docstring).
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    q, g = _as_float32(queries, "queries"), _as_float32(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the gallery has {g.shape[1]}")
    _check_args(q.shape[0], g.shape[0], k, chunk_size, gallery_chunk_size)
    if metric == "cosine":
        q, g = _normalise(q), _normalise(g)
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], chunk_size):
        stop = min(start + chunk_size, q.shape[0])
        scores[start:stop], indices[start:stop] = _topk_block(q[start:stop], g, k, gallery_chunk_size)
    return scores, indices


def full_topk(queries, gallery, k: int, metric: Metric = "ip") -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k from the full ``(Q, G)`` similarity matrix (stable argsort); small inputs only."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    q, g = _as_float32(queries, "queries"), _as_float32(gallery, "gallery")
    _check_args(q.shape[0], g.shape[0], k, 1, 1)
    if metric == "cosine":
        q, g = _normalise(q), _normalise(g)
    sim = q @ g.T  # (Q, G)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (Q, k)
    return np.take_along_axis(sim, order, axis=1), order.astype(np.int64)


def topk_peak_bytes(
    num_queries: int,
    num_gallery: int,
    dim: int,
    k: int,
    chunk_size: int = 1024,
    gallery_chunk_size: int = 16384,
    metric: Metric = "ip",
) -> int:
    """Estimated peak extra memory (bytes) of :func:`chunked_topk` beyond its float32 inputs.

    With ``c = min(chunk_size, Q)`` and ``g = min(gallery_chunk_size, G)`` it counts the outputs
    (``Q x k`` float32 + int64), the normalised copies for ``"cosine"``, and the worst case of one
    block: per similarity (``c x g``) the float32 score, its partition copy, three boolean masks and
    an int32 tie counter (15 bytes); per kept entry (``c x k``) the two int64 ``nonzero`` outputs,
    the selected score and index, the ``c x 2k`` merge candidates and their selection, and the
    running top-k (88 bytes). An input that is not C-contiguous float32 adds a float32 copy of
    itself, not counted here.
    """
    _check_args(num_queries, num_gallery, k, chunk_size, gallery_chunk_size)
    c, g = min(chunk_size, max(num_queries, 1)), min(gallery_chunk_size, num_gallery)
    outputs = num_queries * k * (4 + 8)
    copies = (num_queries + num_gallery) * dim * 4 if metric == "cosine" else 0
    block = c * g * 15 + c * k * 88
    return int(outputs + copies + block)
