"""Hashtag scores for evaluation, the same way for every preset; label names as token ids.

A model with a hashtag head (``hashtag_head`` on) is scored by its head's logits. A model without one
(the two-tower presets, or the full model with ``hashtag_head: false``) is scored *zero-shot*: the
cosine between a video's embedding and the text-tower embedding of each hashtag's name, as a text
query for that hashtag would be scored. A video without a clip (text-only data such as KuaiRec) has no
video embedding, so it is represented by the text embedding of its own caption and cover text
(:func:`zero_shot_embedding`): text-to-text, but not a row of zeros that ties every label. So hashtag mAP
compares models with and without the head on the same videos and labels, and the label-popularity
baseline (scores = the train split's label frequencies) says what a model that ignores the video would
reach.

The LightningModule keeps the hashtag names (token ids) and the train counts as buffers, so a
checkpoint scores hashtags without the data's vocabulary files.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..eval.tagging import tagging_metrics
from ..models.model import EmbeddingModel, LabelInputs

__all__ = ["name_token_ids", "label_inputs", "zero_shot_embedding", "zero_shot_scores", "hashtag_metrics"]


def name_token_ids(tokenizer, labels: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(N, max_length)`` (``[CLS] name [SEP]``, 0-padded) and attention of label names."""
    ids = torch.zeros(len(labels), max_length, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, name in enumerate(labels):
        row, _ = tokenizer.encode_fields([name], max_length)
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        att[i, : len(row)] = 1
    return ids, att


def label_inputs(tokenizer, labels: Sequence[str], max_length: int, tag_graph=None) -> LabelInputs:
    """:class:`LabelInputs` of label names, with the graph tensors of ``tag_graph`` when it fits."""
    from ..models.gcn import graph_tensors

    ids, att = name_token_ids(tokenizer, labels, max_length)
    edge_index = edge_weight = None
    if tag_graph is not None and tag_graph.num_nodes == len(labels):
        edge_index, edge_weight = graph_tensors(tag_graph)
    return LabelInputs(ids, att, edge_index, edge_weight)


def zero_shot_embedding(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, D)`` the embedding a video is scored by zero-shot: its video embedding where a clip is available
    (``out["video_mask"]``), else its text embedding (zero rows where neither is)."""
    has_video = out["video_mask"].bool().unsqueeze(-1)  # (B, 1)
    return torch.where(has_video, out["video"], out["text"])  # (B, D)


def zero_shot_scores(model: EmbeddingModel, embedding: torch.Tensor, name_ids: torch.Tensor,
                     name_attention: torch.Tensor) -> torch.Tensor:
    """``(B, H)`` cosines of the videos' unit embeddings ``(B, D)`` (:func:`zero_shot_embedding`) with the
    text-tower embeddings of the names."""
    names = model.encode_text({"text_ids": name_ids, "text_attention": name_attention})  # (H, D)
    return embedding @ names.T  # (B, H)


def hashtag_metrics(scores: torch.Tensor, targets: torch.Tensor,
                    train_counts: torch.Tensor | None = None) -> dict[str, float]:
    """``hashtag_{p1,r5,map}`` of ``scores`` ``(N, H)`` against ``targets`` ``(N, H)`` over the rows with at
    least one label, and with ``train_counts`` ``(H,)`` ``hashtag_map_popularity`` (the baseline)."""
    metrics = {f"hashtag_{k}": v for k, v in tagging_metrics(scores, targets).items()}
    if train_counts is not None:
        popular = train_counts.detach().float().cpu().expand(targets.shape[0], -1)  # (N, H)
        metrics["hashtag_map_popularity"] = tagging_metrics(popular, targets)["map"]
    return metrics
