"""Retrieval metrics (pure numpy; torch tensors are accepted and moved to numpy).

Conventions
-----------
* ``sim`` is a ``(Q, G)`` score matrix (queries x gallery), higher = more similar.
* ``relevant`` is a ``(Q, G)`` boolean matrix. Instance-level relevance is the identity
  (:func:`identity_relevance`); category-level relevance marks the gallery items of the query's
  category (:func:`category_relevance`, unknown categories ``-1`` are relevant to nothing).
* **Rank** of a query = 1-based position of its best-placed relevant item.
* **Ties are pessimistic**: an irrelevant item scoring *equal* to the best relevant one is placed
  before it, so ``rank = 1 + #{irrelevant g : sim[q, g] >= max_relevant_score}``. This is
  deterministic, independent of gallery order, and gives a constant (collapsed) scorer a recall of 0
  rather than a lucky one.
* **Scores must be finite**: ``sim >= nan`` is False, so a NaN score would place its query first
  (a perfect recall from a broken model), and ``inf`` scores have no meaningful order either. Every
  function here raises ``ValueError`` naming the offending rows (:func:`check_finite`) instead.
* Queries with no relevant item have no rank: they are **excluded** from recall and median rank
  and counted in ``n_excluded``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "identity_relevance",
    "category_relevance",
    "first_relevant_rank",
    "recall_at_k",
    "median_rank",
    "chance_recall_at_k",
    "category_chance_recall_at_1",
    "instance_chance_recall_at_k",
    "retrieval_metrics",
    "check_finite",
]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def check_finite(x: np.ndarray, name: str, row_ids: np.ndarray | None = None, max_shown: int = 10) -> None:
    """Raise ``ValueError`` when ``x`` (``(N, ...)``) holds a NaN or an infinity, naming its rows.

    ``row_ids``: ``(N,)`` ids to report instead of the row positions (e.g. the sample indices of the
    queries kept by a mask); at most ``max_shown`` are listed, then the count.
    """
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)) if bad.ndim > 1 else np.flatnonzero(bad)
    ids = rows if row_ids is None else np.asarray(row_ids)[rows]
    shown = ", ".join(str(int(i)) for i in ids[:max_shown]) + (", ..." if ids.size > max_shown else "")
    raise ValueError(f"{name} holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} infinite value(s) in "
                     f"{ids.size} row(s) [{shown}]: non-finite scores cannot be ranked (a NaN would rank first)")


def identity_relevance(num_queries: int, num_gallery: int | None = None) -> np.ndarray:
    """Instance-level relevance: query ``i`` is relevant to gallery item ``i`` only."""
    return np.eye(num_queries, num_queries if num_gallery is None else num_gallery, dtype=bool)


def category_relevance(query_categories, gallery_categories=None) -> np.ndarray:
    """Category-level relevance ``(Q, G)``: same category, unknown (< 0) relevant to nothing."""
    q = _np(query_categories).astype(np.int64)
    g = q if gallery_categories is None else _np(gallery_categories).astype(np.int64)
    return (q[:, None] == g[None, :]) & (q[:, None] >= 0) & (g[None, :] >= 0)


def first_relevant_rank(sim, relevant) -> np.ndarray:
    """``(Q,)`` float ranks (1 = top) of the best relevant item, pessimistic on ties; ``nan`` when
    the query has no relevant item. ``ValueError`` naming the query rows when ``sim`` is not finite."""
    sim, relevant = _np(sim).astype(np.float64), _np(relevant).astype(bool)
    if sim.shape != relevant.shape or sim.ndim != 2:
        raise ValueError(f"sim {sim.shape} and relevant {relevant.shape} must be the same (Q, G) shape")
    check_finite(sim, "sim (query rows)")
    best = np.where(relevant, sim, -np.inf).max(axis=1, initial=-np.inf)  # (Q,) best relevant score
    ahead = ((sim >= best[:, None]) & ~relevant).sum(axis=1)  # (Q,) irrelevant items placed before it
    ranks = 1.0 + ahead.astype(np.float64)
    ranks[~relevant.any(axis=1)] = np.nan
    return ranks


def _recall_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    valid = ranks[~np.isnan(ranks)]
    out = {f"r{k}": float((valid <= k).mean()) if valid.size else float("nan") for k in ks}
    out["n_queries"] = float(valid.size)
    out["n_excluded"] = float(ranks.size - valid.size)
    return out


def recall_at_k(sim, relevant, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Share of queries with a relevant item in the top ``k``, for each ``k``.

    Returns ``{"r1": ..., "r5": ..., "n_queries": kept, "n_excluded": without relevant items}``
    (recalls are ``nan`` when every query is excluded). Ties: see the module docstring.
    """
    return _recall_from_ranks(first_relevant_rank(sim, relevant), ks)


def median_rank(sim, relevant) -> float:
    """Median of :func:`first_relevant_rank` over the queries that have a relevant item."""
    ranks = first_relevant_rank(sim, relevant)
    valid = ranks[~np.isnan(ranks)]
    return float(np.median(valid)) if valid.size else float("nan")


