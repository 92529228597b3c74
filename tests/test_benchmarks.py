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
    empty = "a\n<!-- table:e -->\n<!-- /table:e -->\n<!-- table:f -->\n| f |\n<!-- /table:f -->\n"  # a new table
    filled = tables.replace_block(empty, "e", "| e |\n")
    assert filled == empty.replace("<!-- table:e -->\n", "<!-- table:e -->\n| e |\n")
    assert tables.replace_block(filled, "e", "| e2 |") == filled.replace("| e |", "| e2 |")
    assert tables.fmt([0.5]) == "0.500" and tables.fmt([0.4, 0.6]) == "0.500 ± 0.141"
    assert "exceeds" in tables.gap_verdict([0.50, 0.51, 0.52], [0.30, 0.31, 0.29])
    assert "within" in tables.gap_verdict([0.50, 0.40, 0.60], [0.45, 0.47, 0.43])
    assert tables.gap_verdict([0.5], [0.3]) == "one seed: unknown"


def test_readme_tables_real_data_block_keeps_the_tables_only():
    tables = _bench("readme_tables")
    md = ("## Real-data benchmarks\n\nLinux, 2 CPU(s); total 1.0s; checkpoint /x/best.ckpt\n\n### tagging\n\n"
          "| method | map |\n|---|---:|\n| a | 0.1 |\n")
    assert tables.real_data_block(md) == "**tagging**\n\n| method | map |\n|---|---:|\n| a | 0.1 |"


def test_readme_tables_retrains_a_cut_run_and_skips_a_finished_one(tmp_path, monkeypatch):
    tables = _bench("readme_tables")
    calls = []

    def fake_run(cmd):
        calls.append(cmd[3])  # fit | eval
        root = tmp_path / "seed0"
        if cmd[3] == "eval":
            (root / "version_0" / "checkpoints").mkdir(parents=True, exist_ok=True)
            (root / "version_0" / "checkpoints" / "metrics.json").write_text('{"metrics": {"m": 1.0}}')
        else:
            assert not (root / "version_0" / "checkpoints" / "last.ckpt").exists()  # the cut run was removed
            root.mkdir(parents=True)

    monkeypatch.setattr(tables, "_run", fake_run)
    cut = tmp_path / "seed0" / "version_0" / "checkpoints"
    cut.mkdir(parents=True)
    (cut / "last.ckpt").write_bytes(b"epoch 1 of 8")  # a checkpoint, but training never returned
    assert tables.ensure_run("c.yaml", tmp_path / "seed0", 0, []) == {"m": 1.0}
    assert calls == ["fit", "eval"] and (tmp_path / "seed0" / "fit.done").exists()
    calls.clear()
    assert tables.ensure_run("c.yaml", tmp_path / "seed0", 0, []) == {"m": 1.0}
    assert calls == []  # finished and evaluated: nothing reruns


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



def test_distill_screen_reads_the_last_validation_row_and_judges_by_spread(tmp_path, capsys, monkeypatch):
    bench = _bench("distill_screen")
    keys = [key for _, key in bench.METRICS]
    for name, level in (("base", 0.5), ("vis1", 0.3)):  # finished runs (fit.done + metrics.json): nothing trains
        for seed in (0, 1):
            root = tmp_path / "runs" / name / f"seed{seed}"
            ckpts = root / "version_0" / "checkpoints"
            ckpts.mkdir(parents=True)
            (root / "fit.done").write_text("ok\n")
            (ckpts / "metrics.json").write_text(json.dumps({"metrics": {k: level - 0.1 for k in keys}}))
            header = "epoch,train/loss," + ",".join(f"val/{k}" for k in keys)
            early = "0,," + ",".join(["0.9"] * len(keys))  # an earlier epoch: not the one read
            last = f"1,,{','.join([str(level + 0.01 * seed)] * len(keys))}"
            (root / "version_0" / "metrics.csv").write_text("\n".join([header, "0,1.0," + "," * (len(keys) - 1),
                                                                        early, last]) + "\n")
    (tmp_path / "teachers" / "seed0").mkdir(parents=True)
    (tmp_path / "teachers" / "seed1").mkdir(parents=True)
    assert bench.last_validation(tmp_path / "runs" / "vis1" / "seed1")["hashtag_map"] == 0.31
    with pytest.raises(FileNotFoundError, match="no version_"):
        bench.last_validation(tmp_path / "nowhere")
    args = ["--variants", "vis1", "--seeds", "2", "--runs", str(tmp_path / "runs"), "--teachers",
            str(tmp_path / "teachers"), "--dry-run"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "| base: `configs/distill.yaml` as it is | 0.505 ± 0.007 |" in out
    assert "0.305 ± 0.007 (-0.200*)" in out  # beyond the spread of both
    assert "| 0.200 / 0.200 / 0.200 / 0.200 / 0.200 |" in out  # test means, for the record
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "3", "--teachers", str(tmp_path / "teachers"), "--dry-run"])  # no teacher of seed 2

    import distill_table  # importable once distill_screen put benchmarks/ on the path

    import mmemb.eval.loading

    def fake_cost(ckpts, **_):
        return {name: {"params": 1e6, "flops_clip": 2e6, "ms_clip": 8.0 if name == "teacher" else 2.0, "ms_text": 1.0}
                for name in ckpts}

    monkeypatch.setattr(distill_table, "measure_cost", fake_cost)
    monkeypatch.setattr(mmemb.eval.loading, "resolve_checkpoint", lambda root: root)
    bench.print_cost(tmp_path / "teachers" / "seed0", {"vis1": tmp_path / "runs" / "vis1" / "seed0"})
    assert "| vis1 | 1.00 | 2.0 | 2.00 | 4.0x | 1.00 |" in capsys.readouterr().out

