"""evaluate.py's commands end to end on tiny untrained checkpoints (teacher_tiny and two_tower_tiny) of the small
demo corpus: each runs, writes its files, and agrees with the code it wraps."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def _script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate():
    return _script(REPO / "evaluate.py", "_evaluate_cli_script")


def _save_run(root: Path, module, config: dict, vocabs) -> Path:
    """A run folder as train.py leaves it: config.yaml, vocab/, version_0/checkpoints/last.ckpt."""
    vocabs.save(root / "vocab")
    version = root / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    (version / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
               version / "checkpoints" / "last.ckpt")
    return root


@pytest.fixture(scope="module")
def runs(small_demo, tmp_path_factory) -> dict[str, Path]:
    """Three untrained runs on the small demo corpus with the same data section: ``teacher``
    (teacher_tiny: hashtag head, fused path, audio tower), ``first`` (the tiny two-tower model) and ``wide``
    (teacher_tiny with a wide part in its hashtag head, random)."""
    from mmemb.data.labels import normalize_label
    from mmemb.eval.loading import build_datamodule
    from mmemb.lit.module import EmbeddingModule

    base = tmp_path_factory.mktemp("eval_runs")
    data = {"manifest": str(small_demo), "batch_size": 16, "num_workers": 0,
            "decode": {"num_frames": 4, "frame_size": 32, "audio_seconds": 1.0},
            "labels": {"hashtag_min_freq": 2}, "text": {"max_length": 48, "vocab_size": 2000}}
    dm = build_datamodule({"data": data})
    assert dm.num_hashtags > 0
    torch.manual_seed(0)
    sizes = {"vocab_size": dm.vocab_size, "num_hashtags": dm.num_hashtags, "num_queries": dm.num_queries}
    teacher = EmbeddingModule(preset="teacher_tiny", **sizes)
    first = EmbeddingModule(preset="two_tower_tiny", loss_weights={"clip_v2t": 0.5, "clip_t2v": 0.5}, **sizes)
    wide = EmbeddingModule(preset="teacher_tiny", overrides={"wide_ngram_heads": True, "wide_loss": "bce"},
                           ngram_buckets=dm.ngram_buckets, **sizes)
    torch.nn.init.normal_(wide.model.hashtag_wide.bag.weight)  # (zero at init) a wide part that scores something
    out = {}
    for name, module in (("teacher", teacher), ("first", first), ("wide", wide)):
        module.set_vocabularies(dm.vocabs)  # label names, as the module's setup does in training
        config = {"model": {k: module.hparams.get(k) for k in ("preset", "overrides", "ngram_buckets")},
                  "data": data, "trainer": {"default_root_dir": str(base / name)}}
        out[name] = _save_run(base / name, module, config, dm.vocabs)
    out["splits"] = {k: [r.id for r in v] for k, v in dm.splits.items()}
    kept = lambda r: [t for t in map(normalize_label, r.hashtags)  # noqa: E731
                      if t and t not in dm.vocabs.removed_hashtags and dm.vocabs.hashtags.index(t) is not None]
    out["labelled_test"] = sum(1 for r in dm.splits["test"] if kept(r))  # test videos with a vocabulary hashtag
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def _is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- tasks (the bare form)


def test_bare_run_form_runs_every_task(evaluate, runs, capsys):
    result = evaluate.main(["--run", str(runs["teacher"]), "--split", "test", "--num-workers", "0",
                            "--probe-max-train", "48", "--no-progress"])
    ckpt = runs["teacher"] / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(result["checkpoint"]) == ckpt and result["split"] == "test"
    m = result["metrics"]
    n_test = len(runs["splits"]["test"])
    assert m["n_text"] == n_test and m["n_video"] == n_test  # every demo clip has frames, audio and text
    assert 0.0 <= m["t2v_r1_category"] <= 1.0 and m["t2v_r1_category_chance"] > 0
    # hashtags: the head's scores over the videos that keep a hashtag of the vocabulary, and the baseline
    assert m["hashtag_n_samples"] == runs["labelled_test"] > 0
    assert m["hashtag_n_samples"] + m["hashtag_n_excluded"] == n_test
    assert 0.0 < m["hashtag_map"] <= 1.0 and 0.0 < m["hashtag_map_popularity"] <= 1.0
    # the probe: trained on 48 train videos, scored on the test videos, video and fused embeddings
    assert m["probe_video_n_train"] == 48 and m["probe_video_n_test"] == n_test
    assert 0.0 <= m["probe_video_accuracy"] <= 1.0 and "probe_multimodal_accuracy" in m

    folder = ckpt.parent
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["metrics"]["t2v_r1_category"] == m["t2v_r1_category"]
    rows = _csv(folder / "metrics.csv")
    assert _header(folder / "metrics.csv") == ["metric", "value"] and len(rows) == len(m)
    assert float(next(r for r in rows if r["metric"] == "hashtag_map")["value"]) == pytest.approx(m["hashtag_map"])
    assert _is_png(folder / "metrics.png")
    out = capsys.readouterr().out
    assert "| metric | value | chance |" in out and "| t2v_r1_category |" in out
    assert "| hashtag_map |" in out and "(label popularity)" in out and "| probe_video_accuracy |" in out


def test_task_metrics_match_the_module_test_loop(runs):
    """evaluate.py scores the same embeddings, masks and hashtag scores as the LightningModule's own
    test loop (what training logs), so the two numbers can be compared."""
    import pytorch_lightning as pl

    from mmemb.eval.loading import load_run, split_loader
    from mmemb.eval.tasks import embed_split, task_metrics

    run = load_run(runs["teacher"] / "version_0" / "checkpoints" / "last.ckpt", num_workers=0)
    ours = task_metrics(embed_split(run.module, split_loader(run.datamodule, "test"), show_progress=False))
    # the module's eval step feeds keyword-masked text to the fusion when the keyword term is on, which
    # changes the hashtag logits; evaluate.py scores the clean text: compare with that term off
    run.module.loss_weights["keyword"] = 0.0
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.test(run.module, dataloaders=split_loader(run.datamodule, "test"), verbose=False)
    for key in ("t2v_r1_category", "v2t_r1_category", "t2v_r10_instance", "n_video", "n_text", "hashtag_map"):
        if f"test/{key}" in logged:
            assert ours[key] == pytest.approx(logged[f"test/{key}"], abs=1e-5), key
    assert "test/t2v_r1_category" in logged


# ----------------------------------------------------------------------------- extract and sweep


@pytest.fixture(scope="module")
def store(evaluate, runs, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("store") / "emb"
    result = evaluate.main(["extract", "--run", str(runs["teacher"]), "--split", "test", "--out", str(out),
                            "--num-workers", "0", "--chunk-size", "10", "--no-progress"])
    return out, result


def test_extract_writes_a_resumable_store(evaluate, runs, store):
    import pyarrow.parquet as pq

    from mmemb.eval.store import EmbeddingStore

    out, first = store
    test_ids = runs["splits"]["test"]
    assert first["added"] == len(test_ids) == first["stored"]
    s = EmbeddingStore(out)
    assert s.dims == {"video": 64, "text": 64, "multimodal": 64}
    assert [c.n for c in s.chunks][0] == 10  # chunked
    ids, video = s.load("video")
    assert ids == test_ids and np.allclose(np.linalg.norm(video, axis=1), 1.0, atol=1e-5)
    table = pq.read_table(out / "embeddings.parquet")
    assert table.column_names == ["id", "multimodal", "text", "video"] and table.num_rows == len(test_ids)
    again = evaluate.main(["extract", "--run", str(runs["teacher"]), "--split", "test", "--out", str(out),
                           "--num-workers", "0", "--no-progress"])
    assert again["added"] == 0 and again["stored"] == len(test_ids)  # resumed: nothing recomputed
    with pytest.raises(ValueError, match="store was written with"):  # another model never mixes in
        evaluate.main(["extract", "--run", str(runs["first"]), "--split", "test", "--out", str(out),
                       "--num-workers", "0", "--no-progress"])


def test_sweep_on_vectors_finds_exact_recall_for_flat(evaluate, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "db.npy", rng.normal(size=(600, 16)).astype(np.float32))
    out = tmp_path / "sweep"
    result = evaluate.main(["sweep", "--vectors", str(tmp_path / "db.npy"), "--out", str(out), "--quick",
                            "--opq", "false", "true", "--k", "1", "10", "--nbits", "4", "--latency-queries", "5",
                            "--no-progress"])
    rows = result["rows"]
    flat = next(r for r in rows if r["kind"] == "flat")
    assert flat["recall@1"] == 1.0 and flat["recall@10"] == 1.0 and flat["n_queries"] == 60  # 10% held out
    assert {r["kind"] for r in rows} == {"flat", "ivf_flat", "ivf_pq", "opq_ivf_pq", "hnsw"}
    assert any(r["kind"] == "ivf_pq" and r["pq_bytes"] == 4 and r["factory"].endswith("PQ4x4") for r in rows)  # d/4
    header = _header(out / "sweep.csv")
    assert header[:3] == ["setting", "factory", "kind"] and "recall@10" in header and "p99_ms" in header
    assert len(_csv(out / "sweep.csv")) == len(rows) == len(json.loads((out / "sweep.json").read_text())["rows"])
    assert _is_png(out / "recall_latency_p99.png") and _is_png(out / "recall_latency_p50.png")
    printed = capsys.readouterr().out
    assert "| flat | 1.0000 | 1.0000 |" in printed and "fastest setting" in printed


def test_sweep_on_a_store_with_text_queries(evaluate, runs, store, tmp_path):
    out = tmp_path / "sweep"
    result = evaluate.main(["sweep", "--store", str(store[0]), "--query-name", "text", "--out", str(out),
                            "--quick", "--latency-queries", "3", "--no-progress"])
    flat = next(r for r in result["rows"] if r["kind"] == "flat")
    n = len(runs["splits"]["test"])  # the test videos as the gallery, their texts as the queries
    assert flat["recall@1"] == 1.0 and flat["n_queries"] == flat["n_database"] == n
    assert not any(r["kind"] == "opq_ivf_pq" for r in result["rows"])  # fewer vectors than dimensions
    assert (out / "sweep.md").exists()


# ----------------------------------------------------------------------------- compare


def test_compare_has_a_row_per_checkpoint_and_a_self_ensemble_equals_its_model(evaluate, runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    result = evaluate.main(["compare", str(runs["teacher"]), str(runs["first"]), "--ensemble", "1,1", "--split",
                            "test", "--no-probe", "--num-workers", "0", "--out", str(out), "--no-progress"])
    rows = result["rows"]
    assert [r["name"] for r in rows] == ["teacher", "first", "ensemble(teacher:1, teacher:1)"]
    assert [r["kind"] for r in rows] == ["model", "model", "ensemble"]
    teacher, ens = rows[0]["metrics"], rows[2]["metrics"]
    for key, value in teacher.items():
        assert ens[key] == pytest.approx(value, nan_ok=True), key
    assert rows[1]["metrics"]["hashtag_map_popularity"] == teacher["hashtag_map_popularity"]  # same split, labels
    table = _csv(out / "compare.csv")
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    assert _header(out / "compare.csv")[:4] == ["name", "kind", "checkpoint", "preset"]
    assert len(json.loads((out / "compare.json").read_text())["rows"]) == 3
    assert _is_png(out / "compare.png")
    printed = capsys.readouterr().out
    assert "| model | t2v_r1_category |" in printed and "| chance / baseline |" in printed
    assert "| teacher |" in printed and "| first |" in printed


# ----------------------------------------------------------------------------- real-data


def test_real_data_text_rows_with_a_checkpoint(evaluate, runs, tmp_path):
    from mmemb.eval.real_data import load_embedders

    fns, av_fn = load_embedders(runs["teacher"], show_progress=False)
    assert set(fns) == {"mmemb_text", "mmemb_fused"} and av_fn is not None
    x = fns["mmemb_text"](["周末去爬山", ""])
    assert x.shape == (2, 64) and np.linalg.norm(x[0]) == pytest.approx(1.0, abs=1e-5) and not x[1].any()
    fused = fns["mmemb_fused"](["周末去爬山", "山顶日出"])
    assert fused.shape == (2, 64)
    # = the multimodal embedding of the same texts with real-size video and audio that are masked out
    from mmemb.eval.loading import load_run, resolve_checkpoint
    from mmemb.eval.real_data import _text_batch

    run = load_run(resolve_checkpoint(runs["teacher"]), num_workers=0)
    dm = run.datamodule
    batch = {**_text_batch(dm.vocabs.tokenizer, ["周末去爬山", "山顶日出"], dm.text),
             "frames": torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8), "video_mask": torch.zeros(2, dtype=bool),
             "mel": torch.randn(2, dm.decode.n_mels, dm.decode.mel_frames), "audio_mask": torch.zeros(2, dtype=bool)}
    with torch.inference_mode():
        np.testing.assert_allclose(fused, run.module.eval()(batch)["multimodal"].numpy(), atol=1e-5)
    frames = torch.randint(0, 256, (3, 16, 3, 64, 64), dtype=torch.uint8)  # resized to the model's 32 px
    video, audio = av_fn(frames, torch.randn(3, 64, 101))
    assert video.shape == audio.shape == (3, 64) and not np.allclose(video, audio)
    first_fns, first_av = load_embedders(runs["first"], show_progress=False)
    assert set(first_fns) == {"mmemb_text"} and first_av is None  # no fused path, no audio tower

    out = tmp_path / "real"
    result = evaluate.main(["real-data", "--run", str(runs["teacher"]), "--max-rows", "300", "--skip-av",
                            "--out", str(out), "--no-progress"])
    methods = [(r["method"], r["task"]) for r in result["rows"]]
    assert methods == [("label_popularity", "tagging"), ("tfidf_char13_lr", "tagging"),
                       ("tfidf_char13_svd256_lr", "category_l2"), ("mmemb_head", "tagging"), ("mmemb_text", "tagging"),
                       ("mmemb_text", "category_l2"), ("mmemb_fused", "tagging"), ("mmemb_fused", "category_l2")]
    same = {r["n_samples"] for r in result["rows"] if r["task"] == "tagging"}
    assert len(same) == 1  # every tagging row on the same test videos
    head = next(r for r in result["rows"] if r["method"] == "mmemb_head")
    assert 0.0 <= head["map"] <= 1.0 and 0 <= head["n_labels_unknown"] <= head["data_n_labels"]
    # a run trained on the demo corpus learned other hashtags: the protocol's labels (said in the table), and
    # --labels run is a clear error
    assert {r["labels"] for r in result["rows"]} == {"protocol"} and "KuaiRec labels: the protocol's" in result["markdown"]
    with pytest.raises(ValueError, match="not trained on this corpus's train split.*--labels protocol"):
        evaluate.main(["real-data", "--run", str(runs["teacher"]), "--max-rows", "300", "--skip-av", "--labels", "run",
                       "--out", str(tmp_path / "real_run"), "--no-progress"])
    for name in ("results.json", "results.csv", "results.md"):
        assert (out / name).exists()
    assert _is_png(out / "results.png")


def test_a_head_with_a_wide_part_is_scored_with_its_parts(runs):
    from mmemb.eval.loading import load_run, resolve_checkpoint
    from mmemb.eval.real_data import load_model

    records = load_run(resolve_checkpoint(runs["wide"]), num_workers=0).datamodule.splits["test"]
    rows, names = load_model(runs["wide"], show_progress=False).head_fn(records)
    assert set(rows) == {"mmemb_head", "mmemb_head_wide", "mmemb_head_deep"} and len(names) == rows["mmemb_head"].shape[1]
    assert all(r.shape == (len(records), len(names)) for r in rows.values())
    np.testing.assert_allclose(rows["mmemb_head"], rows["mmemb_head_deep"] + rows["mmemb_head_wide"], atol=1e-5)
    assert np.abs(rows["mmemb_head_wide"]).mean() > 0.1 and np.abs(rows["mmemb_head_deep"]).mean() > 0
    teacher = load_model(runs["teacher"], show_progress=False)
    plain, _ = teacher.head_fn(records)
    assert set(plain) == {"mmemb_head"}  # no wide part, no parts
    # what kuairec_task compares: the run's vocabulary and the tags its cleaning removed
    vocabs = load_run(resolve_checkpoint(runs["teacher"]), num_workers=0).datamodule.vocabs
    assert teacher.hashtag_labels == list(vocabs.hashtags.labels) and teacher.removed_hashtags == vocabs.removed_hashtags


def test_bench_real_data_ckpt_adds_the_av_row(runs, tmp_path, capsys):
    bench = _script(REPO / "benchmarks" / "bench_real_data.py", "_bench_real_data")
    assert bench.main(["--ckpt", str(runs["teacher"]), "--skip-kuairec", "--out", str(tmp_path),
                       "--no-progress"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in rows] == ["motion_rms_corr16", "mmemb_av"]
    assert rows[1]["n"] == rows[0]["n"] and 0.0 <= rows[1]["a2v_r1"] <= 1.0
    assert "| mmemb_av |" in capsys.readouterr().out


# ----------------------------------------------------------------------------- help and the README


@pytest.mark.parametrize("command", ["tasks", "extract", "sweep", "compare", "real-data", "ablate"])
def test_every_command_has_help_with_an_example(evaluate, command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_top_level_help_lists_the_commands(evaluate, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    out = capsys.readouterr().out
    for command in evaluate.SUBCOMMANDS:
        assert command in out


def test_readme_evaluate_commands_parse(evaluate, monkeypatch):
    """Every `python evaluate.py ...` and `mmemb eval ...` command of the README parses."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    commands = [part.strip() for line in lines for part in line.split("&&")
                if "evaluate.py" in part or "mmemb eval" in part]
    assert commands, "the README shows evaluation commands"
    parser = evaluate.build_parser()
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    for cmd in commands:
        argv = shlex.split(cmd.split("#")[0])
        start = next(i for i, a in enumerate(argv) if a.endswith("evaluate.py") or a == "eval") + 1
        parser.parse_args(evaluate._with_command(argv[start:]))  # exits (fails the test) on an unknown command or option


# ----------------------------------------------------------------------------- mmemb eval = evaluate.py


def test_mmemb_eval_and_evaluate_py_give_the_same_result(evaluate, runs, tmp_path, capsys):
    from mmemb.cli import main as mmemb

    args = ["--run", str(runs["first"]), "--split", "val", "--num-workers", "0", "--no-probe", "--no-plot",
            "--no-progress"]
    ours = evaluate.main([*args, "--out", str(tmp_path / "script")])
    assert mmemb(["eval", "tasks", *args, "--out", str(tmp_path / "command")]) == 0
    script_out = capsys.readouterr().out
    theirs = json.loads((tmp_path / "command" / "metrics.json").read_text())
    assert theirs["checkpoint"] == ours["checkpoint"] and theirs["split"] == "val"
    assert theirs["metrics"] == json.loads((tmp_path / "script" / "metrics.json").read_text())["metrics"]
    assert script_out.count("| t2v_r1_category |") == 2  # both printed the table
