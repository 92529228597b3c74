"""Streaming sharded corpora for data larger than memory.

Shards are plain tar files in the WebDataset layout (``<key>.json`` holds the manifest record,
``<key>.<ext>`` the clip bytes), so the ``webdataset`` library and ``tar`` read them too. An index
``shards.json`` lists each shard with its sample count.

:class:`ShardedVideoDataset` streams them: shards are shuffled per epoch with a seed that all
ranks share, dealt round-robin to DDP ranks, then to the DataLoader workers of each rank, so every
(rank, worker) pair reads a disjoint set of shards. Every rank yields the same number of samples
per epoch (the smallest rank's count), so DDP never waits on a rank that ran out.

A run resumed mid-epoch continues where it stopped (:meth:`ShardedVideoDataset.resume_after`): the
DataLoader takes batches from its workers in turn, passing over a worker that has run out, so after
``k`` batches each worker has given a known number of them and it is a known worker's turn
(:func:`batches_given`). The resumed pass, whose loader starts again at worker 0, rotates the workers'
parts so that its worker 0 plays the one whose turn it was, and each reads past what its part had given
(without decoding it).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .decode import DecodeConfig
from .manifest import VideoRecord, parse_record
from .vocab import TextConfig, Vocabularies

__all__ = ["write_shards", "read_shard_index", "ShardInfo", "ShardedVideoDataset", "rank_shards"]

INDEX_NAME = "shards.json"


@dataclass(frozen=True)
class ShardInfo:
    path: str  # absolute path of the tar file
    num_samples: int


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_shards(records: Sequence[VideoRecord], out_dir: str | Path, samples_per_shard: int = 256,
                 progress: bool = True) -> list[ShardInfo]:
    """Pack records and their clip bytes into WebDataset tar shards plus a ``shards.json`` index.

    A record whose clip is missing is still written (without clip bytes): it will be masked, not
    lost. Keys are ``{position:08d}`` so that ids with dots or slashes stay safe.
    """
    from tqdm.auto import tqdm

    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: list[ShardInfo] = []
    num_shards = math.ceil(len(records) / samples_per_shard)
    bar = tqdm(total=len(records), desc="writing shards", unit="video", disable=not progress)
    for s in range(num_shards):
        chunk = records[s * samples_per_shard:(s + 1) * samples_per_shard]
        path = out_dir / f"shard-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i, record in enumerate(chunk):
                key = f"{s * samples_per_shard + i:08d}"
                meta = record.to_json()
                meta.pop("video", None)
                if record.video and not os.path.isfile(record.video):
                    meta["video"] = str(Path(record.video).resolve())  # kept so the loader counts it missing
                elif record.video:
                    ext = Path(record.video).suffix.lstrip(".").lower() or "bin"
                    meta["video_ext"] = ext
                    _add_bytes(tar, f"{key}.{ext}", Path(record.video).read_bytes())
                _add_bytes(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                bar.update(1)
        infos.append(ShardInfo(str(path), len(chunk)))
    bar.close()
    index = {"shards": [{"path": Path(i.path).name, "num_samples": i.num_samples} for i in infos]}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return infos


def read_shard_index(path: str | Path) -> list[ShardInfo]:
    """Shards of a folder (its ``shards.json``) or of an index file itself."""
    path = Path(path)
    index_path = path / INDEX_NAME if path.is_dir() else path
    if not index_path.exists():
        raise FileNotFoundError(f"no shard index at {index_path} (write one with `mmemb data write-shards`)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        return [ShardInfo(str(index_path.parent / s["path"]), int(s["num_samples"])) for s in index["shards"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{index_path}: malformed shard index ({exc})") from None


def iter_shard(path: str) -> Iterator[tuple[VideoRecord, bytes | None]]:
    """Yield ``(record, clip_bytes)`` from one tar shard, in order."""
    pending: dict[str, dict] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            entry = pending.setdefault(key, {})
            entry[ext] = tar.extractfile(member).read()
            meta = entry.get("json")
            if meta is None:
                continue
            meta = json.loads(meta)
            video_ext = meta.pop("video_ext", None)
            if video_ext is not None and video_ext not in entry:
                continue  # clip bytes come after the json in this tar: wait for them
            record = parse_record(meta, Path(path).parent)
            yield record, entry.get(video_ext) if video_ext else None
            del pending[key]


def rank_shards(shards: Sequence[ShardInfo], rank: int, world_size: int, epoch: int, seed: int,
                shuffle: bool) -> list[ShardInfo]:
    """The shards of one rank for one epoch: a shared (seeded) shuffle, then every world_size-th."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    order = list(shards)
    if shuffle:
        random.Random(seed * 100_003 + epoch).shuffle(order)
    return order[rank::world_size]


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def batches_given(counts: Sequence[int], batch_size: int, batches: int) -> tuple[list[int], int]:
    """How many batches each DataLoader worker has given after the loader's first ``batches`` batches, and
    whose turn is next, when worker ``w`` yields ``counts[w]`` samples (``ceil(counts[w] / batch_size)``
    batches, the last one partial): the loader takes the workers' batches in turn, passing over a worker
    that has run out."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    left = [-(-int(c) // batch_size) for c in counts]  # batches each worker has
    given, turn = [0] * len(left), 0
    remaining = min(int(batches), sum(left))
    while remaining > 0:
        if given[turn] < left[turn]:
            given[turn] += 1
            remaining -= 1
        turn = (turn + 1) % len(left)
    return given, turn


class ShardedVideoDataset(IterableDataset):
    """Streams samples from WebDataset shards, disjoint across DDP ranks and DataLoader workers.

    ``rank``/``world_size`` default to torch.distributed (or the RANK/WORLD_SIZE variables); pass
    them explicitly to simulate ranks. Call :meth:`set_epoch` each epoch to reshuffle shards.
    """

    def __init__(self, shards: Sequence[ShardInfo], vocabs: Vocabularies, decode: DecodeConfig, text: TextConfig,
                 train: bool, rank: int | None = None, world_size: int | None = None, seed: int = 0,
                 shuffle_buffer: int = 64, half_life_days: float | None = None, now: float | None = None):
        self.shards = list(shards)
        self.vocabs = vocabs
        self.decode = decode
        self.text = text
        self.train = train
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else rank
        self.world_size = dist_world if world_size is None else world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.half_life_days = half_life_days
        self.now = now
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (batches, batch_size) to pass over in the next pass
        if len(self.shards) < self.world_size:
            raise ValueError(f"{len(self.shards)} shards cannot feed {self.world_size} ranks: write smaller shards")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_after(self, batches: int, batch_size: int) -> None:
        """Let the next pass (the next ``iter()``, in the main process or as the workers start) begin after
        its first ``batches`` batches of ``batch_size``, as a DataLoader of this dataset would have given
        them: each worker reads past its share without decoding it (the samples' random draws keep their
        indices). Call :meth:`clear_resume` once the pass has started; ``batches`` past the epoch's end
        give an empty pass."""
        if batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        self._resume = (int(batches), int(batch_size)) if batches else None

    def clear_resume(self) -> None:
        self._resume = None

    def samples_per_rank(self) -> int:
        """Samples every rank yields per epoch: the minimum over ranks of their shards' total."""
        counts = []
        for r in range(self.world_size):
            mine = rank_shards(self.shards, r, self.world_size, self.epoch, self.seed, self.train)
            counts.append(sum(s.num_samples for s in mine))
        return min(counts)

    def __len__(self) -> int:
        return self.samples_per_rank()

    def worker_quotas(self, num_workers: int) -> list[int]:
        """How many samples each of ``num_workers`` workers yields this epoch: the rank's quota dealt in
        proportion to the samples of the workers' shards, rounded so that it sums up."""
        mine = rank_shards(self.shards, self.rank, self.world_size, self.epoch, self.seed, self.train)
        quota_total = self.samples_per_rank()
        holdings = [sum(s.num_samples for s in mine[w::num_workers]) for w in range(num_workers)]
        total = sum(holdings) or 1
        quotas = [quota_total * h // total for h in holdings]
        for w in range(quota_total - sum(quotas)):
            quotas[w % num_workers] += 1
        return [min(q, h) for q, h in zip(quotas, holdings)]

    def _worker_plan(self) -> tuple[list[ShardInfo], int, int]:
        """This worker's shards, how many samples it may yield (so the rank total is exact) and how many of
        them a resumed pass reads past."""
        mine = rank_shards(self.shards, self.rank, self.world_size, self.epoch, self.seed, self.train)
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        quotas = self.worker_quotas(num_workers)
        part, skip = worker, 0
        if self._resume is not None:
            batches, batch_size = self._resume
            given, turn = batches_given(quotas, batch_size, batches)
            part = (worker + turn) % num_workers  # the loader starts at worker 0: it plays the part whose turn it was
            skip = min(quotas[part], given[part] * batch_size)
        return mine[part::num_workers], quotas[part], skip

    def _records(self, shards: list[ShardInfo]) -> Iterator[tuple[VideoRecord, bytes | None]]:
        rng = random.Random(self.seed * 7_919 + self.epoch * 131 + self.rank)
        buffer: list[tuple[VideoRecord, bytes | None]] = []
        for shard in shards:
            for item in iter_shard(shard.path):
                if self.shuffle_buffer <= 1:
                    yield item
                    continue
                buffer.append(item)
                if len(buffer) >= self.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        # the plan is read now, not at the first sample: the loader clears a resume right after iter()
        return self._samples(*self._worker_plan())

    def _samples(self, shards: list[ShardInfo], quota: int, skip: int) -> Iterator[dict]:
        from .dataset import encode_record, sample_generator

        for i, (record, clip) in enumerate(self._records(shards)):
            if i >= quota:
                break
            if i < skip:  # given before the checkpoint: read past, not decoded
                continue
            generator = sample_generator(self.seed, self.epoch, i, record.id) if self.train else None
            source = io.BytesIO(clip) if clip is not None else None
            yield encode_record(record, self.vocabs, self.decode, self.text, self.train, generator,
                                self.half_life_days, self.now, video_source=source)
