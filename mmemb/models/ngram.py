"""The hashed char-n-gram bag channel of the text tower (Que2Search's char-3-gram ``EmbeddingBag``).

The data hashes the character n-grams of a video's text fields into ``num_buckets`` buckets
(:func:`mmemb.data.text.hash_field_ngrams`) and ships them as ``text_ngrams``: bucket + 1, 0-padded.
:class:`NgramBag` averages one learned vector per bucket over the video's n-grams. It reads spelling
directly (rare words, typos, names, Chinese character runs that the WordPiece vocabulary splits or
maps to ``[UNK]``) and costs one table look-up, so it complements the transformer cheaply.

Sparse gradients. A batch touches a few thousand of the table's rows; a dense gradient (and a dense
AdamW step) reads and writes every row every step. With ``sparse_grad`` on, the bag gives the table a
sparse gradient (only the rows of the batch) and :func:`mmemb.lit.optim.build_optimizer` hands the
table to ``torch.optim.SparseAdam`` (:meth:`NgramBag.sparse_parameters`): a lazy Adam whose untouched
rows neither move nor decay their moments. ``build_optimizer`` switches ``sparse_grad`` on when it
builds the training optimizer; it is off by default, so that a bag used outside that optimizer has an
ordinary dense gradient. Under ``torch.distributed`` with several processes (DDP, FSDP) the gradient
stays dense whatever ``sparse_grad`` says, because NCCL cannot all-reduce sparse tensors and FSDP
flattens parameters: the table then takes the dense AdamW step of the no-decay group. The inner
``nn.EmbeddingBag`` keeps ``sparse=False`` so that DDP, which reads that flag when it wraps the model,
always expects a dense gradient; the sparse choice is made per call in :meth:`NgramBag.forward`.

Pooling. ``mean`` (the channel's) averages the vectors of every n-gram occurrence. ``l2_sublinear`` weighs
each distinct n-gram by ``1 + ln(count)`` and scales the row's weights to unit L2 norm, which is the
feature vector of sublinear-tf TF-IDF (without the IDF) that TF-IDF + logistic regression reads. A linear
model over it with an intercept (a label head's wide part with ``bias``) ranks KuaiRec's hashtags better
than over the mean; without the intercept the two are alike (``benchmarks/kuairec_linear.py``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NgramBag", "NgramPooling", "NGRAM_POOLINGS", "sublinear_l2_weights"]

PAD = 0  # the id of "no n-gram"; bucket b is id b + 1
NgramPooling = Literal["mean", "l2_sublinear"]
NGRAM_POOLINGS: tuple[str, ...] = ("mean", "l2_sublinear")


def sublinear_l2_weights(ids: torch.Tensor) -> torch.Tensor:
    """``(B, G)`` weight of each id occurrence of ``ids`` ``(B, G)`` such that a bag's weighted sum gives
    each distinct id ``1 + ln(count)`` and the row unit L2 norm: an occurrence of an id seen ``c`` times weighs
    ``(1 + ln c) / c / sqrt(sum over the row's occurrences of (1 + ln c)^2 / c)``; padding weighs 0 (and an
    all-padding row is all zeros)."""
    keep = ids != PAD  # (B, G)
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & keep.unsqueeze(1)  # (B, G, G)
    count = same.sum(dim=2).clamp(min=1).float()  # (B, G) occurrences of each position's id
    tf = (1.0 + torch.log(count)) / count * keep  # (B, G): each distinct id's 1 + ln c, spread over its c copies
    norm = (tf * (1.0 + torch.log(count))).sum(dim=1, keepdim=True).sqrt()  # (B, 1): sqrt(sum (1 + ln c)^2)
    return tf / norm.clamp(min=1e-12)  # (B, G)


class NgramBag(nn.Module):
    """Mean of learned bucket vectors: ``(B, G)`` ids (bucket + 1, 0 = padding) -> ``(B, width)`` and
    ``(B,)`` availability (the row has at least one n-gram); rows without n-grams are zeros.

    Args:
        num_buckets: hash buckets of the data (``TextConfig.ngram_buckets``).
        width: vector width.
        sparse_grad: sparse gradients of the table when not distributed (see the module docstring).
        lr_scale: the table's learning rate as a multiple of the optimizer's
            (:func:`mmemb.lit.optim.build_optimizer` gives it its own parameter group).
        pooling: ``mean`` over the occurrences, or ``l2_sublinear`` (see the module docstring).
        bias: a learned ``(width,)`` vector added to every row, also to rows without n-grams (a linear
            model's intercept: the label heads' wide parts, whose rows are label scores), zero at the start;
            it trains with the table's ``lr_scale``.
        adam_beta2: the second-moment decay of the table's Adam (its own parameter group, as ``lr_scale``);
            None = the optimizer's. A rare n-gram's row is updated only in the steps that see it, and Adam's
            step for it at step ``t`` is about ``lr (1 - beta1) / sqrt((1 - beta2) / (1 - beta2^t))``: a
            larger beta2 moves rare rows further.
    """

    def __init__(self, num_buckets: int, width: int, sparse_grad: bool = False, lr_scale: float = 1.0,
                 pooling: NgramPooling = "mean", bias: bool = False, adam_beta2: float | None = None):
        super().__init__()
        if num_buckets < 1 or width < 1:
            raise ValueError(f"NgramBag needs num_buckets >= 1 and width >= 1, got {num_buckets}, {width}")
        if lr_scale <= 0:
            raise ValueError(f"NgramBag lr_scale must be > 0, got {lr_scale}")
        if adam_beta2 is not None and not 0 < adam_beta2 < 1:
            raise ValueError(f"NgramBag adam_beta2 must be in (0, 1) or None, got {adam_beta2}")
        if pooling not in NGRAM_POOLINGS:
            raise ValueError(f"NgramBag pooling must be one of {', '.join(NGRAM_POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None
        self.num_buckets = num_buckets
        self.sparse_grad = sparse_grad
        self.lr_scale = lr_scale
        self.adam_beta2 = adam_beta2
        # padding_idx: row 0 stays zero, gets no gradient and is left out of each bag's mean
        self.bag = nn.EmbeddingBag(num_buckets + 1, width, mode="mean", padding_idx=PAD)
        nn.init.normal_(self.bag.weight, std=width ** -0.5)
        with torch.no_grad():
            self.bag.weight[PAD].zero_()

    def uses_sparse_grad(self) -> bool:
        """Whether :meth:`forward` gives the table a sparse gradient now: ``sparse_grad`` and not
        running under ``torch.distributed`` with more than one process."""
        distributed = (torch.distributed.is_available() and torch.distributed.is_initialized()
                       and torch.distributed.get_world_size() > 1)
        return self.sparse_grad and not distributed

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are sparse now (for the optimizer): the table, or none."""
        return [self.bag.weight] if self.uses_sparse_grad() else []

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, width)`` pooled vectors (+ the bias) and ``(B,)`` availability of ``(B, G)`` ids."""
        vec, available = self._pooled(ids)
        return (vec if self.bias is None else vec + self.bias), available

    def _pooled(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.dim() != 2:
            raise ValueError(f"text_ngrams must be (B, G) ids, got shape {tuple(ids.shape)}")
        ids = ids.long()
        # the range check reads the values (data-dependent): left out of exported graphs (ONNX), whose
        # preprocessing produces the ids
        exporting = torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()
        if not exporting and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > self.num_buckets):
            raise ValueError(f"text_ngrams ids must lie in [0, {self.num_buckets}] (bucket + 1, 0 = padding), got "
                             f"[{int(ids.min())}, {int(ids.max())}]: the data's text.ngram_buckets must equal "
                             f"the model's ngram_buckets ({self.num_buckets})")
        available = (ids != PAD).any(dim=1)  # (B,)
        if ids.shape[1] == 0:
            return ids.new_zeros(ids.shape[0], self.bag.embedding_dim, dtype=self.bag.weight.dtype), available
        if self.pooling == "l2_sublinear":
            weights = sublinear_l2_weights(ids).to(self.bag.weight.dtype)  # (B, G)
            if exporting:
                return (F.embedding(ids, self.bag.weight) * weights.unsqueeze(-1)).sum(dim=1), available  # (B, W)
            # (B, W): the weighted sum (padding ids weigh 0 and are skipped), zeros for an empty row
            vec = F.embedding_bag(ids, self.bag.weight, mode="sum", per_sample_weights=weights, padding_idx=PAD,
                                  sparse=self.uses_sparse_grad())
            return vec, available
        if exporting:  # the same mean as a gather and a sum: the exporter lowers embedding_bag to an ONNX Loop,
            return self._gather_mean(ids), available  # which costs a query more than the rest of the text graph
        # (B, W): mean over the non-padding ids, zeros for an empty row
        vec = F.embedding_bag(ids, self.bag.weight, mode="mean", padding_idx=PAD, sparse=self.uses_sparse_grad())
        return vec, available

    def _gather_mean(self, ids: torch.Tensor) -> torch.Tensor:
        """``F.embedding_bag(mode="mean", padding_idx=PAD)`` of ``ids`` ``(B, G)`` without a bag op: the
        rows gathered, the padding masked out, summed and divided by the count (zeros for an empty row)."""
        keep = (ids != PAD).unsqueeze(-1).to(self.bag.weight.dtype)  # (B, G, 1)
        rows = F.embedding(ids, self.bag.weight) * keep  # (B, G, W)
        return rows.sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B, W)
