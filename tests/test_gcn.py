"""TagGCN, graph_tensors and LabelHead on tiny graphs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmemb.data.labels import TagGraph, build_tag_graph
from mmemb.models.gcn import LabelHead, TagGCN, TagGCNConfig, graph_tensors


def _path_graph() -> TagGraph:
    """0 - 1 - 2   3 (isolated), both directions, as build_tag_graph stores symmetric measures."""
    return TagGraph(np.array([[0, 1, 1, 2], [1, 0, 2, 1]]), np.array([0.5, 0.5, 0.8, 0.8]), 4, [], "npmi")


def test_output_shape_and_config_checks():
    torch.manual_seed(0)
    gcn = TagGCN(TagGCNConfig(in_dim=6, hidden=8, out_dim=5, num_layers=2))
    edge_index, edge_weight = graph_tensors(_path_graph())
    assert gcn(torch.randn(4, 6), edge_index, edge_weight).shape == (4, 5)
    with pytest.raises(ValueError, match="num_layers"):
        TagGCNConfig(num_layers=0)
    with pytest.raises(ValueError, match="input_mix"):
        TagGCNConfig(input_mix=1.5)
    with pytest.raises(ValueError, match="node_features"):
        gcn(torch.randn(4, 7), edge_index, edge_weight)


def test_graph_tensors_clamps_negative_and_drops_zero_edges():
    g = TagGraph(np.array([[0, 1, 1, 2, 0], [1, 0, 2, 1, 2]]), np.array([0.5, 0.5, -0.3, -0.3, 0.0]), 3, [], "pmi")
    edge_index, edge_weight = graph_tensors(g)
    assert edge_index.dtype == torch.long and edge_weight.dtype == torch.float32
    # only 0 <-> 1 remains; returned reversed (j -> i), a no-op for a symmetric pair
    assert sorted(map(tuple, edge_index.T.tolist())) == [(0, 1), (1, 0)]
    assert edge_weight.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("residual,input_mix", [(True, 0.0), (False, 0.5)])
def test_one_layer_mixes_neighbours_only(residual, input_mix):
    torch.manual_seed(0)
    gcn = TagGCN(TagGCNConfig(in_dim=4, hidden=4, out_dim=4, num_layers=1, residual=residual, input_mix=input_mix))
    edge_index, edge_weight = graph_tensors(_path_graph())
    x = torch.randn(4, 4)
    base = gcn(x, edge_index, edge_weight)
    neighbour = x.clone()
    neighbour[1] += 1.0  # node 1 neighbours 0 and 2
    out = gcn(neighbour, edge_index, edge_weight)
    assert not torch.allclose(out[0], base[0]) and not torch.allclose(out[2], base[2])
    assert torch.allclose(out[3], base[3])  # isolated
    far = x.clone()
    far[2] += 1.0  # node 2 is two edges from node 0
    out = gcn(far, edge_index, edge_weight)
    assert torch.allclose(out[0], base[0]) and not torch.allclose(out[1], base[1])
    # with two layers, node 2 reaches node 0
    gcn2 = TagGCN(TagGCNConfig(in_dim=4, hidden=4, out_dim=4, num_layers=2, residual=residual, input_mix=input_mix))
    assert not torch.allclose(gcn2(far, edge_index, edge_weight)[0], gcn2(x, edge_index, edge_weight)[0])


def test_one_layer_by_hand():
    """Symmetric normalisation with self-loops: out_i = sum_j w_ij / sqrt(d_i d_j) x_j W + b."""
    gcn = TagGCN(TagGCNConfig(in_dim=1, hidden=1, out_dim=1, num_layers=1, residual=False))
    conv = gcn.convs[0]
    with torch.no_grad():
        conv.lin.weight.fill_(1.0)
        conv.bias.zero_()
    g = TagGraph(np.array([[0, 1], [1, 0]]), np.array([0.5, 0.5]), 2, [], "npmi")
    out = gcn(torch.tensor([[1.0], [3.0]]), *graph_tensors(g))
    d = 1.0 + 0.5  # weighted degree with the self-loop
    assert out[0, 0].item() == pytest.approx(1.0 / d + 0.5 * 3.0 / d, rel=1e-6)
    assert out[1, 0].item() == pytest.approx(3.0 / d + 0.5 * 1.0 / d, rel=1e-6)


def test_directed_cond_prob_rare_label_borrows_from_frequent():
    # label 0 on 2 samples, always with label 1 (on 6): P(1|0) = 1, P(0|1) = 1/3
    g = build_tag_graph([[0, 1], [0, 1], [1], [1], [1], [1]], 2, measure="cond_prob", threshold=0.5)
    assert g.edge_index.T.tolist() == [[0, 1]]  # 0 -> 1 weighs P(1|0) = 1; 1 -> 0 (1/3) is cut
    gcn = TagGCN(TagGCNConfig(in_dim=3, hidden=3, out_dim=3, num_layers=1))
    edge_index, edge_weight = graph_tensors(g)
    x = torch.randn(2, 3)
    moved = x.clone()
    moved[1] += 1.0
    assert not torch.allclose(gcn(moved, edge_index, edge_weight)[0], gcn(x, edge_index, edge_weight)[0])
    moved = x.clone()
    moved[0] += 1.0
    assert torch.allclose(gcn(moved, edge_index, edge_weight)[1], gcn(x, edge_index, edge_weight)[1])


def test_gradients_reach_node_features_and_head():
    torch.manual_seed(0)
    gcn = TagGCN(TagGCNConfig(in_dim=6, hidden=8, out_dim=5, num_layers=2, dropout=0.1))
    head = LabelHead(4, init_bias=-math.log(99.0))
    x = torch.randn(4, 6, requires_grad=True)
    feats = torch.randn(3, 5, requires_grad=True)
    logits = head(feats, gcn(x, *graph_tensors(_path_graph())))
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert x.grad is not None and torch.all(x.grad.abs().sum(dim=1) > 0)  # every node, isolated one included
    assert feats.grad is not None and head.log_scale.grad is not None and head.bias.grad is not None


def test_empty_graph_works():
    torch.manual_seed(0)
    g = TagGraph(np.zeros((2, 0)), np.zeros(0), 3, [], "npmi")
    edge_index, edge_weight = graph_tensors(g)
    assert edge_index.shape == (2, 0) and edge_weight.shape == (0,)
    gcn = TagGCN(TagGCNConfig(in_dim=4, hidden=4, out_dim=4, num_layers=2))
    x = torch.randn(3, 4)
    out = gcn(x, edge_index, edge_weight)
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    moved = x.clone()
    moved[1] += 1.0
    assert torch.allclose(gcn(moved, edge_index, edge_weight)[[0, 2]], out[[0, 2]])


def test_label_head_by_hand():
    head = LabelHead(2, normalize=False, init_scale=2.0, init_bias=0.5)
    x = torch.tensor([[1.0, 2.0]])
    emb = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    # 2 * [1, 0.5 - 2] + 0.5
    assert head(x, emb)[0].tolist() == pytest.approx([2.5, -2.5], rel=1e-6)
    cos = LabelHead(2, normalize=True, init_scale=2.0)
    assert torch.allclose(cos(x * 10, emb * 3), cos(x, emb))
    with pytest.raises(ValueError, match="do not fit"):
        head(x, torch.randn(3, 2))
