"""Label embeddings from the tag co-occurrence graph (a GCN) and the multi-label head that uses them.

The teacher classifies a video into hashtags (and queries) with a classifier whose weight matrix is
not a free parameter: row ``l`` is the embedding of label ``l`` computed by :class:`TagGCN` from

* node features: the text encoder's embeddings of the label names (the caller computes them, so the
  head starts from what the label means), and
* the tag graph (:class:`mmemb.data.labels.TagGraph`): labels that co-occur exchange features, so
  a rare tag borrows from its frequent neighbours (ML-GCN, Chen et al. 2019).

:func:`graph_tensors` turns a ``TagGraph`` into the ``edge_index``/``edge_weight`` tensors of the GCN;
:class:`LabelHead` computes ``logits = scale * x @ label_emb.T + bias``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmemb.data.labels import TagGraph

__all__ = ["TagGCNConfig", "TagGCN", "LabelHead", "graph_tensors"]


def graph_tensors(
    tag_graph: TagGraph, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edge_index (2, E') int64, edge_weight (E',) float32)`` of ``tag_graph`` for :class:`TagGCN`.

    GCN normalisation needs non-negative weights (it divides by ``sqrt`` of weighted degrees), but
    PMI and NPMI are negative for labels that co-occur less often than chance. Such edges say "not
    related" rather than "opposite", so negative weights are clamped to 0 and edges of weight 0 are
    dropped (``E' <= E``); self-loops are not added here (``GCNConv`` adds them with weight 1).

    Direction: a ``TagGraph`` edge ``i -> j`` of weight ``w`` (for ``cond_prob``, ``w = P(j | i)``)
    is returned reversed, as a message from ``j`` to ``i`` (GCNConv sends messages from
    ``edge_index[0]`` to ``edge_index[1]``): label ``i`` aggregates the labels ``j`` weighted by
    ``P(j | i)``, as ML-GCN's ``A_ij = P(L_j | L_i)``, so a rare tag borrows from the frequent tags
    that accompany it rather than the reverse. PMI/NPMI graphs store both directions with the same
    weight, so for them the reversal changes nothing.
    """
    edge_index = torch.as_tensor(tag_graph.edge_index, dtype=torch.long).reshape(2, -1).flip(0)  # (2, E): j -> i
    edge_weight = torch.as_tensor(tag_graph.edge_weight, dtype=torch.float32).reshape(-1).clamp(min=0.0)  # (E,)
    keep = edge_weight > 0
    return edge_index[:, keep].to(device), edge_weight[keep].to(device)


