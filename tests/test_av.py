"""Audio-visual correspondence recall against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.av import av_correspondence, l2_normalize
from mmemb.eval.metrics import identity_relevance, recall_at_k

VIDEO = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
AUDIO = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
# cosine sim[audio i, video j]:  a0 [1, 0, .71] -> rank 1
#                                a1 [.71, .71, 1] -> v1 tied with v0 and below v2 -> rank 3
#                                a2 [0, 1, .71]   -> rank 2
# video->audio (transpose):      v0 rank 1, v1 [0, .71, 1] rank 2, v2 [.71, 1, .71] rank 3


def test_instance_recall_by_hand_with_ties():
    m = av_correspondence(VIDEO, AUDIO, ks=(1, 2))
    assert m["a2v_r1"] == pytest.approx(1 / 3) and m["v2a_r1"] == pytest.approx(1 / 3)
    assert m["a2v_r2"] == pytest.approx(2 / 3) and m["v2a_r2"] == pytest.approx(2 / 3)
    assert m["chance_r1"] == pytest.approx(1 / 3) and m["chance_r2"] == pytest.approx(2 / 3)
    assert m["n"] == 3 and not any(key.endswith("_clip") for key in m)


def test_same_clip_recall_by_hand():
    # clips: {0, 1} and {2}. a2v: a0 hits v0 (rank 1); a1's best clip item (.71) is below v2 (1);
    # a2's v2 (.71) is below v1 (1). v2a: v0 rank 1; v1's best (.71) below a2; v2's a2 (.71) below a1.
    m = av_correspondence(torch.tensor(VIDEO), torch.tensor(AUDIO), groups=["x", "x", "y"])
    assert m["a2v_r1_clip"] == pytest.approx(1 / 3) and m["v2a_r1_clip"] == pytest.approx(1 / 3)
    assert m["chance_r1_clip"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3) / 3)
    assert m["a2v_r1"] == pytest.approx(1 / 3)


def test_matches_metrics_module_and_is_scale_and_chunk_invariant():
    rng = np.random.default_rng(0)
    v, a = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    a[:20] = v[:20] + 0.1 * rng.normal(size=(20, 6))  # half the segments correspond
    sim = l2_normalize(a) @ l2_normalize(v).T  # (N, N) audio x video
    expected = recall_at_k(sim, identity_relevance(40), ks=(1, 5))
    m = av_correspondence(v, a, ks=(1, 5))
    assert m["a2v_r1"] == expected["r1"] and m["a2v_r5"] == expected["r5"]
    assert m["v2a_r1"] == recall_at_k(sim.T, identity_relevance(40), ks=(1,))["r1"]
    scaled = av_correspondence(3.0 * v, 0.5 * a, ks=(1, 5), chunk=7)
    assert scaled == pytest.approx(m)


def test_collapsed_model_scores_zero():
    m = av_correspondence(np.ones((5, 4)), np.ones((5, 4)), groups=[0, 0, 1, 1, 2])
    assert m["a2v_r1"] == m["v2a_r1"] == 0.0
    assert m["a2v_r1_clip"] == m["v2a_r1_clip"] == 0.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 4\)"):
        av_correspondence(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"groups must have shape \(3,\)"):
        av_correspondence(VIDEO, AUDIO, groups=[0, 1])
