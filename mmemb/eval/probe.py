"""Linear probe: a multinomial logistic regression on frozen, standardised embeddings.

Labels are integers; ``-1`` marks an unknown label and such rows are dropped (and counted).
The scaler and the classifier are fitted on the training rows only.
"""

from __future__ import annotations

import numpy as np

from .metrics import _np

__all__ = ["linear_probe", "majority_chance"]


def _rows(x, y, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Features ``(n, D)`` and labels ``(n,)`` of the known-label rows, and the number dropped."""
    x, y = _np(x).astype(np.float64), _np(y)
    if x.ndim != 2:
        raise ValueError(f"{split}_x must be (N, D), got shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{split}_y must be ({x.shape[0]},) to match {split}_x, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
        raise ValueError(f"{split}_y must hold integer labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y < -1).any():
        raise ValueError(f"{split}_y labels must be >= 0 or -1 (unknown), got {int(y.min())}")
    known = y >= 0
    return x[known], y[known], int((~known).sum())


def majority_chance(train_y: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent training class (smallest label on ties)."""
    if test_y.size == 0 or train_y.size == 0:
        return float("nan")
    labels, counts = np.unique(train_y, return_counts=True)
    return float((test_y == labels[np.argmax(counts)]).mean())


def linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Fit a logistic regression (multinomial, lbfgs) on standardised ``train_x`` and score ``test_x``.

    Returns ``accuracy``, ``macro_f1`` (over the classes seen in the test labels or predictions),
    ``chance_majority`` (test accuracy of always predicting the majority training class),
    ``chance_uniform`` (``1 / num_classes``, classes = known labels of train and test),
    ``num_classes``, ``n_train``, ``n_test`` (rows kept) and ``n_train_dropped``,
    ``n_test_dropped`` (rows with label ``-1``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    xtr, ytr, drop_tr = _rows(train_x, train_y, "train")
    xte, yte, drop_te = _rows(test_x, test_y, "test")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train_x has {xtr.shape[1]} features but test_x has {xte.shape[1]}")
    if np.unique(ytr).size < 2:
        raise ValueError(f"need >= 2 known classes in train_y, got {np.unique(ytr).tolist()}")
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")

    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)  # multinomial for >2 classes
    clf.fit(scaler.transform(xtr), ytr)
    num_classes = int(np.unique(np.concatenate([ytr, yte])).size)
    out = {
        "n_train": float(ytr.size),
        "n_test": float(yte.size),
        "n_train_dropped": float(drop_tr),
        "n_test_dropped": float(drop_te),
        "num_classes": float(num_classes),
        "chance_majority": majority_chance(ytr, yte),
        "chance_uniform": 1.0 / num_classes,
    }
    if yte.size == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), **out}
    pred = clf.predict(scaler.transform(xte))
    accuracy = float((pred == yte).mean())
    macro_f1 = float(f1_score(yte, pred, average="macro", zero_division=0))
    return {"accuracy": accuracy, "macro_f1": macro_f1, **out}
