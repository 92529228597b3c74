"""Embedding store: round trip, resume after an interruption, Parquet export."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmemb.eval.store import EmbeddingStore, extract

INFO = {"model": "vit-tiny", "checkpoint": "epoch=3.ckpt", "dims": [8, 4]}


def _vectors(ids: list[str], dim: int, salt: int) -> np.ndarray:
    """Deterministic ``(len(ids), dim)`` vectors derived from the ids."""
    return np.stack([np.random.default_rng([int(i[2:]), salt]).normal(size=dim) for i in ids]).astype(np.float32)


def _embed(batch) -> dict:
    return {"video": torch.from_numpy(_vectors(batch["ids"], 8, 0)), "text": _vectors(batch["ids"], 4, 1)}


def _batches(n_batches: int = 10, size: int = 3) -> list[dict]:
    return [{"ids": [f"id{b * size + j}" for j in range(size)]} for b in range(n_batches)]


def test_round_trip_and_reopen(tmp_path):
    store = EmbeddingStore(tmp_path / "s", info=INFO)
    a, b = np.arange(6, dtype=np.float64).reshape(3, 2), np.ones((2, 2))
    store.append(["a", "b", "c"], {"emb": a})
    ids, arr = store.load("emb")
    assert isinstance(arr, np.memmap) and arr.dtype == np.float32  # single chunk: memory-mapped
    store.append(["d", "e"], {"emb": torch.tensor(b)})

    again = EmbeddingStore(tmp_path / "s", info=INFO)
    assert again.done_ids() == {"a", "b", "c", "d", "e"} and len(again) == 5
    assert again.dims == {"emb": 2} and again.info == INFO
    ids, arr = again.load("emb")
    assert ids == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(arr, np.concatenate([a, b]).astype(np.float32))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["n"] == 5 and manifest["dtype"] == "float32" and len(manifest["chunks"]) == 2
    assert EmbeddingStore(tmp_path / "s").info == INFO  # info=None: no check


def test_bad_appends_and_info_mismatch_raise(tmp_path):
    store = EmbeddingStore(tmp_path, info=INFO)
    store.append(["a"], {"emb": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="already stored.*'a'"):
        store.append(["a", "z"], {"emb": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="duplicate ids.*'y'"):
        store.append(["y", "y"], {"emb": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"must be \(2, D\).*\(3, 2\)"):
        store.append(["x", "y"], {"emb": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="differ"):
        store.append(["x"], {"emb": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="name 'a/b'"):
        store.append(["x"], {"a/b": np.zeros((1, 2))})
    with pytest.raises(KeyError, match="'nope'"):
        store.load("nope")
    with pytest.raises(ValueError, match="other"):
        EmbeddingStore(tmp_path, info={"model": "other"})
    assert len(EmbeddingStore(tmp_path)) == 1  # failed appends left nothing behind


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    reference = EmbeddingStore(tmp_path / "ref")
    assert extract(_batches(), _embed, reference, chunk_size=4, progress=False) == 30

    def flaky(batch):
        if batch["ids"][0] == "id18":  # batch 6: simulated crash
            raise RuntimeError("boom")
        return _embed(batch)

    store = EmbeddingStore(tmp_path / "run", info=INFO)
    with pytest.raises(RuntimeError, match="boom"):
        extract(_batches(), flaky, store, chunk_size=4, progress=False)
    stored_first = len(store)
    assert stored_first == 16  # 18 rows embedded, 4 full chunks flushed, 2 buffered rows lost
    (tmp_path / "run" / "chunk_00004.video.npy").write_bytes(b"orphan of a crashed write")

    resumed = EmbeddingStore(tmp_path / "run", info=INFO)
    assert extract(_batches(), _embed, resumed, chunk_size=4, progress=False) == 30 - stored_first
    for name in ("video", "text"):
        ids, arr = resumed.load(name)
        assert sorted(ids) == sorted(f"id{i}" for i in range(30)) and len(set(ids)) == 30  # each id once
        ref_ids, ref = reference.load(name)
        order = [ref_ids.index(i) for i in ids]
        np.testing.assert_array_equal(arr, ref[order])

    # a third run has nothing to do and never calls the model
    def never(batch):
        raise AssertionError(f"embed_fn called for {batch['ids']}")

    assert extract(_batches(), never, EmbeddingStore(tmp_path / "run"), chunk_size=4, progress=False) == 0


def test_partly_stored_and_repeated_ids_are_stored_once(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.append(["id1"], _embed({"ids": ["id1"]}))
    batches = [{"ids": ["id0", "id1", "id2"]}, {"ids": ["id2", "id3", "id3"]}]
    assert extract(batches, _embed, store, chunk_size=100, progress=False) == 3
    ids, arr = store.load("text")
    assert ids == ["id1", "id0", "id2", "id3"]
    np.testing.assert_array_equal(arr, _vectors(ids, 4, 1))


def test_embed_fn_with_changing_names_raises(tmp_path):
    outs = iter([{"a": np.zeros((1, 2))}, {"b": np.zeros((1, 2))}])
    with pytest.raises(ValueError, match=r"returned \['b'\], expected \['a'\]"):
        extract([{"ids": ["x"]}, {"ids": ["y"]}], lambda batch: next(outs), EmbeddingStore(tmp_path), progress=False)


def test_parquet_export_has_same_values(tmp_path):
    store = EmbeddingStore(tmp_path / "s", info=INFO)
    extract(_batches(4), _embed, store, chunk_size=5, progress=False)
    path = store.to_parquet(tmp_path / "out" / "emb.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["id", "text", "video"]
    assert json.loads(table.schema.metadata[b"mmemb_info"]) == INFO
    ids, video = store.load("video")
    assert table.column("id").to_pylist() == ids
    for name, dim in (("video", 8), ("text", 4)):
        col = table.column(name).combine_chunks()
        values = col.flatten().to_numpy().reshape(-1, dim)  # (N, D)
        np.testing.assert_array_equal(values, store.load(name)[1])
    only = pq.read_table(store.to_parquet(tmp_path / "v.parquet", names=["video"]))
    assert only.column_names == ["id", "video"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # temp file renamed away
