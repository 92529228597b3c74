"""The optimizer and learning-rate schedule shared by the LightningModules.

Weight decay
------------
Decay is decided by *name*, from the module tree, never from a parameter's shape. A parameter gets no
weight decay when

* it belongs to an embedding or a normalisation layer (by module type, :data:`NO_DECAY_MODULES`:
  ``nn.Embedding``, ``nn.EmbeddingBag``, layer/group/batch/instance/RMS norms): BERT's word, position
  and token-type embeddings, the n-gram table, every norm's scale and shift;
* its own name (the last component) is ``bias``, ends in ``_bias`` (``in_proj_bias``, channel
  biases) or is one of :data:`NO_DECAY_LEAF_NAMES` (``logit_scale``, a temperature);
* a module lists it in its ``no_weight_decay()`` (names relative to that module, timm's convention):
  the ViT's class/position tokens, the temporal pooling query
  (:meth:`mmemb.models.temporal.TemporalAttentionPool.no_weight_decay`), the model-level lists.

Everything else (the weight matrices of linear, convolution and attention projections) decays. The
former rule, ``ndim < 2``, missed the embeddings and the 3-D pooling query; and under FSDP with
``use_orig_params=True`` every parameter the optimizer sees is a flattened 1-D shard, so that rule
turned decay off entirely. The module types and names survive wrapping: FSDP/activation-checkpoint/
``torch.compile`` wrapper segments (:data:`WRAPPER_SEGMENTS`) are dropped from the names, so the
decision on a wrapped model is the one of the unwrapped model. With ``use_orig_params=False``
(FlatParameters mixing decayed and exempt tensors) no split exists: :func:`weight_decay_split` raises.

Sparse n-gram table
-------------------
On one process the n-gram bag's table (:class:`mmemb.models.ngram.NgramBag`) gets a sparse gradient
and its own ``torch.optim.SparseAdam`` (lazy Adam: only the rows of the batch are read and written;
no weight decay, the table is an embedding). :class:`DenseSparseOptimizer` joins it and the dense
optimizer (AdamW or LAMB) into one ``torch.optim.Optimizer``, which Lightning's automatic
optimization, the LR scheduler and checkpoints drive like any other. Under DDP/FSDP the table stays
dense and joins the dense optimizer's no-decay group.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import nn

from ..models.ngram import NgramBag

__all__ = [
    "warmup_cosine",
    "configure_warmup_cosine",
    "build_optimizer",
    "weight_decay_split",
    "sparse_parameters",
    "DenseSparseOptimizer",
    "NO_DECAY_MODULES",
    "NO_DECAY_LEAF_NAMES",
    "WRAPPER_SEGMENTS",
]

OptimizerName = Literal["adamw", "lamb"]
OPTIMIZERS: tuple[str, ...] = ("adamw", "lamb")

# module types whose parameters never decay (embeddings, normalisation layers)
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, SyncBatchNorm, InstanceNorm*d (affine)
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
# last name components that never decay (besides any ending in "_bias")
NO_DECAY_LEAF_NAMES: frozenset[str] = frozenset({"bias", "logit_scale"})
# name segments that wrappers insert (FSDP, activation checkpointing, torch.compile)
WRAPPER_SEGMENTS: frozenset[str] = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear from ~0 to 1 over ``warmup_steps``, then cosine down to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- weight decay by name


def _clean(name: str) -> str:
    """``name`` without wrapper segments: the name of the same parameter in the unwrapped model."""
    return ".".join(part for part in name.split(".") if part and part not in WRAPPER_SEGMENTS)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _no_weight_decay_names(model: nn.Module) -> set[str]:
    """Clean names of the parameters exempt from weight decay (see the module docstring)."""
    names: set[str] = set()
    for module_name, module in model.named_modules(remove_duplicate=False):
        prefix = _clean(module_name)
        for leaf, _ in module.named_parameters(recurse=False):
            if isinstance(module, NO_DECAY_MODULES) or leaf in NO_DECAY_LEAF_NAMES or leaf.endswith("_bias"):
                names.add(_join(prefix, leaf))
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {_join(prefix, _clean(n)) for n in listed()}
    return names


def _flat_parameter_type() -> Optional[type]:
    """FSDP's ``FlatParameter`` class, or ``None`` where this torch has no FSDP."""
    try:
        from torch.distributed.fsdp import FlatParameter
    except ImportError:
        return None
    return FlatParameter


