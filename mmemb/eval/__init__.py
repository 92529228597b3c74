"""Evaluation: retrieval, tagging and correspondence metrics, chunked top-K, embedding stores,
ensembles (pure numpy, no Lightning). ``mmemb.eval.probe`` (scikit-learn) is imported on use."""

from .av import av_correspondence
from .ensemble import ensemble
from .metrics import (
    category_chance_recall_at_1,
    category_relevance,
    first_relevant_rank,
    identity_relevance,
    instance_chance_recall_at_k,
    median_rank,
    recall_at_k,
    retrieval_metrics,
)
from .store import EmbeddingStore, extract
from .tagging import label_popularity_scores, tagging_metrics
from .topk import chunked_topk

__all__ = [
    "EmbeddingStore",
    "av_correspondence",
    "category_chance_recall_at_1",
    "category_relevance",
    "chunked_topk",
    "ensemble",
    "extract",
    "first_relevant_rank",
    "identity_relevance",
    "instance_chance_recall_at_k",
    "label_popularity_scores",
    "median_rank",
    "recall_at_k",
    "retrieval_metrics",
    "tagging_metrics",
]
