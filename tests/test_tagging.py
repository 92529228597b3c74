"""Hashtag recommendation metrics against hand-computed values, ties and empty relevant sets included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.tagging import average_precision, label_popularity_scores, pessimistic_order, tagging_metrics

SCORES = np.array([
    [0.9, 0.5, 0.5, 0.1],  # label 2 (irrelevant) tied with label 1 (relevant) -> ranked first
    [0.2, 0.8, 0.4, 0.6],  # relevant label 1 on top
    [0.1, 0.2, 0.3, 0.4],  # no relevant label -> excluded
    [0.3, 0.3, 0.3, 0.3],  # constant: both relevant labels last
])
TARGETS = np.array([
    [0, 1, 0, 1],  # ranked relevance [0, 0, 1, 1]: AP = (1/3 + 2/4) / 2 = 5/12
    [0, 1, 0, 0],  # ranked relevance [1, 0, 0, 0]: AP = 1
    [0, 0, 0, 0],
    [1, 1, 0, 0],  # ranked relevance [0, 0, 1, 1]: AP = 5/12
])


def test_pessimistic_order_by_hand():
    np.testing.assert_array_equal(
        pessimistic_order(SCORES, TARGETS), [[0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]]
    )
    ap = average_precision(pessimistic_order(SCORES, TARGETS))
    np.testing.assert_allclose(ap[[0, 1, 3]], [5 / 12, 1.0, 5 / 12])
    assert np.isnan(ap[2])


def test_metrics_by_hand_with_ties_and_excluded_sample():
    m = tagging_metrics(SCORES, TARGETS, ks=(1, 2, 5))
    expected = {
        "p1": 1 / 3, "r1": 1 / 3,
        "p2": (0 + 0.5 + 0) / 3, "r2": (0 + 1 + 0) / 3,
        "p5": (2 / 5 + 1 / 5 + 2 / 5) / 3, "r5": 1.0,  # k > L: all labels, denominator still k
        "map": (5 / 12 + 1 + 5 / 12) / 3,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value), key
    assert (m["n_samples"], m["n_excluded"]) == (3, 1)
    assert set(tagging_metrics(SCORES, TARGETS)) == {"p1", "r1", "p5", "r5", "map", "n_samples", "n_excluded"}


def test_label_order_and_torch_inputs_change_nothing():
    perm = [3, 1, 0, 2]
    base = tagging_metrics(SCORES, TARGETS, ks=(1, 2))
    assert tagging_metrics(SCORES[:, perm], TARGETS[:, perm], ks=(1, 2)) == base
    assert tagging_metrics(torch.tensor(SCORES), torch.tensor(TARGETS), ks=(1, 2)) == base


def test_perfect_scorer_and_constant_scorer():
    rng = np.random.default_rng(0)
    targets = rng.random((50, 10)) < 0.2
    targets[0] = False  # one sample without labels
    targets[1, :3] = True  # ensure at least one multi-label sample
    perfect = tagging_metrics(targets.astype(np.float32) + 0.01 * rng.random((50, 10)), targets, ks=(1, 10))
    assert perfect["p1"] == perfect["map"] == perfect["r10"] == 1.0
    assert perfect["n_excluded"] == (~targets.any(axis=1)).sum() >= 1

    const = tagging_metrics(np.zeros((50, 10)), targets, ks=(1, 10))
    kept = targets[targets.any(axis=1)]
    r = kept.sum(axis=1)  # relevant labels sit at ranks L - r + 1 .. L
    worst_ap = [np.mean([j / (10 - n + j) for j in range(1, n + 1)]) for n in r]
    assert const["map"] == pytest.approx(np.mean(worst_ap))
    assert const["p1"] == pytest.approx(np.mean(r == 10))
    assert const["r10"] == 1.0


def test_all_excluded_gives_nan():
    m = tagging_metrics(np.ones((2, 3)), np.zeros((2, 3)))
    assert np.isnan(m["p1"]) and np.isnan(m["map"])
    assert (m["n_samples"], m["n_excluded"]) == (0, 2)


def test_label_popularity_scores():
    train = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 1, 0]])
    pop = label_popularity_scores(train, 5)
    assert pop.shape == (5, 3)
    np.testing.assert_allclose(pop, np.tile([0.75, 0.25, 0.5], (5, 1)))
    m = tagging_metrics(label_popularity_scores(train, 2), np.array([[1, 0, 0], [0, 1, 0]]), ks=(1,))
    assert m["p1"] == 0.5 and m["map"] == pytest.approx((1 + 1 / 3) / 2)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        tagging_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        tagging_metrics(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))
    # an infinite score is as unrankable as a NaN; the error names the sample rows
    with pytest.raises(ValueError, match=r"0 NaN and 1 infinite value\(s\) in 1 row\(s\) \[1\]"):
        tagging_metrics(np.array([[0.2, 1.0], [np.inf, 0.0]]), np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="0"):
        tagging_metrics(np.zeros((2, 3)), np.ones((2, 3)), ks=(0,))
    with pytest.raises(ValueError, match="shape"):
        label_popularity_scores(np.zeros(3), 2)
