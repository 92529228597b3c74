"""Label spelling and vocabularies: :func:`normalize_label` gives one spelling per label,
:class:`LabelVocab` / :func:`build_label_vocab` map the frequent labels (hashtags, queries) to ids."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["LabelVocab", "build_label_vocab", "normalize_label", "check_label_ids"]


# ----------------------------------------------------------------------------- normalization


def _is_edge_junk(ch: str) -> bool:
    """Characters stripped from both ends of a label: whitespace, '#', punctuation, format/control chars."""
    return ch.isspace() or ch == "#" or unicodedata.category(ch)[0] in ("P", "C", "Z")


def normalize_label(label: str) -> str:
    """One spelling per label: NFKC (full-width ``＃ＡＢＣ`` -> ``#ABC``), lowercase, inner whitespace
    collapsed, and whitespace, ``#``, punctuation and control characters stripped from both ends.

    ``" #Python！ "`` -> ``"python"``; ``"#情感视频#"`` -> ``"情感视频"``; ``"中医·中药"`` unchanged.
    Idempotent; may return ``""`` (callers drop empty labels).
    """
    text = " ".join(unicodedata.normalize("NFKC", label).lower().split())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


# ----------------------------------------------------------------------------- vocabulary


@dataclass
class LabelVocab:
    """Labels kept for training, most frequent first; a label's id is its position in ``labels``."""

    labels: list[str]  # id -> label
    counts: list[int]  # id -> number of samples that carried the label when the vocabulary was built
    min_freq: int  # the frequency threshold used to build it
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.counts):
            raise ValueError(f"LabelVocab: {len(self.labels)} labels but {len(self.counts)} counts")
        self._index = {}
        for i, label in enumerate(self.labels):
            if label in self._index:
                raise ValueError(f"LabelVocab: duplicate label {label!r} at ids {self._index[label]} and {i}")
            self._index[label] = i

    def index(self, label: str) -> int | None:
        """Id of ``label`` (exact match, normalize first), ``None`` when it is not in the vocabulary."""
        return self._index.get(label)

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Ids of the known ``labels`` in order; unknown labels are dropped, repeats kept once."""
        ids = (self._index.get(label) for label in labels)
        return list(dict.fromkeys(i for i in ids if i is not None))

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def save(self, path: str | Path) -> Path:
        """Write ``{"labels", "counts", "min_freq"}`` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"labels": self.labels, "counts": self.counts, "min_freq": self.min_freq}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LabelVocab":
        """Read what :meth:`save` wrote; errors name the file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"label vocabulary not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(data["labels"]), [int(c) for c in data["counts"]], int(data["min_freq"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid label vocabulary ({exc})") from None


def build_label_vocab(
    label_lists: Iterable[Sequence[str]], min_freq: int = 5, max_size: int | None = None
) -> LabelVocab:
    """Labels carried by at least ``min_freq`` samples (a label counts once per sample; empty labels are
    ignored), ordered by count (desc) then label, cut to ``max_size``."""
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    if max_size is not None and max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    counts: Counter = Counter()
    for labels in label_lists:
        counts.update({label for label in labels if label})
    kept = sorted(((c, label) for label, c in counts.items() if c >= min_freq), key=lambda x: (-x[0], x[1]))
    if max_size is not None:
        kept = kept[:max_size]
    return LabelVocab([label for _, label in kept], [c for c, _ in kept], min_freq)


def check_label_ids(ids: Sequence[int], num_labels: int, where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) when an id lies outside ``[0, num_labels)``."""
    for i in ids:
        if not 0 <= i < num_labels:
            raise ValueError(f"{where}: label id {i} out of range [0, {num_labels})")
