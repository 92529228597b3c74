"""Retrieval metrics against hand-computed values, ties and empty relevant sets included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.metrics import (
    category_chance_recall_at_1,
    chance_recall_at_k,
    category_relevance,
    first_relevant_rank,
    identity_relevance,
    instance_chance_recall_at_k,
    median_rank,
    recall_at_k,
    retrieval_metrics,
)

SIM = np.array([
    [0.9, 0.1, 0.3, 0.2],  # query 0: item 0 first            -> rank 1
    [0.5, 0.2, 0.4, 0.1],  # query 1: item 1 after 0, 2       -> rank 3
    [0.1, 0.2, 0.3, 0.4],  # query 2: item 2 after 3          -> rank 2
    [0.4, 0.3, 0.2, 0.1],  # query 3: item 3 last             -> rank 4
])


def test_identity_ranks_recall_and_median_by_hand():
    rel = identity_relevance(4)
    np.testing.assert_array_equal(first_relevant_rank(SIM, rel), [1, 3, 2, 4])
    r = recall_at_k(SIM, rel, ks=(1, 2, 3))
    assert (r["r1"], r["r2"], r["r3"]) == (0.25, 0.5, 0.75)
    assert (r["n_queries"], r["n_excluded"]) == (4, 0)
    assert median_rank(SIM, rel) == 2.5


def test_ties_are_pessimistic_and_order_free():
    sim = np.array([[0.5, 0.5, 0.1],    # relevant item 0 tied with irrelevant item 1 -> rank 2
                    [0.7, 0.7, 0.7],    # everything tied, relevant item 2 -> rank 3
                    [0.2, 0.9, 0.9]])   # relevant items 1 and 2 tied with each other -> rank 1
    rel = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(first_relevant_rank(sim, rel), [2, 3, 1])
    perm = [2, 0, 1]  # reordering the gallery changes nothing
    np.testing.assert_array_equal(first_relevant_rank(sim[:, perm], rel[:, perm]), [2, 3, 1])
    assert recall_at_k(np.zeros((3, 3)), identity_relevance(3), ks=(1,))["r1"] == 0.0  # collapsed model


def test_category_relevance_and_excluded_queries():
    q = [0, 1, -1, 2]  # query 2 unknown; category 2 absent from the gallery
    g = [0, 1, 1, -1]
    rel = category_relevance(q, g)
    np.testing.assert_array_equal(rel, [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    sim = np.array([[0.1, 0.9, 0.8, 0.0],   # query 0 (cat 0): item 0 after 1, 2 -> rank 3
                    [0.9, 0.1, 0.8, 0.0],   # query 1 (cat 1): item 2 after 0   -> rank 2
                    [1.0, 0.0, 0.0, 0.0],
                    [1.0, 0.0, 0.0, 0.0]])
    ranks = first_relevant_rank(sim, rel)
    np.testing.assert_array_equal(ranks[:2], [3, 2])
    assert np.isnan(ranks[2]) and np.isnan(ranks[3])
    r = recall_at_k(sim, rel, ks=(1, 2))
    assert (r["r1"], r["r2"], r["n_queries"], r["n_excluded"]) == (0.0, 0.5, 2, 2)
    assert median_rank(sim, rel) == 2.5
    none = recall_at_k(sim, np.zeros((4, 4), bool), ks=(1,))
    assert np.isnan(none["r1"]) and none["n_excluded"] == 4


def test_torch_inputs_are_accepted():
    r = recall_at_k(torch.tensor(SIM), torch.from_numpy(identity_relevance(4)), ks=(2,))
    assert r["r2"] == 0.5


def test_chance_by_hand():
    assert category_chance_recall_at_1([0, 0, 1, 2]) == pytest.approx(0.5**2 + 0.25**2 + 0.25**2)
    # unknown gallery items dilute the shares; unknown queries are excluded
    assert category_chance_recall_at_1([0, 1, -1], [0, 0, 1, -1]) == pytest.approx((0.5 + 0.25) / 2)
    assert category_chance_recall_at_1([0, 3], [0, 1]) == pytest.approx(0.5)  # query 1 has no match: excluded
    assert instance_chance_recall_at_k(10, 5) == 0.5
    assert instance_chance_recall_at_k(3, 5) == 1.0
    # 2 relevant among 4, top 2: misses only when both top slots are the 2 irrelevant items (1 of 6 pairs)
    assert chance_recall_at_k([2], 4, 2) == pytest.approx(5 / 6)
    assert chance_recall_at_k([1, 3, 0], 4, 1) == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert chance_recall_at_k([1], 4, 9) == 1.0


def test_chance_matches_random_rankings():
    rng = np.random.default_rng(0)
    cats = np.array([0] * 6 + [1] * 3 + [2] * 1)
    rel = category_relevance(cats)
    runs = [recall_at_k(rng.random((10, 10)), rel, ks=(1, 3)) for _ in range(3000)]
    assert np.mean([r["r1"] for r in runs]) == pytest.approx(category_chance_recall_at_1(cats), abs=0.01)  # 0.46
    assert np.mean([r["r3"] for r in runs]) == pytest.approx(chance_recall_at_k(rel.sum(1), 10, 3), abs=0.01)


def test_retrieval_metrics_masks_and_perfect_embeddings():
    emb = np.eye(5, dtype=np.float32)  # perfect pairs: video i == text i
    cats = np.array([0, 0, 1, 1, -1])
    m = retrieval_metrics(emb, emb, cats, ks=(1, 5))
    assert m["t2v_r1_instance"] == 1.0 and m["v2t_r1_instance"] == 1.0 and m["t2v_medr_instance"] == 1.0
    assert m["t2v_r1_category"] == 1.0 and m["chance_r1_instance"] == pytest.approx(0.2)
    assert m["t2v_r5_instance"] == 1.0 and m["t2v_r5_instance_chance"] == 1.0
    assert m["t2v_r1_category_chance"] == pytest.approx(m["chance_r1_category"])
    assert m["chance_r1_category"] == pytest.approx((0.4 * 2 + 0.4 * 2) / 4)
    # video of sample 0 missing: text 0 has no instance match (excluded) but still one category match
    video = emb.copy()
    video[0] = 0.0
    m = retrieval_metrics(video, emb, cats, video_mask=np.array([False, True, True, True, True]), ks=(1,))
    assert (m["n_video"], m["n_text"]) == (4, 5)
    assert m["t2v_r1_instance"] == 1.0  # queries 1..4 all hit; query 0 excluded, not a miss
    # text 0 (cat 0) vs gallery videos 1..4: all score 0, the relevant video 1 is tied with 3 others -> miss
    assert m["t2v_r1_category"] == pytest.approx(3 / 4)
    assert m["chance_r1_category"] == pytest.approx((0.25 + 0.25 + 0.5 + 0.5) / 4)


def test_retrieval_metrics_chunking_is_exact():
    rng = np.random.default_rng(1)
    video, text = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    cats = rng.integers(-1, 4, size=50)
    whole = retrieval_metrics(video, text, cats)
    chunked = retrieval_metrics(video, text, cats, chunk=7)
    assert whole == chunked


def test_nan_or_inf_scores_raise_naming_the_rows():
    """``sim >= nan`` is False: a NaN row used to rank its query first (recall 1 from a broken model)."""
    sim = np.array([[0.9, 0.1, 0.2], [np.nan, np.nan, np.nan], [0.1, 0.2, 0.8]])
    relevant = identity_relevance(3)
    for fn in (first_relevant_rank, recall_at_k, median_rank):
        with pytest.raises(ValueError, match=r"3 NaN and 0 infinite value\(s\) in 1 row\(s\) \[1\]"):
            fn(sim, relevant)
    sim[1] = [0.3, np.inf, 0.1]
    sim[2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"0 NaN and 2 infinite value\(s\) in 2 row\(s\) \[1, 2\]"):
        recall_at_k(sim, relevant)


def test_retrieval_metrics_names_the_samples_with_nan_embeddings():
    g = torch.Generator().manual_seed(0)
    video, text = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    video[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"video embeddings \(sample rows\) holds 1 NaN .* \[3\]"):
        retrieval_metrics(video, text, torch.zeros(5, dtype=torch.long))
    # a sample without video (masked out) is not ranked, so its placeholder row may hold anything
    m = retrieval_metrics(video, text, torch.zeros(5, dtype=torch.long),
                          video_mask=torch.tensor([True, True, True, False, True]))
    assert m["n_video"] == 4.0 and np.isfinite(m["t2v_r1_instance"])
    text[0] = float("inf")
    with pytest.raises(ValueError, match=r"text embeddings \(sample rows\) .* \[0\]"):
        retrieval_metrics(video, text, torch.zeros(5, dtype=torch.long),
                          video_mask=torch.tensor([True, True, True, False, True]))
