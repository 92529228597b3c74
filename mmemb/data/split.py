"""The train/validation/test split: a deterministic function of the video id, so the split of a video
does not depend on which other videos are loaded (a manifest that grows keeps every old video where it
was) and is the same on every machine. The data module and the real-data benchmarks both split with
:func:`split_of`, so a model trained on a split is scored on that split's test videos."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal, Sequence, TypeVar

__all__ = ["Split", "SplitConfig", "split_of", "split_records"]

Split = Literal["train", "val", "test"]
R = TypeVar("R")


@dataclass
class SplitConfig:
    """A deterministic split by a hash of the video id (stable when the manifest grows)."""

    val_fraction: float = 0.1  # share of videos in validation
    test_fraction: float = 0.1  # share of videos in test
    seed: int = 0  # changes which videos land where

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"bad split fractions: val={self.val_fraction}, test={self.test_fraction}")


def split_of(video_id: str, cfg: SplitConfig) -> Split:
    """Which split ``video_id`` belongs to: ``u = crc32(f"{seed}:{video_id}") / 2**32`` is test below
    ``test_fraction``, validation below ``test_fraction + val_fraction``, train above."""
    u = zlib.crc32(f"{cfg.seed}:{video_id}".encode()) / 2**32  # uniform in [0, 1)
    if u < cfg.test_fraction:
        return "test"
    if u < cfg.test_fraction + cfg.val_fraction:
        return "val"
    return "train"


def split_records(records: Sequence[R], cfg: SplitConfig) -> dict[Split, list[R]]:
    """``records`` (anything with an ``id``) by split, each in its original order."""
    out: dict[Split, list[R]] = {"train": [], "val": [], "test": []}
    for r in records:
        out[split_of(r.id, cfg)].append(r)  # type: ignore[attr-defined]
    return out
