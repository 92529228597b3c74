"""Weights of positive labels: smoothed IDF per label, the mass of each positive (IDF x clicks x
freshness) and the three ways of turning masses into the loss weights of a batch.

For sample i and one of its positive labels j (hashtags, or queries with their clicks):

* mass ``m_ij = idf_j * c_ij * f_i`` (:func:`label_weights`) with ``idf_j`` from :func:`label_idf`,
  the click factor ``c_ij = 1 + ln(1 + clicks_ij)`` (queries; 1 for hashtags) and the freshness
  ``f_i = 0.5 ** (age_i / half_life)`` (:func:`freshness`; 1 when off or the age is unknown);
* the batch weight ``w_ij`` (:func:`normalize_weights`), by :data:`LabelWeighting`:

  - ``"softmax"``: ``w_ij = m_ij / sum_k m_ik`` over the sample's positives k: a target distribution
    (sums to 1) for softmax cross-entropy. A per-sample factor (the freshness) cancels here.
  - ``"bce_global"``: ``w_ij = m_ij / M`` with ``M`` the mean of ``m`` over every (sample, label)
    positive of the train split (:func:`mean_positive_mass`, computed with the vocabularies): for
    binary cross-entropy, so rarer labels, more clicks and fresher videos weigh more across samples,
    and the average positive weighs 1.
  - ``"uniform"``: ``w_ij = 1`` (the ablation baseline).

  Negatives weigh 0 in every case.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence, get_args

import numpy as np
import torch

from .vocabulary import check_label_ids as _check_ids

__all__ = [
    "LabelWeighting",
    "LABEL_WEIGHTINGS",
    "label_idf",
    "freshness",
    "label_weights",
    "mean_positive_mass",
    "normalize_weights",
]

LabelWeighting = Literal["softmax", "bce_global", "uniform"]
LABEL_WEIGHTINGS: tuple[str, ...] = get_args(LabelWeighting)


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


def freshness(publish_time: float | None, now: float | None, half_life_days: float | None) -> float:
    """``0.5 ** (age_days / half_life_days)`` with ``age_days = max(0, now - publish_time) / 86400``;
    1 when ``half_life_days`` is ``None`` or the publish time is unknown (``now`` is then not needed).
    A video published after ``now`` (clock skew) gets 1, not a boost."""
    if half_life_days is None or publish_time is None:
        return 1.0
    if half_life_days <= 0:
        raise ValueError(f"freshness: half_life_days must be > 0, got {half_life_days}")
    if now is None:
        raise ValueError("freshness: now (unix seconds) is required with half_life_days and publish_time")
    age_days = max(0.0, float(now) - float(publish_time)) / 86400.0
    return float(0.5 ** (age_days / half_life_days))


def label_weights(
    label_ids: Sequence[int],
    idf: np.ndarray,
    clicks: Sequence[float] | None = None,
    publish_time: float | None = None,
    now: float | None = None,
    half_life_days: float | None = None,
) -> np.ndarray:
    """Mass of each positive label of one sample (aligned with ``label_ids``), float32, unnormalised.

    ``m[k] = idf[label_ids[k]] * (1 + ln(1 + clicks[k])) * f`` (the click factor only when ``clicks``
    is given, for queries; ``f`` = :func:`freshness`). :func:`normalize_weights` turns the masses of a
    batch into loss weights.
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
    m = m * freshness(publish_time, now, half_life_days)
    return m.astype(np.float32)


def mean_positive_mass(masses: Iterable[np.ndarray]) -> float:
    """``M``: the mean mass over every (sample, label) positive (``masses``: one array per sample, as
    :func:`label_weights` returns them); 1 when there is no positive at all (nothing to weigh)."""
    total, count = 0.0, 0
    for m in masses:
        m = np.asarray(m, dtype=np.float64)
        total += float(m.sum())
        count += int(m.size)
    if count == 0 or total <= 0:
        return 1.0
    return total / count


def normalize_weights(
    masses: torch.Tensor, targets: torch.Tensor, weighting: LabelWeighting, mean_mass: float = 1.0
) -> torch.Tensor:
    """Loss weights ``(B, N)`` of a batch from its masses ``(B, N)`` (0 on negatives) and 0/1
    ``targets`` ``(B, N)``, by ``weighting`` (see the module docstring):

    * ``"softmax"``: ``masses / masses.sum(-1)``; a row without positives stays 0;
    * ``"bce_global"``: ``masses / mean_mass`` (``mean_mass``: :func:`mean_positive_mass` of the train split);
    * ``"uniform"``: 1 on every positive.
    """
    if masses.shape != targets.shape or masses.dim() != 2:
        raise ValueError(f"normalize_weights: masses and targets must both be (B, N), got "
                         f"{tuple(masses.shape)} and {tuple(targets.shape)}")
    positive = (targets > 0).to(masses.dtype)  # (B, N)
    masses = masses * positive
    if weighting == "softmax":
        total = masses.sum(dim=-1, keepdim=True)  # (B, 1)
        return masses / torch.where(total > 0, total, torch.ones_like(total))
    if weighting == "bce_global":
        if not mean_mass > 0:
            raise ValueError(f"normalize_weights: mean_mass must be > 0, got {mean_mass}")
        return masses / float(mean_mass)
    if weighting == "uniform":
        return positive
    raise ValueError(f"normalize_weights: weighting must be one of {LABEL_WEIGHTINGS}, got {weighting!r}")
