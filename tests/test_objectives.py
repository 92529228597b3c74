"""Teacher objectives (nt_xent, clip_infonce_global, weighted_multilabel_bce, keyword_mask_loss)
against hand-computed values."""

from __future__ import annotations

import math
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from mmemb.losses import (
    clip_infonce,
    clip_infonce_global,
    gather_with_grad,
    keyword_mask_loss,
    nt_xent,
    weighted_multilabel_bce,
)


def _ce(logits_row: list[float], target: int) -> float:
    return -logits_row[target] + math.log(sum(math.exp(x) for x in logits_row))


def _softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))


# ----------------------------------------------------------------------------- nt_xent


def test_nt_xent_two_pairs_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.0, 2.0]])  # normalised inside: [0.6, 0.8], [0, 1]
    t = 0.5
    # views a0=z1[0], a1=z1[1], b0=[0.6,0.8], b1=[0,1]; cosines:
    # a0.a1=0, a0.b0=0.6, a0.b1=0, a1.b0=0.8, a1.b1=1, b0.b1=0.8
    # each anchor's row over the 3 other views, divided by t; the positive is its other view
    rows = [
        ([0.0, 0.6, 0.0], 1),  # a0 over (a1, b0, b1); positive b0
        ([0.0, 0.8, 1.0], 2),  # a1 over (a0, b0, b1); positive b1
        ([0.6, 0.8, 0.8], 0),  # b0 over (a0, a1, b1); positive a0
        ([0.0, 1.0, 0.8], 1),  # b1 over (a0, a1, b0); positive a1
    ]
    expected = sum(_ce([c / t for c in row], pos) for row, pos in rows) / 4
    assert nt_xent(z1, z2, t)["simclr"].item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(z2, z1, t)["simclr"].item() == pytest.approx(expected, rel=1e-6)  # symmetric


def test_nt_xent_symmetric_mask_and_minimum():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert nt_xent(z1, z2, 0.2)["simclr"].item() == pytest.approx(nt_xent(z2, z1, 0.2)["simclr"].item(), rel=1e-6)
    # masked pairs are dropped entirely: changing them changes nothing
    mask = torch.tensor([True, False, True, True, False, True])
    z1b = z1.clone()
    z1b[~mask] = torch.randn(2, 8, generator=g)
    assert nt_xent(z1, z2, 0.2, mask)["simclr"].item() == pytest.approx(
        nt_xent(z1b, z2, 0.2, mask)["simclr"].item(), rel=1e-6)
    assert nt_xent(z1[mask], z2[mask], 0.2)["simclr"].item() == pytest.approx(
        nt_xent(z1, z2, 0.2, mask)["simclr"].item(), rel=1e-6)
    # identical, orthogonal views: at the minimum, 2N-2 negatives at cosine 0 and the positive at 1
    eye = torch.eye(6, 8)
    best = nt_xent(eye, eye.clone(), 0.2)["simclr"].item()
    assert best == pytest.approx(_ce([1 / 0.2] + [0.0] * 10, 0), rel=1e-6)
    assert best < nt_xent(z1, z2, 0.2)["simclr"].item()
    for _ in range(5):  # and below random and perturbed views
        noisy = eye + 0.3 * torch.randn(6, 8, generator=g)
        assert best < nt_xent(eye, noisy, 0.2)["simclr"].item()


def test_nt_xent_gradients_and_no_pair():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3, requires_grad=True)
    nt_xent(z1, z2, 0.1)["simclr"].backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    z1.grad = None
    loss = nt_xent(z1, z2, 0.1, mask=torch.zeros(4, dtype=torch.bool))["simclr"]
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(z1.grad == 0)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)


# ----------------------------------------------------------------------------- clip_infonce_global


def test_gather_with_grad_is_identity_without_distributed():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


