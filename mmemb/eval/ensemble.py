"""EBR-style embedding ensembles: concatenate weighted, L2-normalised embeddings.

For inputs ``x_i`` (``(N, D_i)``) and weights ``w_i >= 0`` the ensemble of a row is

    e = concat_i( sqrt(w_i) * x_i / |x_i| ) / sqrt(sum_i w_i)        # (sum_i D_i,)

so the inner product of two ensembles is ``sum_i w_i cos_i / sum_i w_i``: a weighted mean of the
per-model cosine similarities. All-zero rows (a missing modality) stay zero and contribute 0 to
that sum; ensembles of complete rows have unit norm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import _np

__all__ = ["ensemble"]


def _l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` ``(N, D)`` scaled to unit norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return x / np.maximum(norms, eps)


def ensemble(embeddings: Sequence, weights: Sequence[float]) -> np.ndarray:
    """``(N, sum D_i)`` float32 ensemble of ``embeddings`` (``(N, D_i)`` numpy/torch) with ``weights``."""
    if len(embeddings) == 0:
        raise ValueError("need at least one embedding matrix")
    if len(weights) != len(embeddings):
        raise ValueError(f"got {len(embeddings)} embedding matrices but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero, got {list(weights)}")
    arrays = [_np(e).astype(np.float64) for e in embeddings]
    n = arrays[0].shape[0] if arrays[0].ndim == 2 else None
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[0] != n:
            raise ValueError(f"embeddings[{i}] must be ({n}, D), got shape {a.shape}")
    parts = [np.sqrt(wi) * _l2_normalize(a) for wi, a in zip(w, arrays)]  # each (N, D_i)
    return (np.concatenate(parts, axis=1) / np.sqrt(w.sum())).astype(np.float32)  # (N, sum D_i)
