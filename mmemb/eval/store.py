"""An append-only, resumable on-disk store of embeddings, and an extraction loop that fills it.

Layout of a store directory::

    manifest.json               finished chunks, names -> dims, dtype, model/checkpoint info
    chunk_00000.ids.json        the ids of chunk 0 (a JSON list of strings)
    chunk_00000.<name>.npy      float32 (n, D) embeddings of chunk 0, one file per name
    ...

Every file is written to a temporary name and renamed into place, and a chunk counts as stored
only once ``manifest.json`` (rewritten last, atomically) lists it. A crash therefore leaves at worst
orphan chunk files that the next append overwrites, and :func:`extract` resumes from
:meth:`EmbeddingStore.done_ids` storing every id exactly once.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .metrics import _np

__all__ = ["ChunkInfo", "EmbeddingStore", "extract"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
DTYPE = "float32"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class ChunkInfo:
    """One finished chunk: its index (file prefix) and row count."""

    index: int
    n: int

    @property
    def prefix(self) -> str:
        return f"chunk_{self.index:05d}"


@dataclass
class _Manifest:
    dims: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    chunks: list[ChunkInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "dtype": DTYPE,
            "dims": self.dims,
            "info": self.info,
            "n": sum(c.n for c in self.chunks),
            "chunks": [{"index": c.index, "n": c.n} for c in self.chunks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path) -> "_Manifest":
        if data.get("version") != FORMAT_VERSION or data.get("dtype") != DTYPE:
            raise ValueError(f"{path}: unsupported store version {data.get('version')!r} / dtype {data.get('dtype')!r}")
        chunks = [ChunkInfo(int(c["index"]), int(c["n"])) for c in data["chunks"]]
        return cls(dims={k: int(v) for k, v in data["dims"].items()}, info=dict(data["info"]), chunks=chunks)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_float32_2d(name: str, value, n: int) -> np.ndarray:
    arr = np.ascontiguousarray(_np(value), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"embedding {name!r} must be ({n}, D) to match the ids, got shape {arr.shape}")
    return arr


class EmbeddingStore:
    """Chunked embedding store in ``directory`` (created if missing).

    ``info`` (model name, checkpoint, config...; JSON-serialisable) is recorded in a new store; when
    reopening an existing store with a non-``None`` ``info`` that differs, a ``ValueError`` is raised
    so that embeddings from two models are never mixed.
    """

    def __init__(self, directory: str | os.PathLike, info: Mapping[str, Any] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / MANIFEST
        if path.exists():
            self._manifest = _Manifest.from_json(json.loads(path.read_text()), path)
            stored = self._manifest.info
            if info is not None and json.loads(json.dumps(dict(info))) != stored:
                raise ValueError(f"{self.directory}: store was written with info {stored}, not {dict(info)}")
        else:
            self._manifest = _Manifest(info=json.loads(json.dumps(dict(info or {}))))
            self._write_manifest()
        self._done: set[str] = set()
        for chunk in self._manifest.chunks:
            self._done.update(self._chunk_ids(chunk))

    # -- metadata -----------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        return dict(self._manifest.info)

    @property
    def dims(self) -> dict[str, int]:
        """Embedding name -> dimension (empty until the first chunk)."""
        return dict(self._manifest.dims)

    @property
    def chunks(self) -> list[ChunkInfo]:
        return list(self._manifest.chunks)

    def __len__(self) -> int:
        return sum(c.n for c in self._manifest.chunks)

    def done_ids(self) -> set[str]:
        """Ids already stored (a copy): an extractor skips these when resuming."""
        return set(self._done)

    # -- writing ------------------------------------------------------------------------------
    def append(self, ids: Sequence[str], embeddings: Mapping[str, Any]) -> ChunkInfo:
        """Store one chunk: ``ids`` (n unique strings not stored yet) and ``{name: (n, D)}`` arrays
        (numpy or torch, cast to float32). Every chunk must carry the same names and dims."""
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            bad = next(i for i in ids if not isinstance(i, str))
            raise ValueError(f"ids must be strings, got {bad!r} ({type(bad).__name__})")
        if not ids:
            raise ValueError("cannot append an empty chunk")
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate ids in chunk: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
        stored = [i for i in ids if i in self._done]
        if stored:
            raise ValueError(f"{len(stored)} id(s) already stored, e.g. {stored[:5]}")
        arrays = {name: _as_float32_2d(name, value, len(ids)) for name, value in embeddings.items()}
        dims = {name: a.shape[1] for name, a in arrays.items()}
        for name in dims:
            if not _NAME_RE.match(name):
                raise ValueError(f"embedding name {name!r} must match {_NAME_RE.pattern}")
        if not dims:
            raise ValueError("embeddings is empty: need at least one named array")
        if self._manifest.chunks and dims != self._manifest.dims:
            raise ValueError(f"chunk names/dims {dims} differ from the store's {self._manifest.dims}")

        chunk = ChunkInfo(index=len(self._manifest.chunks), n=len(ids))
        for name, arr in arrays.items():
            _atomic_write(self.directory / f"{chunk.prefix}.{name}.npy", lambda f, arr=arr: np.save(f, arr))
        _atomic_write(self.directory / f"{chunk.prefix}.ids.json", lambda f: json.dump(ids, f), mode="w")
        self._manifest.dims = dims
        self._manifest.chunks.append(chunk)
        try:
            self._write_manifest()
        except BaseException:
            self._manifest.chunks.pop()
            raise
        self._done.update(ids)
        return chunk

    def _write_manifest(self) -> None:
        data = self._manifest.to_json()
        _atomic_write(self.directory / MANIFEST, lambda f: json.dump(data, f, indent=1), mode="w")

    # -- reading ------------------------------------------------------------------------------
    def _chunk_ids(self, chunk: ChunkInfo) -> list[str]:
        ids = json.loads((self.directory / f"{chunk.prefix}.ids.json").read_text())
        if len(ids) != chunk.n:
            raise ValueError(f"{self.directory}: {chunk.prefix} has {len(ids)} ids, manifest says {chunk.n}")
        return ids

    def _chunk_array(self, chunk: ChunkInfo, name: str) -> np.ndarray:
        arr = np.load(self.directory / f"{chunk.prefix}.{name}.npy", mmap_mode="r")  # (n, D) read-only memmap
        if arr.shape != (chunk.n, self._manifest.dims[name]):
            raise ValueError(f"{self.directory}: {chunk.prefix}.{name} has shape {arr.shape}")
        return arr

    def iter_chunks(self, name: str) -> Iterable[tuple[list[str], np.ndarray]]:
        """``(ids, (n, D) memory-mapped array)`` of every chunk in order."""
        if name not in self._manifest.dims:
            raise KeyError(f"no embedding {name!r} in {self.directory}; have {sorted(self._manifest.dims)}")
        for chunk in self._manifest.chunks:
            yield self._chunk_ids(chunk), self._chunk_array(chunk, name)

    def load(self, name: str) -> tuple[list[str], np.ndarray]:
        """All ids and the ``(N, D)`` float32 array of ``name``, in append order. A single-chunk
        store returns a read-only memory map; several chunks are concatenated in memory."""
        parts = list(self.iter_chunks(name))
        ids = [i for chunk_ids, _ in parts for i in chunk_ids]
        if not parts:
            return ids, np.zeros((0, self._manifest.dims[name]), np.float32)
        if len(parts) == 1:
            return ids, parts[0][1]
        return ids, np.concatenate([a for _, a in parts], axis=0)  # (N, D)

    def to_parquet(self, path: str | os.PathLike, names: Sequence[str] | None = None) -> Path:
        """Export to Parquet, one row group per chunk: an ``id`` string column and, per embedding
        name, a ``fixed_size_list<float32>[D]`` column. Written atomically; returns the path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = sorted(self._manifest.dims) if names is None else list(names)
        for name in names:
            if name not in self._manifest.dims:
                raise KeyError(f"no embedding {name!r} in {self.directory}; have {sorted(self._manifest.dims)}")
        schema = pa.schema(
            [pa.field("id", pa.string())]
            + [pa.field(n, pa.list_(pa.float32(), self._manifest.dims[n])) for n in names],
            metadata={"mmemb_info": json.dumps(self._manifest.info)},
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(f) -> None:
            with pq.ParquetWriter(f, schema) as writer:
                for chunk in self._manifest.chunks:
                    columns = [pa.array(self._chunk_ids(chunk), pa.string())]
                    for name in names:
                        flat = pa.array(np.asarray(self._chunk_array(chunk, name)).reshape(-1))  # (n * D,)
                        columns.append(pa.FixedSizeListArray.from_arrays(flat, self._manifest.dims[name]))
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))

        _atomic_write(path, write)
        return path