def test_clip_infonce_global_equals_clip_infonce_on_one_process():
    g = torch.Generator().manual_seed(1)
    video = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1).requires_grad_()
    vm = torch.tensor([True, True, False, True, True])
    tm = torch.tensor([True, True, True, True, False])
    for masks in ({}, {"video_mask": vm}, {"video_mask": vm, "text_mask": tm}):
        ref = clip_infonce(video, text, 7.0, **masks)
        got = clip_infonce_global(video, text, 7.0, **masks)
        for k in ("clip_v2t", "clip_t2v"):
            assert got[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
    got = clip_infonce_global(video, text, torch.tensor(7.0), video_mask=vm, text_mask=tm)
    (got["clip_v2t"] + got["clip_t2v"]).backward()
    assert video.grad is not None and torch.all(video.grad[2] == 0) and video.grad[0].abs().sum() > 0
    none = clip_infonce_global(video, text, 7.0, video_mask=torch.zeros(5, dtype=torch.bool))
    assert none["clip_v2t"].item() == 0.0 and none["clip_v2t"].requires_grad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_worker(rank: int, world: int, port: int, video, text, vmask, sizes, out) -> None:
    """Rank ``rank`` of a gloo group: its shard of the batch (``sizes`` rows per rank)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        start = sum(sizes[:rank])
        rows = slice(start, start + sizes[rank])
        v = video[rows].clone().requires_grad_()
        terms = clip_infonce_global(v, text[rows], 3.0, video_mask=vmask[rows])
        (terms["clip_v2t"] + terms["clip_t2v"]).backward()
        out[rank] = (terms["clip_v2t"].item(), terms["clip_t2v"].item(), v.grad.clone())
    finally:
        dist.destroy_process_group()


def test_clip_infonce_global_two_ranks_uneven():
    """Two gloo ranks holding 3 + 2 rows see the negatives of all 5: each rank's loss is the
    full-batch loss restricted to its anchors."""
    g = torch.Generator().manual_seed(2)
    video = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1)
    vmask = torch.tensor([True, False, True, True, True])
    sizes = [3, 2]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_global_worker, args=(2, _free_port(), video, text, vmask, sizes, out), nprocs=2,
                           join=True, start_method="fork")  # fork: no re-import of torch in the children
        out = dict(out)
    # by hand over the full batch: kept pairs 0, 2, 3, 4; rank 0 anchors 0, 2; rank 1 anchors 3, 4
    logits = 3.0 * video[vmask] @ text[vmask].T  # (4, 4)
    rows = logits.tolist()
    cols = logits.T.tolist()
    for rank, anchors in ((0, [0, 1]), (1, [2, 3])):
        v2t = sum(_ce(rows[a], a) for a in anchors) / len(anchors)
        t2v = sum(_ce(cols[a], a) for a in anchors) / len(anchors)
        assert out[rank][0] == pytest.approx(v2t, rel=1e-5)
        assert out[rank][1] == pytest.approx(t2v, rel=1e-5)
    assert torch.all(out[0][2][1] == 0) and out[0][2][0].abs().sum() > 0 and out[1][2].abs().sum() > 0


# ----------------------------------------------------------------------------- weighted_multilabel_bce


def test_weighted_multilabel_bce_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    weights = torch.tensor([[1.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    # bce(x, 1) = softplus(-x), bce(x, 0) = softplus(x); w = 1.5, 0.5 on positives, neg_weight on negatives;
    # row 1 has no positive and still contributes its 3 negatives
    nw = 0.25
    num = 1.5 * _softplus(-2.0) + nw * _softplus(-1.0) + 0.5 * _softplus(-0.5) \
        + nw * (_softplus(0.0) + _softplus(1.0) + _softplus(-2.0))
    den = 1.5 + nw + 0.5 + 3 * nw
    terms = weighted_multilabel_bce(logits, targets, weights, neg_weight=nw, name="query")
    assert list(terms) == ["query_bce"]
    assert terms["query_bce"].item() == pytest.approx(num / den, rel=1e-6)
    # masking row 1 drops its negatives
    masked = weighted_multilabel_bce(logits, targets, weights, neg_weight=nw, mask=torch.tensor([True, False]))
    num0 = 1.5 * _softplus(-2.0) + nw * _softplus(-1.0) + 0.5 * _softplus(-0.5)
    assert masked["hashtag_bce"].item() == pytest.approx(num0 / (1.5 + nw + 0.5), rel=1e-6)


def test_weighted_multilabel_bce_gradients_and_empty():
    logits = torch.randn(3, 4, requires_grad=True)
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]])
    weights = targets * 2.0
    loss = weighted_multilabel_bce(logits, targets, weights)["hashtag_bce"]
    loss.backward()
    assert torch.all(logits.grad != 0)  # every entry weighs (positives 2, negatives 1)
    assert torch.all(logits.grad[targets.bool()] < 0) and torch.all(logits.grad[~targets.bool()] > 0)
    logits.grad = None
    none = weighted_multilabel_bce(logits, targets, weights, mask=torch.zeros(3, dtype=torch.bool))["hashtag_bce"]
    assert none.item() == 0.0
    none.backward()
    assert torch.all(logits.grad == 0)
    # neg_weight=0 and no positive: no weight at all -> 0, not NaN
    zero = weighted_multilabel_bce(logits, torch.zeros(3, 4), torch.zeros(3, 4), neg_weight=0.0)["hashtag_bce"]
    assert zero.item() == 0.0


# ----------------------------------------------------------------------------- keyword_mask_loss


def test_keyword_mask_loss_by_hand_and_masking():
    logits = torch.tensor([
        [[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
        [[1.0, 3.0, 0.0], [5.0, -5.0, 9.0]],
    ], requires_grad=True)  # (B=2, K=2, V=3)
    targets = torch.tensor([[0, 1], [1, -100]])  # padding slot holds junk
    valid = torch.tensor([[True, True], [True, False]])
    expected = (_ce([2.0, 0.0, 1.0], 0) + _ce([0.0, 0.0, 0.0], 1) + _ce([1.0, 3.0, 0.0], 1)) / 3
    loss = keyword_mask_loss(logits, targets, valid)["keyword"]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[1, 1] == 0) and logits.grad[0, 0].abs().sum() > 0
    logits.grad = None
    none = keyword_mask_loss(logits, targets, torch.zeros(2, 2, dtype=torch.bool))["keyword"]
    assert none.item() == 0.0
    none.backward()
    assert torch.all(logits.grad == 0)
    empty = keyword_mask_loss(torch.zeros(2, 0, 3, requires_grad=True), torch.zeros(2, 0, dtype=torch.long),
                              torch.zeros(2, 0, dtype=torch.bool))["keyword"]
    assert empty.item() == 0.0 and empty.requires_grad


# ----------------------------------------------------------------------------- a rank without a kept pair


class _PairModel(torch.nn.Module):
    """Two linear projections and a learned logit scale: the smallest model with a CLIP step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.video = torch.nn.Linear(3, 4)
        self.text = torch.nn.Linear(3, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, xv: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nv = torch.nn.functional.normalize(self.video(xv), dim=-1)  # (B, 4)
        nt = torch.nn.functional.normalize(self.text(xt), dim=-1)  # (B, 4)
        return nv, nt


def _ddp_step_worker(rank: int, world: int, port: int, xv, xt, vmask, sizes, out) -> None:
    """One DDP step of :class:`_PairModel` on this rank's shard; the averaged gradients go to ``out``."""
    import datetime

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # short timeout: a rank stuck in a collective fails the test instead of hanging it
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=20))
    try:
        model = torch.nn.parallel.DistributedDataParallel(_PairModel())
        start = sum(sizes[:rank])
        rows = slice(start, start + sizes[rank])
        nv, nt = model(xv[rows], xt[rows])
        terms = clip_infonce_global(nv, nt, model.module.logit_scale, video_mask=vmask[rows])
        (terms["clip_v2t"] + terms["clip_t2v"]).backward()
        dist.barrier()
        out[rank] = {n: p.grad.clone() for n, p in model.module.named_parameters()}
    finally:
        dist.destroy_process_group()