def weight_decay_split(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """``(decay, no_decay)``: the trainable ``(clean name, parameter)`` pairs of ``model`` that take
    weight decay and those that do not, in ``named_parameters`` order (see the module docstring).

    Raises ``ValueError`` on FSDP FlatParameters (``use_orig_params=False``), which mix both kinds.
    """
    flat_type = _flat_parameter_type()
    exempt = _no_weight_decay_names(model)
    decay, no_decay = [], []
    for raw_name, p in model.named_parameters():
        if flat_type is not None and isinstance(p, flat_type):
            raise ValueError(f"weight_decay_split: {raw_name} is an FSDP FlatParameter (use_orig_params=False), which "
                             "flattens decayed and exempt tensors together: wrap with use_orig_params=True (the "
                             "default of Lightning's FSDPStrategy)")
        if p.requires_grad:
            name = _clean(raw_name)
            (no_decay if name in exempt else decay).append((name, p))
    return decay, no_decay


# ----------------------------------------------------------------------------- sparse parameters


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` whose gradients are sparse: weights of ``nn.Embedding`` /
    ``nn.EmbeddingBag`` built with ``sparse=True`` and :meth:`NgramBag.sparse_parameters`."""
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse and module.weight.requires_grad:
            found[id(module.weight)] = module.weight
        elif isinstance(module, NgramBag):
            found.update((id(p), p) for p in module.sparse_parameters() if p.requires_grad)
    return list(found.values())


class DenseSparseOptimizer(torch.optim.Optimizer):
    """One optimizer over two: ``dense`` for the parameters with dense gradients, ``sparse`` (e.g.
    ``torch.optim.SparseAdam``) for those with sparse gradients.

    ``param_groups`` is the dense optimizer's groups followed by the sparse one's, the very same dicts,
    so an LR scheduler that sets ``group["lr"]`` steers both. ``state`` is one dict shared by the three
    objects (the parameters are disjoint), so :meth:`state_dict` / :meth:`load_state_dict` are
    ``torch.optim.Optimizer``'s over the union and a checkpoint resumes both exactly.
    ``step(closure)`` evaluates the closure once, then steps both.
    """

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.Optimizer):
        self.dense, self.sparse = dense, sparse
        self._num_dense_groups = len(dense.param_groups)
        params = [p for opt in (dense, sparse) for g in opt.param_groups for p in g["params"]]
        super().__init__(params, dict(dense.defaults))  # (one placeholder group, replaced below)
        self.param_groups = [*dense.param_groups, *sparse.param_groups]
        self._share()
        self._joined = True

    def _share(self) -> None:
        """Make the inner optimizers use this object's groups and state (after init and after a load)."""
        self.dense.param_groups = self.param_groups[: self._num_dense_groups]
        self.sparse.param_groups = self.param_groups[self._num_dense_groups:]
        self.dense.state = self.sparse.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces self.param_groups and self.state
        self._share()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_joined", False):
            raise NotImplementedError("DenseSparseOptimizer: add the group to the inner dense or sparse optimizer "
                                      "before joining them")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.dense.step()
        self.sparse.step()
        return loss


# ----------------------------------------------------------------------------- building the optimizer


def _dense_optimizer(name: str, groups: Iterable[dict], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """``adamw`` -> ``torch.optim.AdamW``; ``lamb`` -> ``timm.optim.Lamb`` (layer-wise trust ratio on the
    groups with weight decay; no global gradient-norm clipping of its own: ``max_grad_norm=None``, clip
    with the trainer's ``gradient_clip_val``; trust ratio not clamped)."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=lr, betas=betas, max_grad_norm=None)
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")


def build_optimizer(model: nn.Module, name: OptimizerName, lr: float, betas: tuple[float, float],
                    weight_decay: float, sparse_ngrams: bool = True) -> torch.optim.Optimizer:
    """The training optimizer of ``model``.

    Two dense groups (weight decay ``weight_decay``; none, by :func:`weight_decay_split`) for ``name``
    (``adamw`` or ``lamb``). With ``sparse_ngrams``, the n-gram bags are switched to sparse gradients
    (:attr:`NgramBag.sparse_grad`; they stay dense under multi-process ``torch.distributed``) and every
    parameter with sparse gradients (:func:`sparse_parameters`) goes to a ``torch.optim.SparseAdam``
    with the same ``lr`` and ``betas``, joined to the dense optimizer by :class:`DenseSparseOptimizer`.
    Without sparse parameters the dense optimizer is returned as is. An n-gram bag with an
    :attr:`NgramBag.lr_scale` other than 1 or an :attr:`NgramBag.adam_beta2` (the label heads' wide parts)
    gets its own group at ``lr`` times that scale and with ``(betas[0], adam_beta2)``, sparse or dense (the
    schedule then scales every group alike).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    for module in model.modules():
        if isinstance(module, NgramBag):
            module.sparse_grad = sparse_ngrams
    sparse = sparse_parameters(model)
    sparse_ids = {id(p) for p in sparse}
    own = _own_groups(model)
    decay, no_decay = weight_decay_split(model)
    groups = []
    for params, decay_rate in ((decay, weight_decay), (no_decay, 0.0)):
        dense_params = [p for _, p in params if id(p) not in sparse_ids]
        groups += _scaled_groups(dense_params, own, lr, tuple(betas), {"weight_decay": decay_rate})
    dense = _dense_optimizer(name, groups, lr, tuple(betas))
    if not sparse:
        return dense
    # (SparseAdam has no weight decay; the key keeps every group's weight_decay readable)
    sparse_opt = torch.optim.SparseAdam(_scaled_groups(sparse, own, lr, tuple(betas), {"weight_decay": 0.0}), lr=lr,
                                        betas=tuple(betas))
    return DenseSparseOptimizer(dense, sparse_opt)


def _own_groups(model: nn.Module) -> dict[int, tuple[float, float | None]]:
    """``{id(parameter): (lr scale, adam beta2 or None)}`` of the n-gram bags with an
    :attr:`NgramBag.lr_scale` other than 1 or an :attr:`NgramBag.adam_beta2`."""
    return {id(p): (float(m.lr_scale), m.adam_beta2) for m in model.modules()
            if isinstance(m, NgramBag) and (m.lr_scale != 1 or m.adam_beta2 is not None) for p in m.parameters()}


def _scaled_groups(params: list[nn.Parameter], own: dict[int, tuple[float, float | None]], lr: float,
                   betas: tuple[float, float], extra: dict) -> list[dict]:
    """``params`` as one group at ``lr`` (kept even when empty, as before) and one group per other (lr scale,
    beta2) at ``lr * scale`` with ``(betas[0], beta2)``; ``extra`` goes into every group."""
    groups = [{"params": [p for p in params if id(p) not in own], **extra}]
    for scale, beta2 in sorted({own[id(p)] for p in params if id(p) in own}, key=lambda k: (k[0], k[1] or 0.0)):
        group = {"params": [p for p in params if own.get(id(p)) == (scale, beta2)], "lr": lr * scale, **extra}
        if beta2 is not None:
            group["betas"] = (betas[0], beta2)
        groups.append(group)
    return groups


def configure_warmup_cosine(module: pl.LightningModule, model: nn.Module, optimizer: str = "adamw") -> dict:
    """``configure_optimizers`` of a module whose hparams hold ``lr``, ``betas``, ``weight_decay``,
    ``warmup_fraction`` and ``min_lr_ratio``: :func:`build_optimizer` (weight decay by name, sparse
    n-gram tables), then a per-step warmup-cosine schedule."""
    hp = module.hparams
    opt = build_optimizer(model, optimizer, hp.lr, tuple(hp.betas), hp.weight_decay)
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ValueError("cannot schedule the learning rate over an unknown number of steps: set trainer.max_steps")
    total = max(1, int(total))
    warmup = int(hp.warmup_fraction * total)
    min_ratio = hp.min_lr_ratio

    def lr_lambda(step: int) -> float:  # a plain function: LambdaLR does not pickle it into checkpoints
        return warmup_cosine(step, warmup, total, min_ratio)

    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