@dataclass
class TagGCNConfig:
    """Architecture of :class:`TagGCN`."""

    in_dim: int = 64  # node feature size (the text encoder's width for label-name embeddings)
    hidden: int = 128  # width of the hidden GCN layers
    out_dim: int = 64  # label embedding size; must equal the dimension of the features LabelHead scores
    num_layers: int = 2  # GCNConv layers (1 = each label sees its direct neighbours only)
    dropout: float = 0.0  # dropout on the node features before every layer after the first
    residual: bool = True  # add a layer's input to its output when both have the same width
    input_mix: float = 0.0  # output = (1 - input_mix) * GCN(x) + input_mix * Linear(x) (skip from the input)

    def __post_init__(self) -> None:
        for name in ("in_dim", "hidden", "out_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"TagGCNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TagGCNConfig.dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.input_mix <= 1.0:
            raise ValueError(f"TagGCNConfig.input_mix must lie in [0, 1], got {self.input_mix}")


class TagGCN(nn.Module):
    """Node features ``(N, in_dim)`` + tag graph -> label embeddings ``(N, out_dim)``.

    ``num_layers`` ``GCNConv`` layers (symmetric normalisation with the edge weights, self-loops of
    weight 1 added by the layer; ``in_dim -> hidden -> ... -> out_dim``) with ReLU and dropout between
    them, residual connections where widths match, and an optional linear skip from the input mixed
    into the output (``input_mix``). After ``k`` layers a label's embedding depends on the labels at
    most ``k`` edges away, and on nothing else.
    """

    def __init__(self, cfg: TagGCNConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TagGCNConfig()
        dims = [cfg.in_dim] + [cfg.hidden] * (cfg.num_layers - 1) + [cfg.out_dim]
        from torch_geometric.nn import GCNConv  # slow to import: only when a TagGCN is built

        self.convs = nn.ModuleList(GCNConv(dims[i], dims[i + 1]) for i in range(cfg.num_layers))
        self.skip: nn.Module | None = None
        if cfg.input_mix > 0:
            self.skip = nn.Identity() if cfg.in_dim == cfg.out_dim else nn.Linear(cfg.in_dim, cfg.out_dim)

    def forward(
        self, node_features: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``node_features (N, in_dim)``, ``edge_index (2, E)``, ``edge_weight (E,)`` (``None`` = all 1)
        -> ``(N, out_dim)``. ``E`` may be 0 (each label then only sees itself)."""
        if node_features.dim() != 2 or node_features.shape[1] != self.cfg.in_dim:
            raise ValueError(f"TagGCN: node_features must be (N, {self.cfg.in_dim}), got {tuple(node_features.shape)}")
        edge_index = edge_index.to(device=node_features.device, dtype=torch.long)
        if edge_weight is not None:
            edge_weight = edge_weight.to(device=node_features.device, dtype=node_features.dtype)
        h = node_features  # (N, in_dim)
        for i, conv in enumerate(self.convs):
            if i > 0:
                h = F.dropout(F.relu(h), p=self.cfg.dropout, training=self.training)
            out = conv(h, edge_index, edge_weight)  # (N, dims[i + 1])
            h = out + h if self.cfg.residual and out.shape == h.shape else out
        if self.skip is not None:
            h = (1.0 - self.cfg.input_mix) * h + self.cfg.input_mix * self.skip(node_features)  # (N, out_dim)
        return h


class LabelHead(nn.Module):
    """Multi-label classifier whose weight matrix is given: ``logits = scale * x @ label_emb.T + bias``.

    Args:
        num_labels: ``N``; the bias has one entry per label.
        normalize: L2-normalise ``x`` and the label embeddings first (a cosine classifier: the scale
            then sets the logit range, as CLIP's temperature does).
        init_scale: initial ``scale`` (stored as its log).
        learn_scale: ``False`` freezes the scale.
        init_bias: initial bias of every label; ``-log((1 - p) / p)`` starts every label at probability
            ``p`` (e.g. ``p = 0.01`` for thousands of rare labels, as in RetinaNet's prior).
    """

    def __init__(self, num_labels: int, normalize: bool = True, init_scale: float = 10.0,
                 learn_scale: bool = True, init_bias: float = 0.0):
        super().__init__()
        if num_labels < 1:
            raise ValueError(f"LabelHead: num_labels must be >= 1, got {num_labels}")
        if init_scale <= 0:
            raise ValueError(f"LabelHead: init_scale must be > 0, got {init_scale}")
        self.num_labels = num_labels
        self.normalize = normalize
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learn_scale)
        self.bias = nn.Parameter(torch.full((num_labels,), float(init_bias)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, x: torch.Tensor, label_emb: torch.Tensor) -> torch.Tensor:
        """``x (B, D)``, ``label_emb (N, D)`` (e.g. :class:`TagGCN`'s output) -> logits ``(B, N)``."""
        if label_emb.shape[0] != self.num_labels or x.shape[-1] != label_emb.shape[-1]:
            raise ValueError(f"LabelHead: x {tuple(x.shape)} and label_emb {tuple(label_emb.shape)} do not fit "
                             f"(expected label_emb ({self.num_labels}, {x.shape[-1]}))")
        if self.normalize:
            x, label_emb = F.normalize(x, dim=-1), F.normalize(label_emb, dim=-1)
        return self.scale * x @ label_emb.T + self.bias  # (B, N)
