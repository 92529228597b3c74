"""Evaluation: retrieval metrics (pure numpy, no Lightning)."""

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

__all__ = [
    "category_chance_recall_at_1",
    "category_relevance",
    "first_relevant_rank",
    "identity_relevance",
    "instance_chance_recall_at_k",
    "median_rank",
    "recall_at_k",
    "retrieval_metrics",
]
