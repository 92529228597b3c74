"""Softmax cross-entropy against per-video target distributions (the ``softmax`` label weighting)."""

import math

import pytest
import torch

from mmemb.losses import soft_target_cross_entropy

# video 0: equal scores, weights 1 and 3 -> p = (1/4, 3/4), log q = (-ln 2, -ln 2): ce = ln 2
# video 1: scores (ln 3, 0) -> q = (3/4, 1/4); weight only on label 1 -> p = (0, 1): ce = -ln(1/4) = ln 4
# video 2: no positive -> dropped
LOGITS = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -1.0]])
WEIGHTS = torch.tensor([[1.0, 3.0], [0.0, 2.0], [0.0, 0.0]])


def test_soft_target_cross_entropy_by_hand():
    out = soft_target_cross_entropy(LOGITS, WEIGHTS, name="hashtag")
    assert set(out) == {"hashtag_ce"}
    assert out["hashtag_ce"].item() == pytest.approx((math.log(2) + math.log(4)) / 2, rel=1e-6)
    # the weights need not sum to 1: (1, 3) and (0.25, 0.75) are the same target
    same = soft_target_cross_entropy(LOGITS, WEIGHTS / WEIGHTS.sum(-1, keepdim=True).clamp(min=1e-12), name="q")
    assert same["q_ce"].item() == pytest.approx(out["hashtag_ce"].item(), rel=1e-6)


def test_row_mask_drops_rows():
    keep = torch.tensor([True, False, True])
    out = soft_target_cross_entropy(LOGITS, WEIGHTS, keep, name="hashtag")
    assert out["hashtag_ce"].item() == pytest.approx(math.log(2), rel=1e-6)


def test_no_kept_row_gives_zero_with_a_grad_path():
    logits = LOGITS.clone().requires_grad_(True)
    out = soft_target_cross_entropy(logits, WEIGHTS, torch.tensor([False, False, True]), name="query")
    assert out["query_ce"].item() == 0.0
    out["query_ce"].backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradient_matches_softmax_minus_target():
    logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    soft_target_cross_entropy(logits, torch.tensor([[1.0, 3.0]]))["hashtag_ce"].backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.5 - 0.25, 0.5 - 0.75]]))


def test_shape_checks():
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        soft_target_cross_entropy(LOGITS, WEIGHTS[:, :1])
    with pytest.raises(ValueError, match="row_mask"):
        soft_target_cross_entropy(LOGITS, WEIGHTS, torch.tensor([True]))
