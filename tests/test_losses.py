"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mmemb.losses import DEFAULT_WEIGHTS, clip_infonce, total_loss


def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(x) for x in logits_row))


def test_clip_infonce_2x2_by_hand():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # logits = 2 * video @ text.T = [[1.2, 0.0], [1.6, 2.0]]
    terms = clip_infonce(video, text, 2.0)
    v2t = (_ce([1.2, 0.0], 0) + _ce([1.6, 2.0], 1)) / 2  # rows: each video over the texts
    t2v = (_ce([1.2, 1.6], 0) + _ce([0.0, 2.0], 1)) / 2  # columns: each text over the videos
    assert terms["clip_v2t"].item() == pytest.approx(v2t, rel=1e-6)
    assert terms["clip_t2v"].item() == pytest.approx(t2v, rel=1e-6)
    assert total_loss(terms, DEFAULT_WEIGHTS).item() == pytest.approx((v2t + t2v) / 2, rel=1e-6)


def test_clip_infonce_3x3_with_masks_by_hand():
    video = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(3.0)
    # sample 1 has no video: only pairs 0 and 2 remain, and text 1 is no negative
    # logits over kept pairs = 3 * [[v0.t0, v0.t2], [v2.t0, v2.t2]] = [[3.0, 0.0], [2.4, 1.8]]
    terms = clip_infonce(video, text, scale, video_mask=torch.tensor([True, False, True]))
    v2t = (_ce([3.0, 0.0], 0) + _ce([2.4, 1.8], 1)) / 2
    t2v = (_ce([3.0, 2.4], 0) + _ce([0.0, 1.8], 1)) / 2
    assert terms["clip_v2t"].item() == pytest.approx(v2t, rel=1e-6)
    assert terms["clip_t2v"].item() == pytest.approx(t2v, rel=1e-6)
    # the same through text_mask, and with the masked sample's content changed
    text2 = text.clone()
    text2[1] = torch.tensor([1.0, 0.0])
    other = clip_infonce(video, text2, scale, text_mask=torch.tensor([True, False, True]))
    assert other["clip_v2t"].item() == pytest.approx(v2t, rel=1e-6)
    # unmasked, the third sample's text is a hard negative: loss differs
    full = clip_infonce(video, text, scale)
    assert full["clip_v2t"].item() != pytest.approx(v2t, rel=1e-3)


def test_clip_infonce_without_pairs_is_zero_and_backpropagates():
    video = torch.randn(3, 4, requires_grad=True)
    text = torch.randn(3, 4, requires_grad=True)
    terms = clip_infonce(video, text, 10.0, video_mask=torch.tensor([True, False, False]),
                         text_mask=torch.tensor([False, True, True]))
    loss = total_loss(terms, DEFAULT_WEIGHTS)
    assert loss.item() == 0.0
    loss.backward()
    assert video.grad is not None and torch.all(video.grad == 0)


def test_clip_infonce_logit_scale_gets_gradient():
    scale = torch.tensor(5.0, requires_grad=True)
    terms = clip_infonce(torch.eye(3), torch.eye(3), scale)
    total_loss(terms, DEFAULT_WEIGHTS).backward()
    assert scale.grad is not None and scale.grad.item() < 0  # perfect pairs: a sharper scale lowers the loss


def test_total_loss_weights_and_errors():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}
    assert total_loss(terms, {"a": 0.5, "b": 2.0}).item() == pytest.approx(7.0)
    assert total_loss(terms, {"a": 0.0, "b": 1.0}).item() == pytest.approx(3.0)
    with pytest.raises(KeyError, match="no weight for \\['b'\\]"):
        total_loss(terms, {"a": 1.0})
    with pytest.raises(KeyError, match="no term for \\['c'\\]"):
        total_loss(terms, {"a": 1.0, "b": 1.0, "c": 1.0})
