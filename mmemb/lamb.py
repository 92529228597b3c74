"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2019, arXiv:1904.00962).

torch has no ``torch.optim.Lamb``; :class:`Lamb` is a plain :class:`torch.optim.Optimizer` (usable
without Lightning). For every parameter tensor ``w`` with gradient ``g`` at step ``t``::

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)          (bias correction)
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w                 (decoupled weight decay)
    r = ||w|| / ||u||   (1 when either norm is 0), clamped to [0, max_trust_ratio]
    w = w - lr * r * u

*Choice*: as the reference implementations (the authors' TensorFlow optimizer excludes the layers it
excludes from weight decay, NVIDIA apex and timm apply the ratio only where ``weight_decay != 0``), the
trust ratio is applied to parameters of groups with ``weight_decay != 0`` only; groups without weight
decay (biases, norms, embeddings in :func:`mmemb.lit.optim.configure_warmup_cosine`) take the plain
Adam step ``r = 1``. ``always_adapt=True`` applies the ratio to every parameter.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

__all__ = ["Lamb", "trust_ratio"]


def trust_ratio(weight_norm: torch.Tensor, update_norm: torch.Tensor,
                max_trust_ratio: Optional[float] = 10.0) -> torch.Tensor:
    """``||w|| / ||u||`` as a 0-d tensor, 1 when either norm is 0, clamped at ``max_trust_ratio``
    (``None``: no clamp)."""
    both = (weight_norm > 0) & (update_norm > 0)
    ratio = torch.where(both, weight_norm / torch.where(both, update_norm, torch.ones_like(update_norm)),
                        torch.ones_like(weight_norm))
    if max_trust_ratio is not None:
        ratio = ratio.clamp(max=max_trust_ratio)
    return ratio


class Lamb(torch.optim.Optimizer):
    """The LAMB optimizer (see the module docstring).

    Args:
        params: parameters or parameter groups (each group may set any of the options below).
        lr: learning rate.
        betas: coefficients of the running means of the gradient and of its square.
        eps: added to ``sqrt(v_hat)``.
        weight_decay: decoupled weight decay, added to the Adam update before the trust ratio.
        max_trust_ratio: upper clamp of the trust ratio (``None``: no clamp).
        always_adapt: apply the trust ratio to parameters of groups with ``weight_decay == 0`` too.
        bias_correction: divide the moments by ``1 - beta**t``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_trust_ratio: Optional[float] = 10.0,
                 always_adapt: bool = False, bias_correction: bool = True):
        if not lr >= 0.0:
            raise ValueError(f"Lamb: lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Lamb: eps must be >= 0, got {eps}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: betas must be two numbers in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Lamb: weight_decay must be >= 0, got {weight_decay}")
        if max_trust_ratio is not None and not max_trust_ratio > 0:
            raise ValueError(f"Lamb: max_trust_ratio must be > 0 or None, got {max_trust_ratio}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        max_trust_ratio=max_trust_ratio, always_adapt=always_adapt, bias_correction=bias_correction)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        """Apply the LAMB update of ``group`` to one parameter."""
        grad = p.grad
        if grad.is_sparse:
            raise RuntimeError("Lamb does not support sparse gradients")
        if torch.is_complex(p):
            raise RuntimeError("Lamb does not support complex parameters")
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if group["bias_correction"]:
            c1, c2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
        else:
            c1 = c2 = 1.0
        update = (exp_avg / c1) / ((exp_avg_sq / c2).sqrt().add_(group["eps"]))
        wd = group["weight_decay"]
        if wd != 0:
            update.add_(p, alpha=wd)
        if wd != 0 or group["always_adapt"]:
            ratio = trust_ratio(p.norm(), update.norm(), group["max_trust_ratio"])
            p.sub_(update * (ratio * group["lr"]))
        else:
            p.sub_(update, alpha=group["lr"])
