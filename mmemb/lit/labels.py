"""Hashtag scores for evaluation, the same way for every model.

A model with a hashtag head (the teacher) is scored by its head's logits. A model without one (the
first two-tower model, or the teacher with ``hashtag_head: false``) is scored *zero-shot*: the cosine
between a video's embedding and the text-tower embedding of each hashtag's name, as a text query for
that hashtag would be scored. So hashtag mAP compares models with and without the head on the same
videos and labels, and the label-popularity baseline (scores = the train split's label frequencies)
says what a model that ignores the video would reach.

The hashtag names (token ids) and the train counts are buffers, so a checkpoint scores hashtags
without the data's vocabulary files.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..eval.tagging import tagging_metrics
from ..models.teacher import LabelInputs

__all__ = ["HashtagScoringMixin", "label_inputs", "name_token_ids"]


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


class HashtagScoringMixin:
    """Mix into a LightningModule whose ``self.model`` has ``encode_text(batch)``; call
    :meth:`_init_hashtag_names` in ``__init__`` and :meth:`set_hashtag_names` once the vocabulary is
    known (``setup``)."""

    model: Any

    def _init_hashtag_names(self, num_hashtags: int, max_length: int) -> None:
        """Buffers for ``num_hashtags`` names of up to ``max_length`` tokens (none when 0)."""
        self._num_hashtag_names = int(num_hashtags)
        if num_hashtags > 0:
            self.register_buffer("hashtag_name_ids", torch.zeros(num_hashtags, max_length, dtype=torch.long))
            self.register_buffer("hashtag_name_attention", torch.zeros(num_hashtags, max_length, dtype=torch.long))
            self.register_buffer("hashtag_train_counts", torch.zeros(num_hashtags))

    def set_hashtag_names(self, tokenizer, labels: Sequence[str], counts: Sequence[int]) -> None:
        """Tokenise the hashtag names and keep the train counts (for the popularity baseline)."""
        if len(labels) != self._num_hashtag_names:
            raise ValueError(f"the data has {len(labels)} hashtags but the module was built for "
                             f"{self._num_hashtag_names}: link model.num_hashtags to data.num_hashtags")
        if not labels:
            return
        ids, att = name_token_ids(tokenizer, labels, self.hashtag_name_ids.shape[1])
        dev = self.hashtag_name_ids.device
        self.hashtag_name_ids.copy_(ids.to(dev))
        self.hashtag_name_attention.copy_(att.to(dev))
        self.hashtag_train_counts.copy_(torch.as_tensor(list(counts), dtype=torch.float32, device=dev))

    def _has_hashtag_names(self) -> bool:
        return self._num_hashtag_names > 0 and bool(self.hashtag_name_attention.any())

    def hashtag_scores(self, out: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``(B, H)`` hashtag scores of a forward output: the head's logits when there is a head, else
        the zero-shot cosine of ``out["video"]`` with the text-tower embeddings of the names; None when
        the module knows no hashtags."""
        if "hashtag_logits" in out:
            return out["hashtag_logits"]
        if not self._has_hashtag_names():
            return None
        names = self.model.encode_text({"text_ids": self.hashtag_name_ids,
                                        "text_attention": self.hashtag_name_attention})  # (H, D)
        return out["video"] @ names.T  # (B, H)

    def _hashtag_row(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The per-batch tensors the hashtag metrics need (empty without scores or targets)."""
        scores = self.hashtag_scores(out) if "hashtag_targets" in batch else None
        if scores is None:
            return {}
        return {"hashtag_scores": scores.detach().float().cpu(), "hashtag_targets": batch["hashtag_targets"].cpu()}

    def _hashtag_metrics(self, merged: dict[str, torch.Tensor]) -> dict[str, float]:
        """``hashtag_{p1,r5,map}`` of the model and ``hashtag_map_popularity`` (the baseline), over the
        rows with at least one label; empty when nothing was scored."""
        if "hashtag_scores" not in merged:
            return {}
        targets = merged["hashtag_targets"]
        metrics = {f"hashtag_{k}": v for k, v in tagging_metrics(merged["hashtag_scores"], targets).items()}
        if self._has_hashtag_names():
            popular = self.hashtag_train_counts.detach().float().cpu().expand(targets.shape[0], -1)  # (N, H)
            base = tagging_metrics(popular, targets)
            metrics["hashtag_map_popularity"] = base["map"]
        return metrics
