"""A training sampler whose shuffle depends only on a seed and the epoch (see :mod:`mmemb.lit.resume`
for why a resumed run needs that)."""

from __future__ import annotations

import os
from typing import Iterator, Sized

import torch
from torch.utils.data import RandomSampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(RandomSampler):
    """A shuffle that depends only on ``seed`` and the epoch, like ``DistributedSampler``'s, so that a run
    resumed from an end-of-epoch checkpoint sees the same order as an uninterrupted one.

    Lightning calls :meth:`set_epoch` before each training epoch. Being a ``RandomSampler``, it counts
    as shuffled for Lightning, which replaces it under DDP by its ``DistributedSampler(shuffle=True,
    seed=<seed_everything seed>)``.

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed; default the ``seed_everything`` seed (``PL_GLOBAL_SEED``), else 0.
        epoch: the epoch to shuffle for until :meth:`set_epoch` is called.
    """

    def __init__(self, data_source: Sized, seed: int | None = None, epoch: int = 0):
        super().__init__(data_source)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        # drawn at the first index (lazily): with num_workers=0 that is after Lightning's set_epoch
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=g).tolist()  # (N,) indices
