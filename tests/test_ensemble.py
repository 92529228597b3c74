"""EBR-style ensembles: self-ensembles change nothing, inner products are weighted mean cosines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.ensemble import ensemble


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.3, 2.0), (5.0, 0.0)])
def test_self_ensemble_gives_the_same_scores_and_ranking(weights):
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(6, 5)), rng.normal(size=(20, 5))
    sim = _cos(q, g)  # (6, 20) the model alone
    ens = ensemble([q, q], weights) @ ensemble([g, torch.tensor(g)], weights).T
    np.testing.assert_allclose(ens, sim, atol=1e-6)
    np.testing.assert_array_equal(np.argsort(-ens, axis=1), np.argsort(-sim, axis=1))


def test_inner_product_is_weighted_mean_of_cosines_by_hand():
    a1, a2 = np.array([[1.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    # model 1: cos(row0, row1) = 3/5; model 2: cos = 0; weights 3 and 1 -> (3 * 0.6 + 1 * 0) / 4
    e = ensemble([a1, a2], [3.0, 1.0])
    assert e.shape == (2, 5) and e.dtype == np.float32
    assert float(e[0] @ e[1]) == pytest.approx(0.45)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(e[0], [np.sqrt(3) / 2, 0, 0, 0.5, 0], rtol=1e-6)


def test_missing_modality_rows_stay_zero():
    a1, a2 = np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 0.0]])
    e = ensemble([a1, a2], [1.0, 1.0])
    np.testing.assert_array_equal(e[1], 0.0)
    np.testing.assert_allclose(e[0], [np.sqrt(0.5), 0, 0, 0])  # only model 1 contributes: norm^2 = 1/2


def test_bad_inputs_raise():
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match="2 embedding matrices but 1 weights"):
        ensemble([x, x], [1.0])
    with pytest.raises(ValueError, match=r"-1\.0"):
        ensemble([x, x], [1.0, -1.0])
    with pytest.raises(ValueError, match="not all zero"):
        ensemble([x], [0.0])
    with pytest.raises(ValueError, match=r"embeddings\[1\] must be \(3, D\), got shape \(4, 2\)"):
        ensemble([x, np.ones((4, 2))], [1.0, 1.0])
    with pytest.raises(ValueError, match="at least one"):
        ensemble([], [])