def _kuairec_rows(head_map: float, text_acc: float, tfidf_map: float = 0.25, labels: str = "run") -> list[dict]:
    data = {"data_n_train": 8542.0, "data_n_val_held_out": 1061.0, "data_n_test": 1125.0, "data_n_labels": 238.0,
            "labels": labels}
    tag = lambda m, v: {"method": m, "task": "tagging", "map": v, "p1": v, "r5": v, "n_samples": 250.0, **data}  # noqa: E731
    probe = lambda m, a: {"method": m, "task": "category_l2", "accuracy": a, "chance_majority": 0.14, **data}  # noqa: E731
    return [tag("label_popularity", 0.1), tag("tfidf_char13_lr", tfidf_map), probe("tfidf_char13_svd256_lr", 0.30),
            tag("mmemb_head", head_map), tag("mmemb_text", 0.2), probe("mmemb_text", text_acc)]


def test_kuairec_table_judges_the_targets_on_the_means_and_checks_one_split():
    bench = _bench("kuairec_table")
    seeds = [_kuairec_rows(0.31, 0.33), _kuairec_rows(0.29, 0.29)]  # head mean 0.300 = 1.2 x 0.25; probe 0.31
    seeds[0].append({**seeds[0][3], "method": "mmemb_head_wide", "map": 0.2})  # the wide part alone, one seed
    text = bench.kuairec_table(seeds, [5.0, 7.0])
    assert "| mmemb_head | 0.300 ± 0.014 |" in text
    assert "| mmemb_head_wide | 0.200 |" in text and "mmemb_head_deep" not in text  # rows no seed has: left out
    assert "| tfidf_char13_lr | 0.250 |" in text and "same split" in text
    assert "the head's 0.300 ± 0.014 **met** (1.20 x TF-IDF + LR)" in text
    assert "mmemb_text 0.310 ± 0.028 **met**" in text
    assert "8542 train / 1061 validation / 1125 test videos; 238 hashtags (the runs' own" in text
    assert "6.0 ± 1.4 min" in text
    missed = bench.kuairec_table([_kuairec_rows(0.26, 0.25)], [5.0])
    assert "**missed** (1.04 x TF-IDF + LR)" in missed and "mmemb_text 0.250 **missed**" in missed
    with pytest.raises(ValueError, match="not on one split"):
        bench.kuairec_table([_kuairec_rows(0.3, 0.3), _kuairec_rows(0.3, 0.3, tfidf_map=0.24)], [1.0, 1.0])