def _batch_ids(batch: Mapping[str, Any]) -> list[str]:
    if "ids" not in batch:
        raise KeyError(f"batch has no 'ids' key; keys: {sorted(batch)}")
    return [str(i) for i in batch["ids"]]


def _duplicates_mask(ids: Sequence[str]) -> np.ndarray:
    """``(B,)`` True for every repeat of an id after its first occurrence in ``ids``."""
    first: set[str] = set()
    mask = np.zeros(len(ids), dtype=bool)
    for j, i in enumerate(ids):
        mask[j] = i in first
        first.add(i)
    return mask


def extract(
    batches: Iterable[Mapping[str, Any]],
    embed_fn: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    store: EmbeddingStore,
    chunk_size: int = 4096,
    progress: bool = True,
) -> int:
    """Embed ``batches`` into ``store``, resuming where a previous run stopped. Returns rows added.

    Each batch is a mapping with an ``"ids"`` sequence; ``embed_fn(batch)`` returns
    ``{name: (B, D)}`` tensors/arrays. Batches whose ids are all stored are skipped without calling
    ``embed_fn``; in partly stored batches (and for ids repeated within this run) only the new rows
    are kept. Rows are buffered and flushed as chunks of ``chunk_size`` rows (plus a last, smaller
    one); rows buffered when an exception interrupts the loop are not stored and are recomputed on
    the next run.
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    seen = store.done_ids()
    buf_ids: list[str] = []
    buf: dict[str, list[np.ndarray]] = {}
    added = 0

    def flush(n: int) -> None:
        nonlocal buf_ids, buf, added
        arrays = {name: np.concatenate(parts, axis=0) for name, parts in buf.items()}  # (buffered, D)
        store.append(buf_ids[:n], {name: a[:n] for name, a in arrays.items()})
        added += n
        buf_ids = buf_ids[n:]
        buf = {name: [a[n:]] for name, a in arrays.items()}

    total = len(batches) if hasattr(batches, "__len__") else None
    with tqdm(batches, total=total, desc="embedding", unit="batch", disable=not progress) as bar:
        for batch in bar:
            ids = _batch_ids(batch)
            keep = np.array([i not in seen for i in ids], dtype=bool)
            keep &= ~_duplicates_mask(ids)
            if not keep.any():
                continue
            out = embed_fn(batch)
            names = set(store.dims) or set(buf)
            if names and set(out) != names:
                raise ValueError(f"embed_fn returned {sorted(out)}, expected {sorted(names)}")
            for name, value in out.items():
                buf.setdefault(name, []).append(_as_float32_2d(name, value, len(ids))[keep])
            new = [i for i, k in zip(ids, keep) if k]
            buf_ids.extend(new)
            seen.update(new)
            while len(buf_ids) >= chunk_size:
                flush(chunk_size)
            bar.set_postfix(stored=len(store), refresh=False)
    if buf_ids:
        flush(len(buf_ids))
    return added

