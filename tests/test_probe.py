"""Linear probe on synthetic data: separable classes are learnt, random labels stay at chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.probe import linear_probe, majority_chance


def _blobs(rng: np.random.Generator, n: int, num_classes: int = 3, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    centers = 10.0 * np.eye(num_classes, dim)  # (C, D) well-separated class means
    y = rng.integers(0, num_classes, n)
    return centers[y] + rng.normal(size=(n, dim)), y


def test_separable_data_is_learnt_and_unknown_rows_dropped():
    rng = np.random.default_rng(0)
    xtr, ytr = _blobs(rng, 300)
    xte, yte = _blobs(rng, 200)
    ytr[:7] = -1
    yte[:5] = -1
    m = linear_probe(torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr), xte, yte)
    assert m["accuracy"] > 0.99 and m["macro_f1"] > 0.99
    assert (m["n_train"], m["n_test"], m["n_train_dropped"], m["n_test_dropped"]) == (293, 195, 7, 5)
    assert m["num_classes"] == 3 and m["chance_uniform"] == pytest.approx(1 / 3)
    assert 0.2 < m["chance_majority"] < 0.5


def test_random_labels_stay_near_chance():
    rng = np.random.default_rng(1)
    xtr, xte = rng.normal(size=(400, 8)), rng.normal(size=(1000, 8))
    ytr, yte = rng.integers(0, 4, 400), rng.integers(0, 4, 1000)
    m = linear_probe(xtr, ytr, xte, yte, C=0.1)
    assert abs(m["accuracy"] - 0.25) < 0.06
    assert m["chance_uniform"] == 0.25


def test_majority_chance_by_hand():
    assert majority_chance(np.array([2, 2, 1, 0]), np.array([2, 1, 1, 2, 0])) == pytest.approx(2 / 5)


def test_bad_inputs_raise():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"train_y must be \(4,\)"):
        linear_probe(x, np.zeros(3, int), x, np.zeros(4, int))
    with pytest.raises(ValueError, match=">= 2 known classes"):
        linear_probe(x, np.array([1, 1, -1, 1]), x, np.zeros(4, int))
    with pytest.raises(ValueError, match="-3"):
        linear_probe(x, np.array([0, 1, -3, 1]), x, np.zeros(4, int))
    with pytest.raises(ValueError, match="test_x has 3"):
        linear_probe(x, np.array([0, 1, 0, 1]), np.zeros((4, 3)), np.zeros(4, int))