def test_kuairec_table_scores_runs_an_ablation_finished_without_training_them(tmp_path, capsys):
    """Runs with a ``result.json`` (``mmemb eval ablate``'s) are not trained again; their real-data rows make
    the table, written into the block ``--block`` names."""
    bench = _bench("kuairec_table")
    manifest = tmp_path / "kuairec.jsonl"
    manifest.write_text("")
    for seed, head in ((0, 0.21), (1, 0.23)):
        root = tmp_path / "runs" / f"seed{seed}"
        (root / "real_data").mkdir(parents=True)
        (root / "result.json").write_text(json.dumps({"fit_seconds": 600.0, "eval_seconds": 60.0}))
        (root / "real_data" / "results.json").write_text(json.dumps(_kuairec_rows(head, 0.28)))
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- table:wide -->\nold\n<!-- /table:wide -->\n<!-- table:kuairec_text -->\nkept\n"
                      "<!-- /table:kuairec_text -->\n")
    assert bench.main(["--seeds", "2", "--runs", str(tmp_path / "runs"), "--manifest", str(manifest),
                       "--readme", str(readme), "--block", "wide"]) == 0
    text = readme.read_text()
    assert "| mmemb_head | 0.220 ± 0.014 |" in text and "11.0 ± 0.0 min per run" in text
    assert "old" not in text and "kept" in text  # only the named block changed
    assert not (tmp_path / "runs" / "seed0" / "fit.done").exists()  # nothing was trained


def test_kuairec_table_scores_again_rows_on_the_protocols_labels(tmp_path, monkeypatch):
    """A run's real-data rows scored on the protocol's labels (older results.json) are scored again on the
    run's own (``--labels run``); rows already on them are used as they are."""
    bench = _bench("kuairec_table")
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        out = tmp_path / "seed0" / "real_data"
        (out / "results.json").write_text(json.dumps(_kuairec_rows(0.25, 0.3)))

    monkeypatch.setattr(bench, "_run", fake_run)
    root = tmp_path / "seed0"
    (root / "real_data").mkdir(parents=True)
    (root / "real_data" / "results.json").write_text(json.dumps(_kuairec_rows(0.2, 0.3, labels="protocol")))
    rows = bench.ensure_real_data(root)
    assert len(calls) == 1 and calls[0][-6:] == ["--skip-av", "--labels", "run", "--out", str(root / "real_data"),
                                                 "--no-progress"]
    assert {r["labels"] for r in rows} == {"run"} and bench._row(rows, "mmemb_head", "tagging")["map"] == 0.25
    assert bench.ensure_real_data(root) == rows and len(calls) == 1  # on the run's labels: not scored again


# ----------------------------------------------------------------------------- export latency benchmarks

TINY_DATA = {"batch_size": 8, "num_workers": 0, "decode": {"num_frames": 4, "frame_size": 32, "audio_seconds": 1.0},
             "labels": {"hashtag_min_freq": 2},
             "text": {"max_length": 32, "vocab_size": 2000, "ngram_buckets": 512, "ngram_max_length": 64}}


