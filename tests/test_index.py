"""The faiss index factory, the sweep and its outputs, on tiny clustered data (2,000 x 32)."""

import csv
import json
import logging

import faiss
import numpy as np
import pytest

from mmemb.index import (
    IndexSpec,
    SweepConfig,
    build_index,
    docs_scanned_per_query,
    gpu_available,
    index_memory_bytes,
    ivf_docs_scanned,
    load_index,
    markdown_table,
    pareto_front,
    plot_recall_latency,
    recall_at_k,
    run_sweep,
    save_index,
    search,
    set_search_params,
    target_report,
    write_csv,
    write_json,
)
from mmemb.index.sweep import exact_topk, format_target_report

D = 32
SMALL_PQ = {"pq_bytes": 8, "nbits": 4}  # 16 centroids per sub-quantizer: trains well on 2,000 vectors


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """One OpenMP thread: faiss spin-waits badly on a small, shared machine."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """1,900 database vectors and 100 held-out queries from 20 gaussian clusters, unit norm."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, D)).astype(np.float32)
    x = centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:1900], x[1900:]


SPECS = [
    IndexSpec("flat"),
    IndexSpec("ivf_flat", nlist=16, nprobe=4),
    IndexSpec("ivf_pq", nlist=16, nprobe=4, **SMALL_PQ),
    IndexSpec("opq_ivf_pq", nlist=16, nprobe=4, **SMALL_PQ),
    IndexSpec("opq_ivf_pq", nlist=16, nprobe=4, refine=4, **SMALL_PQ),
    IndexSpec("hnsw", hnsw_m=8, ef_search=32),
    IndexSpec("ivf_flat", nlist=16, nprobe=4, metric="l2"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.metric}")
def test_build_search_save_load(spec, data, tmp_path):
    db, queries = data
    index = build_index(spec, db[:1500], add_vectors=db)  # trained on part, filled with all
    assert index.ntotal == len(db) and index.d == D
    scores, ids = search(index, queries, 10, batch_size=32)
    assert scores.shape == ids.shape == (len(queries), 10) and ids.dtype == np.int64
    assert ((ids >= 0) & (ids < len(db))).all()
    if spec.kind in ("flat", "ivf_flat", "hnsw"):
        _, self_ids = search(index, db[:50], 1)  # exact scores: every vector finds itself
        assert (self_ids[:, 0] == np.arange(50)).mean() >= 0.96
    assert index_memory_bytes(index) > 0
    loaded = load_index(save_index(index, tmp_path / "sub" / "x.faiss"))
    scores2, ids2 = search(loaded, queries, 10, batch_size=32)  # same batches: same float rounding
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_array_equal(scores2, scores)


def test_factory_strings_and_names():
    opq = IndexSpec("opq_ivf_pq", nlist=1024, pq_bytes=32, nprobe=8)
    assert opq.factory_string == "OPQ32,IVF1024,PQ32" and opq.name == "opq-ivf1024-pq32-np8"
    assert IndexSpec("ivf_flat", nlist=1024).factory_string == "IVF1024,Flat"
    assert IndexSpec("hnsw", hnsw_m=32, ef_search=128).factory_string == "HNSW32"
    assert IndexSpec("hnsw", hnsw_m=32, ef_search=128).name == "hnsw32-ef128"
    assert IndexSpec().factory_string == "Flat" and IndexSpec().name == "flat"
    refined = IndexSpec("ivf_pq", nlist=4096, pq_bytes="d/4", nbits=4, refine=8, dim=128)
    assert refined.pq_bytes == 32
    assert refined.factory_string == "IVF4096,PQ32x4,RFlat" and refined.name == "ivf4096-pq32x4-np16-rf8"
    assert IndexSpec("ivf_pq", pq_bytes=0).with_dim(64).pq_bytes == 16
    with pytest.raises(ValueError, match="needs the dimension"):
        IndexSpec("ivf_pq", pq_bytes=0).factory_string


def test_bad_specs_raise_clear_errors(data):
    db, _ = data
    with pytest.raises(ValueError, match=r"pq_bytes=5 must divide the dimension 32 \(choices: \[1, 2, 4, 8, 16, 32\]"):
        build_index(IndexSpec("ivf_pq", nlist=4, pq_bytes=5), db)
    with pytest.raises(ValueError, match=r"pq_bytes=12 must divide the dimension 32"):
        IndexSpec("ivf_pq", pq_bytes=12, dim=32)
    with pytest.raises(ValueError, match=r"kind='lsh' is not one of \('flat', 'ivf_flat', 'ivf_pq', 'opq_ivf_pq'"):
        IndexSpec("lsh")
    with pytest.raises(ValueError, match=r"metric='cos' is not one of \('ip', 'l2'\)"):
        IndexSpec(metric="cos")
    with pytest.raises(ValueError, match=r"use_gpu='yes' is not one of"):
        IndexSpec(use_gpu="yes")
    with pytest.raises(ValueError, match="pq_bytes='d/2' must be an int or 'd/4'"):
        IndexSpec("ivf_pq", pq_bytes="d/2")
    with pytest.raises(ValueError, match="kind='flat' already scores exact vectors"):
        IndexSpec("flat", refine=4)
    with pytest.raises(ValueError, match="refine=0.5 must be 0"):
        IndexSpec("ivf_pq", refine=0.5)
    with pytest.raises(ValueError, match="use_gpu='always' is not supported for 'hnsw32-ef64'"):
        IndexSpec("hnsw", use_gpu="always")
    with pytest.raises(ValueError, match="100 training vectors are fewer than nlist=128"):
        build_index(IndexSpec("ivf_flat", nlist=128), db[:100])
    wide = np.random.default_rng(0).standard_normal((300, 512)).astype(np.float32)
    with pytest.raises(ValueError, match="300 training vectors are fewer than the dimension 512"):
        build_index(IndexSpec("opq_ivf_pq", nlist=4, pq_bytes=16, nbits=4), wide)  # faiss would abort
    with pytest.raises(ValueError, match="dimension 16, but the index has 32"):
        search(build_index(IndexSpec(), db), db[:3, :16], 1)
    with pytest.raises(ValueError, match="nprobe=4 given, but IndexFlat has no IVF layer"):
        set_search_params(build_index(IndexSpec(), db), nprobe=4)


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_always_gpu_without_gpu_errors(data):
    with pytest.raises(RuntimeError, match="use_gpu='always' but no GPU is usable"):
        build_index(IndexSpec("ivf_flat", nlist=4, use_gpu="always"), data[0])


def test_few_training_vectors_log_a_warning(data, caplog):
    with caplog.at_level(logging.WARNING, logger="mmemb.index.factory"):
        build_index(IndexSpec("ivf_flat", nlist=64), data[0][:1000])  # 1,000 < 39 x 64
    assert "1000 training vectors for nlist=64; faiss recommends at least 2496" in caplog.text


def test_docs_scanned_matches_faiss_ivf_counters(data):
    db, queries = data
    for spec in (IndexSpec("ivf_flat", nlist=16, nprobe=3),
                 IndexSpec("opq_ivf_pq", nlist=16, nprobe=3, refine=2, **SMALL_PQ)):
        index = build_index(spec, db)
        stats = faiss.cvar.indexIVF_stats
        stats.reset()
        index.search(queries, 10)
        per_query = ivf_docs_scanned(index, queries)
        assert per_query.shape == (len(queries),) and per_query.min() > 0
        assert per_query.mean() == pytest.approx(stats.ndis / len(queries))
        set_search_params(index, nprobe=16)
        assert docs_scanned_per_query(index, queries) == len(db)
    assert docs_scanned_per_query(build_index(IndexSpec(), db), queries) == len(db)
    hnsw = docs_scanned_per_query(build_index(IndexSpec("hnsw", hnsw_m=8, ef_search=16), db), queries)
    assert 10 < hnsw < len(db)


def test_exact_topk_and_recall():
    rng = np.random.default_rng(1)
    db, q = rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((7, 8)).astype(np.float32)
    dist = ((q[:, None, :] - db[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(exact_topk(db, q, 5, "l2"), np.argsort(dist, axis=1, kind="stable")[:, :5])
    np.testing.assert_array_equal(exact_topk(db, q, 5, "ip"), np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :5])
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(np.array([[3, 1, 9], [-1, -1, -1]]), exact, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(np.array([[2, 7, 9], [4, 0, 0]]), exact, 1) == 0.5


@pytest.fixture(scope="module")
def sweep_rows(data):
    db, queries = data
    cfg = SweepConfig(ks=(1, 10, 100), nlist=(16,), nprobe=(1, 4, 16, 32), pq_bytes=(8,), nbits=4, opq=(False, True),
                      refine=(0, 4), hnsw_m=(8,), hnsw_ef_search=(16, 64), n_latency_queries=20, warmup_queries=2)
    rows = run_sweep(db, queries, cfg, progress=False)
    assert len(rows) == cfg.num_settings() == 1 + 3 + 2 * 2 * 3 + 2  # nprobe 32 > nlist is skipped
    return rows


def _row(rows, name):
    return next(r for r in rows if r["setting"] == name)


def test_sweep_recalls_and_docs_scanned(sweep_rows, data):
    n = len(data[0])
    flat = _row(sweep_rows, "flat")
    assert flat["recall@1"] == flat["recall@10"] == flat["recall@100"] == 1.0
    assert flat["docs_scanned"] == n
    full = _row(sweep_rows, "ivf16-np16")
    assert full["recall@10"] >= 0.999 and full["recall@100"] >= 0.999  # exact up to float ties
    assert full["docs_scanned"] == n
    assert _row(sweep_rows, "ivf16-np1")["docs_scanned"] < _row(sweep_rows, "ivf16-np4")["docs_scanned"] < n
    for pq in ("ivf16-pq8x4", "opq-ivf16-pq8x4"):
        assert _row(sweep_rows, f"{pq}-np16-rf4")["recall@10"] > _row(sweep_rows, f"{pq}-np16")["recall@10"]
        assert _row(sweep_rows, f"{pq}-np16-rf4")["memory_bytes"] > flat["memory_bytes"]
        assert _row(sweep_rows, f"{pq}-np16")["memory_bytes"] < flat["memory_bytes"] / 4
    for row in sweep_rows:
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["qps"] > 0 and row["build_s"] >= 0
        assert row["n_database"] == n and row["dim"] == D and row["gpu"] is False
    assert _row(sweep_rows, "hnsw8-ef64")["recall@10"] >= _row(sweep_rows, "hnsw8-ef16")["recall@10"]


def test_sweep_outputs(sweep_rows, tmp_path):
    table = markdown_table(sweep_rows)
    lines = table.splitlines()
    assert lines[0].startswith("| setting | recall@1 | recall@10 | recall@100 | docs scanned | p50 ms | p99 ms | QPS")
    assert len(lines) == 2 + len(sweep_rows) and "| flat | 1.0000 | 1.0000 | 1.0000 |" in table
    data = json.loads(write_json(sweep_rows, tmp_path / "r.json", meta={"n": 1900, "bad": float("nan")}).read_text())
    assert data["meta"] == {"n": 1900, "bad": None} and len(data["rows"]) == len(sweep_rows)
    with write_csv(sweep_rows, tmp_path / "r.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(sweep_rows) and csv_rows[0]["setting"] == "flat" and csv_rows[0]["nprobe"] == ""
    png = plot_recall_latency(sweep_rows, tmp_path / "plots" / "recall.png", k=10, latency="p99_ms")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_pareto_front_hand_made():
    points = [
        (1.0, 0.50),  # 0: front (fastest)
        (2.0, 0.40),  # 1: dominated by 0
        (2.0, 0.80),  # 2: front
        (3.0, 0.80),  # 3: dominated by 2 (slower, same recall)
        (5.0, 0.95),  # 4: front
        (4.0, 0.70),  # 5: dominated by 2
        (5.0, 0.95),  # 6: exact duplicate of 4: kept
        (10.0, 1.00),  # 7: front (best recall)
        (20.0, 1.00),  # 8: dominated by 7
        (float("nan"), 1.0),  # 9: unusable
    ]
    assert pareto_front(points) == [0, 2, 4, 6, 7]
    assert pareto_front([]) == []


def test_target_report():
    def row(name, kind, recall, p99, mem):
        return {"setting": name, "kind": kind, "recall@10": recall, "p99_ms": p99, "memory_bytes": mem}

    rows = [row("flat", "flat", 1.0, 50.0, 800), row("a", "hnsw", 0.995, 0.4, 900), row("b", "hnsw", 0.999, 0.6, 900),
            row("c", "ivf_pq", 0.93, 0.2, 100), row("d", "ivf_pq", 0.95, 0.1, 101),
            row("e", "ivf_flat", 0.98, 1.0, 820)]
    report = target_report(rows)
    assert report["near_exact_setting"] == "a" and report["near_exact_speedup"] == pytest.approx(125.0)
    assert report["near_exact_met"] and report["compact_setting"] == "c" and report["compact_met"]
    text = format_target_report(report)
    assert "125.0x" in text and "`c`" in text and "NOT MET" not in text
