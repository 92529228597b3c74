"""Hashtag recommendation metrics (pure numpy; torch tensors are accepted and moved to numpy).

Conventions (consistent with :mod:`mmemb.eval.metrics`)
------------------------------------------------------
* ``scores`` is an ``(N, L)`` matrix (samples x labels), higher = more likely.
* ``targets`` is an ``(N, L)`` multi-hot matrix (nonzero = the label is relevant to the sample).
* **Ties are pessimistic**: labels are ranked by decreasing score and, among equal scores, every
  irrelevant label is placed before every relevant one. The ranking is deterministic and
  independent of label order, and a constant (collapsed) scorer gets the worst possible value.
* Scores must be finite: a NaN or infinite score raises ``ValueError`` naming its rows.
* Samples with no relevant label are **excluded** from every metric and counted in ``n_excluded``.

Metrics for a sample with relevant set ``R`` and ranked top-``k`` labels ``T_k``:

* ``P@k = |T_k ∩ R| / k`` (``k`` is the denominator even when ``k > L``)
* ``R@k = |T_k ∩ R| / |R|``
* ``AP = mean over r in R of P@rank(r)``; ``mAP`` is the mean AP over the kept samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import _np, check_finite

__all__ = [
    "pessimistic_order",
    "average_precision",
    "tagging_metrics",
    "label_popularity_scores",
]


def _check_pair(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s, t = _np(scores).astype(np.float64), _np(targets)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must be the same (N, L) shape")
    check_finite(s, "label scores (sample rows)")
    return s, t.astype(bool)


def pessimistic_order(scores, targets) -> np.ndarray:
    """``(N, L)`` relevance of the labels in ranked order (column 0 = top), pessimistic on ties.

    Sorted by decreasing score, then irrelevant (False) before relevant (True) among equal scores.
    """
    s, t = _check_pair(scores, targets)
    order = np.lexsort((t, -s), axis=-1)  # (N, L): primary key -s, secondary key t (False first)
    return np.take_along_axis(t, order, axis=1)


def average_precision(ranked_relevance: np.ndarray) -> np.ndarray:
    """``(N,)`` average precision of ranked relevance rows (see :func:`pessimistic_order`);
    ``nan`` for rows without a relevant label."""
    rel = np.asarray(ranked_relevance, dtype=bool)
    hits = np.cumsum(rel, axis=1)  # (N, L) relevant labels in the top 1..L
    positions = np.arange(1, rel.shape[1] + 1)  # (L,) 1-based ranks
    precision = hits / positions[None, :]  # (N, L) P@rank
    n_rel = rel.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * rel).sum(axis=1) / n_rel
    ap[n_rel == 0] = np.nan
    return ap


def tagging_metrics(scores, targets, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Precision@k, recall@k and mAP of a label score matrix against multi-hot targets.

    Returns ``{"p{k}", "r{k}" for k in ks, "map", "n_samples": kept, "n_excluded": samples
    without a relevant label}``; metric values are ``nan`` when every sample is excluded.
    Ties: see the module docstring.
    """
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"ks must be positive integers, got {k!r}")
    ranked = pessimistic_order(scores, targets)  # (N, L)
    keep = ranked.any(axis=1)
    ranked = ranked[keep]  # (n_kept, L)
    n_rel = ranked.sum(axis=1)  # (n_kept,)
    out: dict[str, float] = {}
    for k in ks:
        top = ranked[:, : int(k)].sum(axis=1)  # (n_kept,) relevant labels in the top k
        out[f"p{k}"] = float((top / k).mean()) if ranked.shape[0] else float("nan")
        out[f"r{k}"] = float((top / n_rel).mean()) if ranked.shape[0] else float("nan")
    out["map"] = float(average_precision(ranked).mean()) if ranked.shape[0] else float("nan")
    out["n_samples"] = float(keep.sum())
    out["n_excluded"] = float(keep.size - keep.sum())
    return out


def label_popularity_scores(train_targets, n: int) -> np.ndarray:
    """Popularity baseline: ``(n, L)`` scores where every row is the share of training samples
    carrying each label (``train_targets`` ``(N_train, L)`` multi-hot)."""
    t = _np(train_targets)
    if t.ndim != 2:
        raise ValueError(f"train_targets must be (N, L), got shape {t.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    freq = t.astype(bool).mean(axis=0) if t.shape[0] else np.zeros(t.shape[1])  # (L,)
    return np.repeat(freq[None, :].astype(np.float32), n, axis=0)  # (n, L)