@pytest.fixture(scope="module")
def tiny_exports(small_demo, tmp_path_factory):
    """Untrained teacher_tiny and student_tiny exports of the small demo corpus (shared vocabularies)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    exports = _bench("bench_exports")
    return exports.exported(tmp_path_factory.mktemp("bench_exports"), ["teacher_tiny", "student_tiny"], small_demo,
                            data=TINY_DATA)


def _export_args(exports) -> list[str]:
    return [a for name, folder in exports.items() for a in ("--export", f"{name}={folder}")]


def test_bench_exports_share_the_vocabularies(tiny_exports):
    teacher, student = (json.loads((f / "config.json").read_text()) for f in tiny_exports.values())
    assert teacher["preset"] == "teacher_tiny" and student["preset"] == "student_tiny"
    assert teacher["model"]["text"]["vocab_size"] == student["model"]["text"]["vocab_size"]
    assert (tiny_exports["teacher_tiny"] / "tokenizer/vocab.txt").read_text() == \
        (tiny_exports["student_tiny"] / "tokenizer/vocab.txt").read_text()


def test_bench_query_latency_times_every_setting(tiny_exports, tmp_path, capsys):
    bench = _bench("bench_query_latency")
    queries = bench.load_queries(50)
    assert len(queries) == 50 and all(q.strip() for q in queries)
    assert sum(q.isascii() for q in queries) >= 5  # Latin-script queries are mixed in
    assert bench.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0 and bench.percentile([1.0] * 99 + [9.0], 0.99) == 1.0
    out = tmp_path / "q.json"
    assert bench.main(["--queries", "12", "--warmup", "2", "--student", "student_tiny", "--json", str(out)]
                      + _export_args(tiny_exports)) == 0
    rows = json.loads(out.read_text())["rows"]
    settings = {"tokenise", "n-grams", "n-grams, uncached", "preprocess", "preprocess, query arrays", "torch",
                "torch, padded", "onnx", "onnx, padded", "onnx int8"}
    assert {(r["model"], r["setting"]) for r in rows} == {(m, s) for m in tiny_exports for s in settings}
    assert all(r["n"] == 12 and 0 < r["p50_ms"] <= r["p99_ms"] for r in rows)
    printed = capsys.readouterr().out
    assert "| student_tiny | onnx |" in printed and "| student_tiny | onnx int8 |" in printed
    assert "target p99 <= 0.5 ms for student_tiny" in printed


def test_bench_clip_latency_reports_each_setting_with_its_cost(tiny_exports, small_demo, capsys):
    bench = _bench("bench_clip_latency")
    assert bench.main(["--clips", "4", "--batches", "1", "2", "--rounds", "1", "--manifest", str(small_demo),
                       "--teacher", "teacher_tiny", "--student", "student_tiny"] + _export_args(tiny_exports)) == 0
    printed = capsys.readouterr().out
    for setting in ("decode", "torch", "onnx", "torch + decode", "onnx + decode"):
        for batch in (1, 2):
            assert f"| {batch} | {setting} | student_tiny |" in printed, (batch, setting)
    assert "student" in printed and "faster than the teacher" in printed
    import mmemb

    teacher = bench.clip_cost(mmemb.load(tiny_exports["teacher_tiny"]))
    student = bench.clip_cost(mmemb.load(tiny_exports["student_tiny"]))
    assert 0 < student[0] < teacher[0] and 0 < student[1] < teacher[1]  # params and FLOPs


def test_bench_embed_throughput_compares_with_the_raw_rate(tiny_exports, small_demo, capsys):
    bench = _bench("bench_embed_throughput")
    assert bench.main(["--clips", "8", "--rounds", "1", "--workers", "0", "--manifest", str(small_demo),
                       "--export", f"student_tiny={tiny_exports['student_tiny']}"]) == 0
    printed = capsys.readouterr().out
    assert "8 clips of" in printed and "| median x raw | 1.00 |" in printed


def test_bench_loader_work_restores_the_hash_and_the_decoder(small_demo, capsys):
    import mmemb.data.dataset as dataset
    import mmemb.data.text as text

    hasher, load = text._cached_hash, dataset.load_clip
    bench = _bench("bench_loader_work")
    assert bench.main(["--manifest", str(small_demo), "--rounds", "1", "--limit", "20"]) == 0
    printed = capsys.readouterr().out
    assert "20 train records" in printed and printed.rstrip().splitlines()[-1].startswith("| 1 |")
    assert text._cached_hash is hasher and dataset.load_clip is load


def test_kuairec_linear_learns_and_writes_one_row_per_setting(capsys):
    """The wide part alone (``benchmarks/kuairec_linear.py``): on ids where each label is one bucket, every
    setting's linear model ranks the labels far above label popularity after a few epochs; a smoke run on the
    CSV's first rows prints the baseline row and one row per setting."""
    import numpy as np
    import torch

    bench = _bench("kuairec_linear")
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(300, 6, generator=g) < 0.3).to(torch.uint8)  # (N, L)
    noise = torch.randint(100, bench.BUCKETS, (300, 5), generator=g)
    ids = torch.cat([torch.where(y.bool(), torch.arange(1, 7), 0), noise], dim=1)  # label j <-> bucket j + 1
    data = {"train_x": ids[:200], "val_x": ids[200:250], "test_x": ids[250:], "train_y": y[:200].numpy(),
            "val_y": y[200:250].numpy(), "test_y": y[250:].numpy()}
    from mmemb.eval.tagging import label_popularity_scores, tagging_metrics

    chance = tagging_metrics(label_popularity_scores(data["train_y"], 50), data["val_y"])["map"]
    for pooling, loss, bias in bench.SETTINGS:
        history, test = bench.train_linear(pooling, loss, bias, 0.1, 0, data, epochs=3)
        assert max(history) > chance + 0.3 and test > chance + 0.3, (pooling, loss, bias, history, chance)
    assert bench.main(["--max-rows", "800", "--seeds", "1", "--epochs", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `") or line.startswith("| TF-IDF")]
    assert len(rows) == 1 + len(bench.SETTINGS)
    assert np.isfinite([float(r.split("|")[3].split("±")[0]) for r in rows]).all()


def test_kuairec_pretrain_wires_the_stages_and_compares_with_the_config_from_scratch(tmp_path):
    bench = _bench("kuairec_pretrain")
    stage1 = tmp_path / "stage1" / "seed1"
    with pytest.raises(FileNotFoundError, match="stage 1 did not finish"):
        bench.stage2_fit_args(stage1, 1)
    for v in (0, 2):  # the newest version's last checkpoint, not the first one's
        (stage1 / f"version_{v}" / "checkpoints").mkdir(parents=True)
        (stage1 / f"version_{v}" / "checkpoints" / "last.ckpt").write_bytes(b"")
    first = bench.stage1_command(stage1, 1)
    assert first[first.index("fit") + 1:first.index("fit") + 5] == ["--config", bench.CONFIG, "--config", bench.STAGE1]
    assert "--seed_everything" in first and first[first.index("--seed_everything") + 1] == "1"
    second = bench.stage2_fit_args(stage1, 1)
    assert second[second.index("--model.init_from") + 1] == str(stage1 / "version_2" / "checkpoints" / "last.ckpt")
    assert second[second.index("--data.vocab_dir") + 1] == str(stage1 / "vocab") and bench.STAGE1 not in second
    # result.json names paths inside the repository relative to it (committed), others as they are
    assert bench._relative(bench.REPO / "results" / "kuairec_pretrain" / "stage1") == "results/kuairec_pretrain/stage1"
    assert bench._relative(stage1) == str(stage1)

    def rows(head, fused):
        return [r for r in _kuairec_rows(head, 0.2) if r["method"] != "mmemb_text"] + [
            {"method": "mmemb_fused", "task": "category_l2", "accuracy": fused, "chance_majority": 0.14}]

    table = bench.pretrain_table([rows(0.30, 0.31), rows(0.32, 0.29)], [rows(0.24, 0.25), rows(0.25, 0.26)])
    assert "| hashtag head (`mmemb_head`) | 0.245 ± 0.007 | 0.310 ± 0.014 | +0.065, exceeds the spread |" in table
    assert "| fused embedding, category probe (`mmemb_fused`) | 0.255 ± 0.007 | 0.300 ± 0.014 | +0.045, exceeds" in table
    assert "mmemb_head_wide" not in table  # rows no run has are left out
    assert "TF-IDF + LR 0.250 mAP" in table
    other_split = rows(0.3, 0.3)
    other_split[1] = {**other_split[1], "map": 0.2}
    with pytest.raises(ValueError, match="differs between seeds"):
        bench.pretrain_table([other_split], [rows(0.24, 0.25)])


def test_kuairec_wide_features_leaves_unseen_buckets_out_of_the_norm_and_writes_every_row(capsys):
    """``benchmarks/kuairec_wide_features.py``: the wide part's pooled rows have unit norm; with ``train_only``
    a bucket no train text has gets no weight and the rest of the row keeps unit norm; a smoke run on the CSV's
    first rows prints one row per feature set, each mAP a number in (0, 1]."""
    import numpy as np

    bench = _bench("kuairec_wide_features")
    train, held = ["猫咪 cat", "狗狗 dog"], {"test": ["猫咪 zebra"]}
    for train_only in (False, True):
        train_x, eval_x = bench.hashed_features(train, held, 1024, train_only=train_only)
        assert np.allclose(np.sqrt(train_x.multiply(train_x).sum(axis=1)), 1.0)
        row = eval_x["test"]
        assert np.isclose(np.sqrt(row.multiply(row).sum()), 1.0)
        seen = set(train_x.indices)
        unseen = [j for j in row.indices if j not in seen]
        assert (not unseen) == train_only  # "zebra"'s n-grams are in no train text
    assert bench.main(["--max-rows", "1500", "--dry-run"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "mAP" not in line]
    n = 6 + len(bench.BASELINE_CS)
    maps = [float(c) for line in rows[:n] for c in line.split("|")[3:5]]
    assert len(rows) == 2 * n and all(0 < m <= 1 for m in maps), rows


def test_bench_text_ffn_exports_each_ratio_and_times_every_graph(capsys):
    bench = _bench("bench_text_ffn")
    assert bench.main(["--preset", "student_tiny", "--ratios", "4", "1", "--lengths", "3", "--rounds", "1",
                       "--repeats", "3", "--no-int8"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| r")]
    assert [r.split("|")[1].strip() for r in rows] == ["r4 float", "r1 float"]
    assert rows[0].endswith("| 1.00 |")  # the first ratio is the reference
    assert all(float(r.split("|")[3]) > 0 for r in rows)
