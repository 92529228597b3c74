"""The LAMB optimizer (mmemb.lamb.Lamb) and its use by configure_warmup_cosine."""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
from test_models import synthetic_batch
from torch import nn
from torch.utils.data import DataLoader

from mmemb.lamb import Lamb, trust_ratio
from mmemb.lit.optim import _optimizer_class
from mmemb.lit.module import EmbeddingModule


def _step(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[float]]) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)
    opt.step()


def _lamb_by_hand(w: list[float], grads: list[list[float]], lr: float, b1: float, b2: float, eps: float,
                  wd: float) -> list[float]:
    """LAMB on a plain list of floats, written out from the paper's update rule."""
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    for t, g in enumerate(grads, start=1):
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        m_hat = [mi / (1 - b1 ** t) for mi in m]
        v_hat = [vi / (1 - b2 ** t) for vi in v]
        u = [mh / (math.sqrt(vh) + eps) + wd * wi for mh, vh, wi in zip(m_hat, v_hat, w)]
        w_norm = math.sqrt(sum(x * x for x in w))
        u_norm = math.sqrt(sum(x * x for x in u))
        r = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w = [wi - lr * min(r, 10.0) * ui for wi, ui in zip(w, u)]
    return w


def test_one_step_matches_a_hand_computed_case():
    # w = (3, 4), g = (1, -2): m_hat = g, v_hat = g^2, so the Adam direction is ~sign(g) = (1, -1);
    # plus weight decay 0.1 * w: u = (1.3, -0.6), ||u|| = sqrt(2.05), ||w|| = 5, r = 5 / sqrt(2.05).
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = Lamb([w], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
    _step(opt, [w], [[1.0, -2.0]])
    u = [1 / (1 + 1e-6) + 0.3, -2 / (2 + 1e-6) + 0.4]
    r = 5.0 / math.sqrt(u[0] ** 2 + u[1] ** 2)
    assert r == pytest.approx(5 / math.sqrt(2.05), rel=1e-5)
    expected = [3.0 - 0.1 * r * u[0], 4.0 - 0.1 * r * u[1]]
    torch.testing.assert_close(w.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    state = opt.state[w]
    assert state["step"] == 1
    torch.testing.assert_close(state["exp_avg"], torch.tensor([0.1, -0.2], dtype=torch.float64))
    torch.testing.assert_close(state["exp_avg_sq"], torch.tensor([0.001, 0.004], dtype=torch.float64))


def test_several_steps_match_the_update_rule_written_out():
    grads = [[1.0, -2.0], [0.5, 0.25], [-3.0, 1.0], [0.0, 0.1]]
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = Lamb([w], lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.2)
    for g in grads:
        _step(opt, [w], [g])
    expected = _lamb_by_hand([3.0, 4.0], grads, lr=0.05, b1=0.8, b2=0.95, eps=1e-6, wd=0.2)
    torch.testing.assert_close(w.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_zero_norms_give_a_trust_ratio_of_one_and_the_clamp_holds():
    assert float(trust_ratio(torch.tensor(0.0), torch.tensor(2.0))) == 1.0
    assert float(trust_ratio(torch.tensor(2.0), torch.tensor(0.0))) == 1.0
    assert float(trust_ratio(torch.tensor(0.0), torch.tensor(0.0))) == 1.0
    assert float(trust_ratio(torch.tensor(3.0), torch.tensor(2.0))) == 1.5
    assert float(trust_ratio(torch.tensor(100.0), torch.tensor(1.0), max_trust_ratio=10.0)) == 10.0
    assert float(trust_ratio(torch.tensor(100.0), torch.tensor(1.0), max_trust_ratio=None)) == 100.0

    # ||w|| = 0 (a zero-initialised weight): r = 1, the step is lr * the Adam direction ~ lr * sign(g)
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = Lamb([w], lr=0.1, weight_decay=0.1)
    _step(opt, [w], [[1.0, -2.0]])
    torch.testing.assert_close(w.detach(), torch.tensor([-0.1, 0.1], dtype=torch.float64), rtol=1e-5, atol=0)
    # ||u|| = 0 (zero gradient, no weight decay, adapted anyway): r = 1, nothing moves, no NaN
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = Lamb([w], lr=0.1, weight_decay=0.0, always_adapt=True)
    _step(opt, [w], [[0.0, 0.0]])
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    # a large weight and a tiny update: r is clamped at max_trust_ratio
    w = torch.tensor([300.0, 400.0], dtype=torch.float64, requires_grad=True)
    opt = Lamb([w], lr=0.01, weight_decay=1e-4, max_trust_ratio=2.0)
    _step(opt, [w], [[1.0, -1.0]])
    u = torch.tensor([1 / (1 + 1e-6) + 0.03, -1 / (1 + 1e-6) + 0.04], dtype=torch.float64)
    torch.testing.assert_close(w.detach(), torch.tensor([300.0, 400.0], dtype=torch.float64) - 0.01 * 2.0 * u)


def test_weight_decay_param_groups():
    torch.manual_seed(0)
    decay = torch.randn(4, 3, requires_grad=True)
    no_decay = torch.randn(3, requires_grad=True)
    opt = Lamb([{"params": [decay], "weight_decay": 0.1}, {"params": [no_decay], "weight_decay": 0.0}], lr=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    # zero gradients: the decay group's update is wd * w, its trust ratio 1 / wd, so w shrinks by (1 - lr);
    # the group without decay does not move
    d0, n0 = decay.detach().clone(), no_decay.detach().clone()
    decay.grad, no_decay.grad = torch.zeros_like(decay), torch.zeros_like(no_decay)
    opt.step()
    torch.testing.assert_close(decay.detach(), d0 * (1 - 0.05))
    assert torch.equal(no_decay.detach(), n0)

    # a group without weight decay (and no always_adapt) takes the plain Adam step
    p_lamb = torch.randn(5, requires_grad=True)
    p_adam = p_lamb.detach().clone().requires_grad_(True)
    lamb = Lamb([{"params": [p_lamb], "weight_decay": 0.0}], lr=0.01, betas=(0.9, 0.98), eps=1e-6)
    adam = torch.optim.Adam([p_adam], lr=0.01, betas=(0.9, 0.98), eps=1e-6)
    for i in range(5):
        g = torch.randn(5, generator=torch.Generator().manual_seed(i))
        p_lamb.grad, p_adam.grad = g.clone(), g.clone()
        lamb.step()
        adam.step()
    torch.testing.assert_close(p_lamb, p_adam)


def _regression(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    w_true = torch.randn(8, 1, generator=g)
    return x, x @ w_true + 3.0 + 0.01 * torch.randn(256, 1, generator=g)


def test_minimises_a_linear_regression():
    torch.manual_seed(0)
    x, y = _regression()
    model = nn.Linear(8, 1)
    opt = Lamb([{"params": [model.weight], "weight_decay": 1e-4}, {"params": [model.bias], "weight_decay": 0.0}],
               lr=0.02)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    final = float(nn.functional.mse_loss(model(x), y).detach())
    assert final < first / 100, (first, final)


def test_closure_returns_the_loss():
    x, y = _regression()
    model = nn.Linear(8, 1)
    opt = Lamb(model.parameters(), lr=0.01)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    assert torch.isfinite(opt.step(closure))


def test_state_dict_round_trip_continues_identically():
    x, y = _regression(seed=1)
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    opt = Lamb([{"params": [model.weight], "weight_decay": 0.01}, {"params": [model.bias], "weight_decay": 0.0}],
               lr=0.01, betas=(0.9, 0.98))

    def train(m: nn.Module, o: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()

    train(model, opt, 5)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train(model, opt, 5)

    clone = nn.Linear(8, 1)
    clone.load_state_dict(saved_model)
    clone_opt = Lamb([{"params": [clone.weight]}, {"params": [clone.bias]}], lr=1.0)
    clone_opt.load_state_dict(saved_opt)
    assert [g["weight_decay"] for g in clone_opt.param_groups] == [0.01, 0.0]
    assert clone_opt.param_groups[0]["lr"] == 0.01
    train(clone, clone_opt, 5)
    assert torch.equal(clone.weight, model.weight) and torch.equal(clone.bias, model.bias)
    assert clone_opt.state[clone.weight]["step"] == 10


def test_bad_arguments_are_clear_errors():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lr"):
        Lamb(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        Lamb(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="weight_decay"):
        Lamb(p, weight_decay=-0.1)
    with pytest.raises(ValueError, match="max_trust_ratio"):
        Lamb(p, max_trust_ratio=0.0)


def test_optimizer_name_lamb_resolves():
    expected = getattr(torch.optim, "Lamb", None) or Lamb
    assert _optimizer_class("lamb") is expected
    assert _optimizer_class("adamw") is torch.optim.AdamW
    with pytest.raises(ValueError, match="bogus"):
        _optimizer_class("bogus")


def test_teacher_module_trains_a_step_with_lamb(tmp_path):
    if hasattr(torch.optim, "Lamb"):
        pytest.skip("this torch has its own torch.optim.Lamb")
    pl.seed_everything(0)
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=300, lr=1e-3, weight_decay=0.05, optimizer="lamb",
                             warmup_fraction=0.0)
    batch = synthetic_batch(b=4, t=2, size=32, length=12, vocab=300, n_mels=64, mel_frames=40, num_hashtags=0)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))
    opt = trainer.optimizers[0]
    assert isinstance(opt, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    moved = [n for n, p in module.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "text.bert.encoder.layer.0.attention.self.query.weight" in moved
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
