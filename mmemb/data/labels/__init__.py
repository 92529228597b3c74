"""Label vocabularies, hashtag cleaning, label weights and the tag co-occurrence graph.

* :mod:`.vocabulary`: :func:`normalize_label` (one spelling per label: NFKC, lowercase, no surrounding
  ``#``/punctuation), :class:`LabelVocab` / :func:`build_label_vocab` (frequent labels -> ids).
* :mod:`.cleaning`: :func:`clean_hashtags` removes boilerplate hashtags (rules and spread over
  categories), reported in a :class:`CleaningReport`.
* :mod:`.weights`: :func:`label_idf`, :func:`label_weights` (the mass IDF x clicks x freshness of
  each positive) and :func:`normalize_weights` (masses -> loss weights by :data:`LabelWeighting`:
  ``softmax``, ``bce_global`` or ``uniform``).
* :mod:`.graph`: :class:`TagGraph` / :func:`build_tag_graph`, tag co-occurrence edges (NPMI, PMI or
  P(j|i)) for a GCN.
"""

from .cleaning import DEFAULT_PATTERNS, CleaningConfig, CleaningReport, clean_hashtags
from .graph import GraphMeasure, TagGraph, build_tag_graph
from .vocabulary import LabelVocab, build_label_vocab, normalize_label
from .weights import (
    LABEL_WEIGHTINGS,
    LabelWeighting,
    freshness,
    label_idf,
    label_weights,
    mean_positive_mass,
    normalize_weights,
)

__all__ = [
    "LabelVocab",
    "build_label_vocab",
    "normalize_label",
    "DEFAULT_PATTERNS",
    "CleaningConfig",
    "CleaningReport",
    "clean_hashtags",
    "label_idf",
    "label_weights",
    "LabelWeighting",
    "LABEL_WEIGHTINGS",
    "freshness",
    "mean_positive_mass",
    "normalize_weights",
    "GraphMeasure",
    "TagGraph",
    "build_tag_graph",
]
