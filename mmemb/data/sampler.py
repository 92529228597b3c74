"""The training sampler: a shuffle that depends only on a seed and the epoch, sharded over DDP ranks,
and able to start an epoch part-way, so that a run resumed from any checkpoint (end of epoch or
mid-epoch) sees the same batches in the same order as an uninterrupted one (see
:mod:`mmemb.lit.resume`)."""

from __future__ import annotations

import os
from typing import Iterator, Sized

from torch.utils.data import DistributedSampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(DistributedSampler):
    """``DistributedSampler``'s seed + epoch shuffle (padded to equal shards, rank ``r`` takes every
    ``num_replicas``-th index), with a one-shot :meth:`skip` to resume an epoch after its first
    samples.

    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of substituting its own (so
    the skip holds there too); with one process the order is that of ``randperm(seed + epoch)``.
    Lightning calls :meth:`set_epoch` before each training epoch.

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed; default the ``seed_everything`` seed (``PL_GLOBAL_SEED``), else 0.
        epoch: the epoch to shuffle for until :meth:`set_epoch` is called.
        num_replicas, rank: the DDP world size and this process's rank.
    """

    def __init__(self, data_source: Sized, seed: int | None = None, epoch: int = 0, num_replicas: int = 1,
                 rank: int = 0):
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        super().__init__(data_source, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.data_source = data_source
        self.epoch = int(epoch)
        self._skip = 0

    def skip(self, num_samples: int) -> None:
        """Leave out the first ``num_samples`` indices of this rank in the next pass only."""
        if num_samples < 0:
            raise ValueError(f"cannot skip a negative number of samples ({num_samples})")
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        # drawn when the pass starts (lazily): after set_epoch, also with worker processes
        indices = list(super().__iter__())  # (num_samples,) this rank's indices of the epoch's permutation
        yield from indices[skip:]