def test_clip_infonce_global_ddp_step_with_a_rank_without_pairs():
    """Rank 0 keeps no pair (every video missing): the DDP step still finishes on both ranks (no rank
    waits in a collective the other never enters), and the averaged gradients are the single-process
    gradients of the whole batch divided by the world size (rank 0 adds no anchor, so the sum of the
    ranks' losses is the single-process loss)."""
    g = torch.Generator().manual_seed(3)
    xv, xt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    vmask = torch.tensor([False, False, True, True, True])
    sizes = [2, 3]
    with mp.Manager() as manager:
        out = manager.dict()
        ctx = mp.start_processes(_ddp_step_worker, args=(2, _free_port(), xv, xt, vmask, sizes, out), nprocs=2,
                                 join=False, start_method="fork")
        deadline = time.monotonic() + 90
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    pytest.fail("the 2-rank DDP step did not finish within 90 s (a rank waits in a collective)")
        finally:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
        out = dict(out)
    single = _PairModel()
    nv, nt = single(xv, xt)
    terms = clip_infonce(nv, nt, single.logit_scale, video_mask=vmask)
    (terms["clip_v2t"] + terms["clip_t2v"]).backward()
    for rank in (0, 1):
        for name, p in single.named_parameters():
            torch.testing.assert_close(out[rank][name] * 2, p.grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}")
    assert single.logit_scale.grad.abs() > 0 and single.video.weight.grad.abs().sum() > 0


def test_clip_infonce_without_pairs_reaches_the_logit_scale():
    scale = torch.tensor(3.0, requires_grad=True)
    video, text = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    none = torch.zeros(2, dtype=torch.bool)
    for fn in (clip_infonce, clip_infonce_global):
        scale.grad = None
        terms = fn(video, text, scale, video_mask=none)
        (terms["clip_v2t"] + terms["clip_t2v"]).backward()
        assert scale.grad is not None and float(scale.grad) == 0.0