def chance_recall_at_k(num_relevant, num_gallery: int, k: int) -> float:
    """Expected recall@k of a uniformly random ranking, averaged over the queries with >= 1 relevant item.

    A query with ``r`` relevant items among ``G`` misses with probability ``C(G - r, k) / C(G, k)``.
    """
    r = _np(num_relevant).astype(np.int64)
    r = r[r > 0]
    if r.size == 0 or num_gallery < 1:
        return float("nan")
    miss = np.ones(r.size)
    for i in range(min(k, num_gallery)):
        miss *= np.clip(num_gallery - r - i, 0, None) / (num_gallery - i)
    return float(np.mean(1.0 - miss))


def category_chance_recall_at_1(categories, gallery_categories=None) -> float:
    """Expected category-level recall@1 of a random ranking.

    A query of category ``c`` hits with probability ``p_c`` = share of ``c`` in the gallery
    (unknown items count in the gallery size but match nothing), averaged over the queries that
    :func:`recall_at_k` keeps (known category present in the gallery). With one list for both
    sides and no unknowns this is ``sum_c p_c**2``.
    """
    q = _np(categories).astype(np.int64)
    g = q if gallery_categories is None else _np(gallery_categories).astype(np.int64)
    labels, counts = np.unique(g[g >= 0], return_counts=True)
    per_category = dict(zip(labels.tolist(), counts.tolist()))
    num_relevant = [per_category.get(c, 0) if c >= 0 else 0 for c in q.tolist()]  # (Q,)
    return chance_recall_at_k(num_relevant, g.size, 1)


def instance_chance_recall_at_k(num_gallery: int, k: int) -> float:
    """Expected instance-level recall@k of a random ranking over ``num_gallery`` items: ``k / G``."""
    return min(k, num_gallery) / num_gallery if num_gallery else float("nan")


def _chunked_ranks(queries: np.ndarray, gallery: np.ndarray, relevance, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranks and relevant-item counts of every query, computing ``(chunk, G)`` similarities at a time."""
    ranks, counts = [], []
    for start in range(0, queries.shape[0], chunk):
        rows = np.arange(start, min(start + chunk, queries.shape[0]))
        rel = relevance(rows)  # (chunk, G)
        ranks.append(first_relevant_rank(queries[rows] @ gallery.T, rel))
        counts.append(rel.sum(axis=1))
    if not ranks:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(ranks), np.concatenate(counts)


def retrieval_metrics(
    video,
    text,
    categories,
    video_mask=None,
    text_mask=None,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
) -> dict[str, float]:
    """Text->video and video->text retrieval metrics of a set of paired embeddings.

    ``video``/``text``: ``(N, D)`` (pair ``i`` = row ``i``); ``categories``: ``(N,)`` ints, ``-1``
    unknown. Queries are the samples that have the query modality, the gallery the samples that
    have the other one (masks default to all True). Instance relevance = same sample; category
    relevance = same known category.

    Keys, for ``dir`` in t2v/v2t and ``level`` in instance/category:

    * ``{dir}_r{k}_{level}``: recall@k; ``{dir}_r{k}_{level}_chance``: its value under a random ranking
    * ``{dir}_medr_{level}``: median rank
    * ``chance_r1_category`` / ``chance_r1_instance``: the text->video chance recall@1 (short names)
    * ``n_video``, ``n_text``: gallery and query counts

    ``ValueError`` naming the samples when a kept embedding holds a NaN or an infinity.
    """
    video, text, cats = _np(video).astype(np.float32), _np(text).astype(np.float32), _np(categories).astype(np.int64)
    n = video.shape[0]
    vm = np.ones(n, bool) if video_mask is None else _np(video_mask).astype(bool)
    tm = np.ones(n, bool) if text_mask is None else _np(text_mask).astype(bool)
    vid_idx, txt_idx = np.flatnonzero(vm), np.flatnonzero(tm)
    check_finite(video[vid_idx], "video embeddings (sample rows)", vid_idx)
    check_finite(text[txt_idx], "text embeddings (sample rows)", txt_idx)
    out: dict[str, float] = {"n_video": float(vid_idx.size), "n_text": float(txt_idx.size)}
    directions = {"t2v": (text, txt_idx, video, vid_idx), "v2t": (video, vid_idx, text, txt_idx)}
    for name, (q_emb, q_idx, g_emb, g_idx) in directions.items():
        levels = {
            "instance": lambda rows, q_idx=q_idx, g_idx=g_idx: q_idx[rows, None] == g_idx[None, :],
            "category": lambda rows, q_idx=q_idx, g_idx=g_idx: category_relevance(cats[q_idx[rows]], cats[g_idx]),
        }
        for level, relevance in levels.items():
            ranks, counts = _chunked_ranks(q_emb[q_idx], g_emb[g_idx], relevance, chunk)
            recalls = _recall_from_ranks(ranks, ks)
            for k in ks:
                out[f"{name}_r{k}_{level}"] = recalls[f"r{k}"]
                out[f"{name}_r{k}_{level}_chance"] = chance_recall_at_k(counts, g_idx.size, k)
            valid = ranks[~np.isnan(ranks)]
            out[f"{name}_medr_{level}"] = float(np.median(valid)) if valid.size else float("nan")
    out["chance_r1_category"] = category_chance_recall_at_1(cats[txt_idx], cats[vid_idx])
    out["chance_r1_instance"] = instance_chance_recall_at_k(vid_idx.size, 1)
    return out
