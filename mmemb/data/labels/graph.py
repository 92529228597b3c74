"""The tag co-occurrence graph: :class:`TagGraph` / :func:`build_tag_graph` give weighted edges
(NPMI, PMI or P(j|i)) between labels for a GCN."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .vocabulary import check_label_ids as _check_ids

__all__ = ["GraphMeasure", "TagGraph", "build_tag_graph"]

GraphMeasure = Literal["cond_prob", "pmi", "npmi"]


@dataclass
class TagGraph:
    """Weighted tag co-occurrence edges, PyTorch Geometric style (no self-loops: the GCN adds them)."""

    edge_index: np.ndarray  # (2, E) int64: row 0 source ids, row 1 target ids, sorted by (source, target)
    edge_weight: np.ndarray  # (E,) float32
    num_nodes: int  # number of labels
    labels: list[str]  # node id -> label, or [] when unknown
    measure: str  # "npmi", "pmi" or "cond_prob"

    def __post_init__(self) -> None:
        self.edge_index = np.asarray(self.edge_index, dtype=np.int64).reshape(2, -1)
        self.edge_weight = np.asarray(self.edge_weight, dtype=np.float32).reshape(-1)
        if self.edge_weight.shape[0] != self.edge_index.shape[1]:
            raise ValueError(f"TagGraph: {self.edge_index.shape[1]} edges but {self.edge_weight.shape[0]} weights")
        if self.edge_index.size and (self.edge_index.min() < 0 or self.edge_index.max() >= self.num_nodes):
            raise ValueError(f"TagGraph: edge_index has ids outside [0, {self.num_nodes})")
        if self.labels and len(self.labels) != self.num_nodes:
            raise ValueError(f"TagGraph: {len(self.labels)} labels for {self.num_nodes} nodes")

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (readable without pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            edge_index=self.edge_index,
            edge_weight=self.edge_weight,
            num_nodes=np.int64(self.num_nodes),
            labels=np.array(self.labels, dtype=np.str_),
            measure=np.array(self.measure),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TagGraph":
        """Read what :meth:`save` wrote; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"tag graph not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    edge_index=data["edge_index"],
                    edge_weight=data["edge_weight"],
                    num_nodes=int(data["num_nodes"]),
                    labels=[str(x) for x in data["labels"].tolist()],
                    measure=str(data["measure"]),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a valid tag graph ({exc})") from None


def build_tag_graph(
    label_id_lists: Sequence[Sequence[int]],
    num_labels: int,
    measure: GraphMeasure = "npmi",
    threshold: float = 0.1,
    min_cooccurrence: int = 2,
    labels: Sequence[str] | None = None,
) -> TagGraph:
    """Co-occurrence graph of labels over samples (repeats within a sample count once).

    With N the number of samples that have at least one label, c_i the samples with label i and c_ij
    those with both i and j:

    * ``pmi``: ``ln(c_ij * N / (c_i * c_j))``, both directions;
    * ``npmi``: ``pmi / -ln(c_ij / N)`` in [-1, 1] (1 when c_ij = N), both directions;
    * ``cond_prob``: edge i -> j weighs ``P(j | i) = c_ij / c_i`` (directed: j -> i weighs c_ij / c_j).

    An edge is kept when ``c_ij >= min_cooccurrence`` and its weight ``>= threshold`` (for cond_prob each
    direction on its own). No self-loops. Edges are sorted by (source, target).
    """
    if measure not in ("cond_prob", "pmi", "npmi"):
        raise ValueError(f"measure must be 'cond_prob', 'pmi' or 'npmi', got {measure!r}")
    if min_cooccurrence < 1:
        raise ValueError(f"min_cooccurrence must be >= 1, got {min_cooccurrence}")
    if labels is not None and len(labels) != num_labels:
        raise ValueError(f"build_tag_graph: {len(labels)} labels for num_labels={num_labels}")
    count = np.zeros(num_labels, dtype=np.int64)
    pair_keys: list[np.ndarray] = []
    n_samples = 0
    for k, ids in enumerate(label_id_lists):
        unique = np.array(sorted(set(int(i) for i in ids)), dtype=np.int64)
        if unique.size == 0:
            continue
        _check_ids(unique.tolist(), num_labels, f"label_id_lists[{k}]")
        n_samples += 1
        count[unique] += 1
        if unique.size > 1:
            a, b = np.triu_indices(unique.size, k=1)
            pair_keys.append(unique[a] * num_labels + unique[b])
    empty = TagGraph(np.zeros((2, 0), np.int64), np.zeros(0, np.float32), num_labels, list(labels or []), measure)
    if not pair_keys:
        return empty
    keys, c_ij = np.unique(np.concatenate(pair_keys), return_counts=True)
    keep = c_ij >= min_cooccurrence
    keys, c_ij = keys[keep], c_ij[keep].astype(np.float64)
    i, j = keys // num_labels, keys % num_labels
    if measure == "cond_prob":
        src = np.concatenate([i, j])
        dst = np.concatenate([j, i])
        weight = np.concatenate([c_ij / count[i], c_ij / count[j]])
    else:
        n = float(n_samples)
        pmi = np.log(c_ij * n / (count[i] * count[j]))
        if measure == "npmi":
            denom = -np.log(c_ij / n)
            pmi = np.where(denom > 0, pmi / np.where(denom > 0, denom, 1.0), 1.0)
        src = np.concatenate([i, j])
        dst = np.concatenate([j, i])
        weight = np.concatenate([pmi, pmi])
    keep = weight >= threshold
    src, dst, weight = src[keep], dst[keep], weight[keep]
    order = np.lexsort((dst, src))
    return TagGraph(np.stack([src[order], dst[order]]), weight[order].astype(np.float32), num_labels,
                    list(labels or []), measure)
