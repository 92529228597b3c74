"""``mmemb embed``: an export folder + videos and/or texts -> a Parquet file of embeddings.

Inputs (one of): a manifest (both modalities of every record, the text fields as in training), a folder
or glob of clips (ids = paths relative to the folder, :func:`mmemb.data.scan.find_clips`), a file of
texts (one per line, ids = line numbers from 1), or texts given on the command line (ids = the texts).

Rows (Parquet, one per id): ``id``; per embedded modality ``video`` / ``text`` (a fixed-size list of
float32, L2-normalised) and ``video_missing`` / ``text_missing``: where the modality is missing the
vector is **null** and this column says why (``no_clip``, a decode reason of
:data:`mmemb.data.decode.REASONS`, ``no_text``), never a zero vector, which an inner-product index
would score above every negative match; for clips also ``video_error`` / ``audio_error`` (the decode
reasons of each stream, ``no_audio`` for a silent clip: a video vector from one stream is kept) and,
for text inputs, ``input`` (the text).

Bad files are masked and counted as in training (:class:`mmemb.data.failures.FailureLog`, a summary at
the end). Resumable: rows are flushed every ``chunk_size`` ids into ``OUT.parts/``; a rerun skips the ids
already in ``OUT`` or its parts, then merges everything into ``OUT``. A file written with another
export is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.failures import FailureLog
from .format import CONFIG_FILE, ExportError
from .loader import ExportedModel, Runtime, load
from .preprocess import Preprocessor

__all__ = ["EmbedItem", "items_from", "embed_items", "embed"]

META_KEY = b"mmemb_embed"


@dataclass
class EmbedItem:
    """One row to embed: its id, its clip (``None`` = no clip) and its text fields (``None`` = no text)."""

    id: str
    video: str | None = None
    fields: list[str | None] | None = None
    input: str | None = None  # the raw text of a text input


def items_from(manifest: str | None = None, videos: str | None = None, texts_file: str | None = None,
               texts: Sequence[str] | None = None) -> tuple[list[EmbedItem], tuple[str, ...]]:
    """The items of exactly one input kind and the modalities to embed for it."""
    given = [x is not None and x != [] for x in (manifest, videos, texts_file, texts)]
    if sum(given) != 1:
        raise ExportError("give exactly one input: --manifest, --videos, --texts or --text")
    if manifest is not None:
        from ..data.manifest import read_manifest
        from ..data.vocab import record_texts

        records = read_manifest(manifest)
        return [EmbedItem(r.id, r.video, record_texts(r)) for r in records], ("video", "text")
    if videos is not None:
        from ..data.scan import find_clips

        return [EmbedItem(clip_id, str(path)) for clip_id, path in find_clips(videos)], ("video",)
    if texts_file is not None:
        path = Path(texts_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file of texts")
        lines = path.read_text(encoding="utf-8").splitlines()
        return [EmbedItem(str(i), None, [line.strip() or None], line) for i, line in enumerate(lines, 1)], ("text",)
    items = {t: EmbedItem(t, None, [t.strip() or None], t) for t in texts}  # ids = the texts (repeats once)
    return list(items.values()), ("text",)


class _Rows(Dataset):
    """Preprocesses one item per index (in DataLoader workers when there are any)."""

    def __init__(self, items: Sequence[EmbedItem], prep: Preprocessor, modalities: tuple[str, ...]):
        self.items, self.prep, self.modalities = list(items), prep, modalities

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        row: dict[str, Any] = {"ids": [item.id], "input": [item.input], "source": [item.video]}
        if "video" in self.modalities:
            row.update(self.prep.clips([item.video]))
        if "text" in self.modalities:
            row.update(self.prep.text_fields([item.fields or []]))
        return row


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        values = [r[key] for r in rows]
        out[key] = torch.cat(values) if torch.is_tensor(first) else [v for part in values for v in part]
    return out


def _identity(model: ExportedModel) -> str:
    """A fingerprint of the export (its config.json, which names the checkpoint and its parity), with
    ``-int8`` when its text graph is the int8 one (other text embeddings: not to be mixed in one file)."""
    digest = hashlib.sha256((model.folder / CONFIG_FILE).read_bytes()).hexdigest()[:16]
    return digest + ("-int8" if model.int8_text else "")


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _read_done(out: Path, identity: str, modalities: tuple[str, ...]) -> set[str]:
    """Ids already embedded into ``out`` or its parts by the same export and of the same modalities;
    another export or other modalities are an error."""
    import pyarrow.parquet as pq

    done: set[str] = set()
    files = ([out] if out.exists() else []) + sorted(_parts_dir(out).glob("part-*.parquet"))
    for path in files:
        try:
            table = pq.read_table(path, columns=["id"])
            meta = pq.read_schema(path).metadata or {}
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ExportError(f"{path}: not a readable Parquet file of mmemb embed ({exc}); move it away") from None
        info = json.loads(meta.get(META_KEY, b"{}"))
        if info.get("model") != identity:
            raise ExportError(f"{path} was written with another export ({info.get('model')}, this one is "
                              f"{identity}): choose another --out")
        if info.get("modalities") != list(modalities):
            raise ExportError(f"{path} holds {info.get('modalities')} embeddings, this input gives "
                              f"{list(modalities)}: choose another --out")
        done.update(table.column("id").to_pylist())
    return done


def _table(rows: dict[str, list], dim: int, meta: dict[str, Any]):
    import pyarrow as pa

    columns = {}
    for key, values in rows.items():
        if key in ("video", "text"):
            columns[key] = pa.array(values, type=pa.list_(pa.float32(), dim))
        else:
            columns[key] = pa.array(values, type=pa.string())
    table = pa.table(columns)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def embed_items(model: ExportedModel, items: Sequence[EmbedItem], modalities: tuple[str, ...], out: str | Path, *,
                batch_size: int = 32, workers: int = 0, chunk_size: int = 1024, threads: int | None = 1,
                show_progress: bool = True) -> dict[str, Any]:
    """Embed ``items`` with ``model`` into the Parquet file ``out`` (see the module docstring); returns
    ``out``, ``added``, ``skipped`` (already there), ``rows``, ``null`` (per modality), ``failures`` and
    ``summary`` (the decode failure table).

    ``threads``: torch intra-op threads of this process while it embeds (its decoding when ``workers`` is 0,
    and the torch encoders; ``None`` leaves torch's setting). One by default, as in the DataLoader workers:
    decoding and log-mel are many small operations, which more threads slow down (on the 2-core
    reference box with other jobs running, decoding a demo clip took 153 ms with 2 threads against
    6 ms with one), and with workers the other cores are theirs."""
    if threads is None:
        return _embed_items(model, items, modalities, out, batch_size, workers, chunk_size, show_progress)
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _embed_items(model, items, modalities, out, batch_size, workers, chunk_size, show_progress)
    finally:
        torch.set_num_threads(before)


def _embed_items(model: ExportedModel, items: Sequence[EmbedItem], modalities: tuple[str, ...], out: str | Path,
                 batch_size: int, workers: int, chunk_size: int, show_progress: bool) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from ..eval.report import progress

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    identity = _identity(model)
    meta = {"model": identity, "export": str(model.folder.resolve()), "dim": model.embed_dim,
            "modalities": list(modalities)}
    done = _read_done(out, identity, modalities)
    todo = [it for it in items if it.id not in done]
    parts = _parts_dir(out)
    failures = FailureLog()
    columns = ["id"] + [c for m in modalities for c in (m, f"{m}_missing")]
    if "video" in modalities:
        columns += ["video_error", "audio_error"]
    if "text" in modalities and "video" not in modalities:
        columns.append("input")
    rows: dict[str, list] = {c: [] for c in columns}
    null = {m: 0 for m in modalities}
    written = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0

    def flush() -> None:
        nonlocal written, rows
        if rows["id"]:
            parts.mkdir(exist_ok=True)
            pq.write_table(_table(rows, model.embed_dim, meta), parts / f"part-{written:05d}.parquet")
            written += 1
            rows = {c: [] for c in columns}

    loader = DataLoader(_Rows(todo, model.preprocessor, modalities), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate)
    bar = progress(loader, total=len(loader), desc=f"embedding {', '.join(modalities)}", unit="batch",
                   enabled=show_progress)
    for batch in bar:
        n = len(batch["ids"])
        rows["id"] += batch["ids"]
        if "video" in modalities:
            vec = model.encode_video(batch)  # (B, D)
            ok = batch["video_mask"] | batch.get("audio_mask", torch.zeros_like(batch["video_mask"]))  # (B,)
            for i in range(n):
                path = batch["source"][i] or batch["ids"][i]
                for modality, reason in (("video", batch["video_error"][i]), ("audio", batch["audio_error"][i])):
                    if reason is not None:
                        failures.record(path, modality, reason)
                for modality in ("video", "audio"):
                    if batch[f"{modality}_partial"][i] is not None:
                        failures.record(path, modality, "partial")
                missing = None if ok[i] else ("no_clip" if batch["source"][i] is None else batch["video_error"][i])
                rows["video"].append(None if missing else vec[i].tolist())
                rows["video_missing"].append(missing)
                rows["video_error"].append(batch["video_error"][i])
                rows["audio_error"].append(batch["audio_error"][i])
                null["video"] += missing is not None
        if "text" in modalities:
            vec = model.encode_text(batch)  # (B, D)
            for i in range(n):
                missing = None if batch["text_mask"][i] else "no_text"
                rows["text"].append(None if missing else vec[i].tolist())
                rows["text_missing"].append(missing)
                null["text"] += missing is not None
        if "input" in rows:
            rows["input"] += batch["input"]
        if len(rows["id"]) >= chunk_size:
            flush()
    flush()
    bar.close()
    sources = ([out] if out.exists() else []) + (sorted(parts.glob("part-*.parquet")) if parts.exists() else [])
    total = 0
    if sources:  # merge the earlier file and the new parts into OUT, one table at a time
        schema = _table({c: [] for c in columns}, model.embed_dim, meta).schema
        tmp = out.with_name(out.name + ".tmp")
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in sources:
                table = pq.read_table(path).select(columns).replace_schema_metadata(schema.metadata)
                writer.write_table(table.cast(schema))
                total += table.num_rows
        tmp.replace(out)
    if parts.exists():
        for p in parts.glob("part-*.parquet"):
            p.unlink()
        parts.rmdir()
    return {"out": str(out), "added": len(todo), "skipped": len(items) - len(todo), "rows": total, "null": null,
            "failures": failures.as_dict(), "summary": failures.summary()}


def embed(model_dir: str | Path, out: str | Path, *, manifest: str | None = None, videos: str | None = None,
          texts_file: str | None = None, texts: Sequence[str] | None = None, runtime: Runtime = "torch",
          batch_size: int = 32, workers: int = 0, chunk_size: int = 1024, threads: int | None = 1,
          show_progress: bool = True, int8_text: bool = False) -> dict[str, Any]:
    """Load the export ``model_dir`` and embed one input kind into ``out`` (:func:`embed_items`; ``threads``
    also sets the ONNX Runtime sessions' intra-op threads; ``int8_text``: the int8 text graph, with
    ``runtime="onnx"``)."""
    items, modalities = items_from(manifest, videos, texts_file, texts)
    model = load(model_dir, runtime=runtime, threads=threads, int8_text=int8_text)
    return embed_items(model, items, modalities, out, batch_size=batch_size, workers=workers, chunk_size=chunk_size,
                       threads=threads, show_progress=show_progress)
