"""The index and top-K benchmark scripts run end to end at toy sizes (their numbers live in BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_index_sweeps_both_datasets_from_a_store(tmp_path, capsys):
    from mmemb.eval.store import EmbeddingStore

    rng = np.random.default_rng(0)
    store = EmbeddingStore(tmp_path / "store")
    x = rng.standard_normal((40, 16)).astype(np.float32)
    x[3] = 0  # a missing modality: dropped
    store.append([f"v{i}" for i in range(40)], {"multimodal": x, "video": x[:, :8].copy()})
    bench = _bench("bench_index")
    assert bench.load_embeddings(tmp_path / "store").shape == (39, 16)
    with pytest.raises(SystemExit, match="nope"):
        bench.load_embeddings(tmp_path / "store", "nope")
    out = tmp_path / "out"
    args = ["--n", "3000", "--d", "16", "--queries", "50", "--clusters", "20", "--nlist", "16", "--nprobe", "1", "16",
            "--pq-bytes", "4", "--opq", "false", "--refine", "0", "4", "--ef-search", "16", "--latency-queries", "20",
            "--embeddings", str(tmp_path / "store"), "--out", str(out), "--threads", "1", "--no-progress"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "39 distinct multimodal embeddings of dim 16" in printed
    for name in ("clustered", "demo-tiled"):
        rows = json.loads((out / f"{name}-n3000.json").read_text())["rows"]
        flat = next(r for r in rows if r["kind"] == "flat")
        assert flat["recall@10"] == 1.0 and flat["docs_scanned"] == 3000
        full_probe = next(r for r in rows if r["setting"] == "ivf16-np16")  # every list probed: exact
        assert full_probe["recall@10"] == pytest.approx(1.0, abs=0.01)
        assert (out / f"{name}-n3000-p99.png").stat().st_size > 0
    assert "## demo-tiled" in (out / "summary.md").read_text()


def test_bench_topk_measures_blocks_and_extrapolates(capsys):
    bench = _bench("bench_topk")
    assert bench.main(["--gallery", "5000", "--queries", "64", "256", "--dim", "8", "--k", "10", "--chunk-size", "32",
                       "--gallery-chunk-size", "1000", "--target-queries", "5000"]) == 0
    out = capsys.readouterr().out
    assert "| 64 |" in out and "| 256 |" in out and "extrapolated to 5000 x 5000" in out


def test_readme_tables_replace_only_the_marked_block_and_judge_gaps_by_spread():
    tables = _bench("readme_tables")
    text = "intro\n<!-- table:x -->\n| old |\n<!-- /table:x -->\nrest\n<!-- table:y -->\n| y |\n<!-- /table:y -->\n"
    out = tables.replace_block(text, "x", "| new |\n| row |")
    assert out == text.replace("| old |", "| new |\n| row |")
    with pytest.raises(ValueError, match="table:z"):
        tables.replace_block(text, "z", "| z |")
    assert tables.fmt([0.5]) == "0.500" and tables.fmt([0.4, 0.6]) == "0.500 ± 0.141"
    assert "exceeds" in tables.gap_verdict([0.50, 0.51, 0.52], [0.30, 0.31, 0.29])
    assert "within" in tables.gap_verdict([0.50, 0.40, 0.60], [0.45, 0.47, 0.43])
    assert tables.gap_verdict([0.5], [0.3]) == "one seed: unknown"


def test_readme_tables_real_data_block_keeps_the_tables_only():
    tables = _bench("readme_tables")
    md = ("## Real-data benchmarks\n\nLinux, 2 CPU(s); total 1.0s; checkpoint /x/best.ckpt\n\n### tagging\n\n"
          "| method | map |\n|---|---:|\n| a | 0.1 |\n")
    assert tables.real_data_block(md) == "**tagging**\n\n| method | map |\n|---|---:|\n| a | 0.1 |"


def test_distill_table_judges_each_target_on_the_means():
    bench = _bench("distill_table")
    row = lambda r1, r10, m: {"t2v_r1_category": r1, "v2t_r1_category": r1, "t2v_r10_category": r10,  # noqa: E731
                              "v2t_r10_category": r10, "hashtag_map": m}
    test = {"teacher": [row(0.5, 0.80, 0.60), row(0.5, 0.80, 0.60)],
            "distilled student": [row(0.4, 0.77, 0.50), row(0.4, 0.77, 0.60)],  # R@10 96%, mAP 0.55 = 92%
            "student without distillation": [row(0.3, 0.70, 0.40), row(0.3, 0.70, 0.40)]}
    cost = {"teacher": {"ms_clip": 6.0, "ms_text": 1.0, "params": 8e6, "params_ngram_table": 4e6,
                        "flops_clip": 1e8, "flops_text": 1e7},
            "distilled student": {"ms_clip": 1.5, "ms_text": 0.8, "params": 6e6, "params_ngram_table": 4e6,
                                  "flops_clip": 1e7, "flops_text": 1e7}}
    lines = bench.targets(test, cost)
    assert "t2v_r10_category: 0.770 / 0.800 = 96.2%: **met**" in lines[0]
    assert "hashtag_map: 0.550 / 0.600 = 91.7%: **missed**" in lines[2]
    assert "6.00 ms / 1.50 ms = 4.0x: **missed**" in lines[3]
    assert "better on 5 of 5" in lines[4] and lines[4].endswith("**met**")
    text = bench.table(test, cost, 2, "test machine")
    assert "| distilled student | 0.400 ± 0.000 |" in text and "2 seeds (mean ± std)" in text
