"""Weights of positive labels: smoothed IDF per label (:func:`label_idf`) and per-sample weights
from IDF, clicks and freshness (:func:`label_weights`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .vocabulary import check_label_ids as _check_ids

__all__ = ["label_idf", "label_weights"]


def label_idf(label_id_lists: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    """Smoothed inverse document frequency per label id: ``idf[l] = ln((1 + N) / (1 + df[l])) + 1``.

    N is the number of samples (lists, empty ones included), df[l] the number of samples whose list
    contains l (repeats within a sample count once). Rarer labels weigh more; a label on every sample
    gets 1, an unseen one ``ln(1 + N) + 1``. Returns float64 of shape ``(num_labels,)``.
    """
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    df = np.zeros(num_labels, dtype=np.int64)
    for k, ids in enumerate(label_id_lists):
        unique = set(int(i) for i in ids)
        _check_ids(list(unique), num_labels, f"label_id_lists[{k}]")
        df[list(unique)] += 1
    n = len(label_id_lists)
    return np.log((1.0 + n) / (1.0 + df)) + 1.0


def label_weights(
    label_ids: Sequence[int],
    idf: np.ndarray,
    clicks: Sequence[float] | None = None,
    publish_time: float | None = None,
    now: float | None = None,
    half_life_days: float | None = None,
) -> np.ndarray:
    """Weight of each positive label of one sample (aligned with ``label_ids``), float32.

    ``m[k] = idf[label_ids[k]] * (1 + ln(1 + clicks[k]))`` (the click factor only when ``clicks`` is
    given, for queries), then ``w = f * m / mean(m)``: the sample's weights have mean ``f`` over its
    positives. ``f`` is the freshness ``0.5 ** (age_days / half_life_days)`` with
    ``age_days = max(0, now - publish_time) / 86400`` when ``half_life_days`` is set and
    ``publish_time`` is known (``now`` is then required), else 1; so without freshness the mean is 1,
    and a sample one half-life old weighs half as much in total.
    """
    idf = np.asarray(idf, dtype=np.float64)
    ids = [int(i) for i in label_ids]
    if not ids:
        return np.zeros(0, dtype=np.float32)
    _check_ids(ids, len(idf), "label_weights")
    m = idf[ids]
    if clicks is not None:
        c = np.asarray(clicks, dtype=np.float64)
        if c.shape != (len(ids),):
            raise ValueError(f"label_weights: {len(ids)} labels but clicks has shape {c.shape}")
        if (c < 0).any() or not np.isfinite(c).all():
            raise ValueError(f"label_weights: clicks must be finite and >= 0, got {c.tolist()}")
        m = m * (1.0 + np.log1p(c))
    w = m / m.mean()
    if half_life_days is not None and publish_time is not None:
        if half_life_days <= 0:
            raise ValueError(f"label_weights: half_life_days must be > 0, got {half_life_days}")
        if now is None:
            raise ValueError("label_weights: now (unix seconds) is required with half_life_days and publish_time")
        age_days = max(0.0, float(now) - float(publish_time)) / 86400.0
        w = w * 0.5 ** (age_days / half_life_days)
    return w.astype(np.float32)
