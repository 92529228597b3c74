"""``mmemb export`` and ``mmemb.load`` on a tiny untrained teacher_tiny run of the small demo corpus (n-gram bag,
audio tower, hashtag head): the folder's files, parity, loading without Lightning or pickle, and clear errors
for bad folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO

DATA = {"batch_size": 8, "num_workers": 0,
        "decode": {"num_frames": 4, "frame_size": 32, "audio_seconds": 1.0},
        "labels": {"hashtag_min_freq": 2},
        "text": {"max_length": 32, "vocab_size": 2000, "ngram_buckets": 512, "ngram_max_length": 64}}


def make_run(root: Path, manifest: Path, preset: str = "teacher_tiny", **module_kwargs) -> Path:
    """A run folder as training leaves it (config.yaml, vocab/, version_0/checkpoints/last.ckpt) with an untrained
    module of ``preset``; returns the checkpoint."""
    from mmemb.eval.loading import build_datamodule
    from mmemb.lit.module import EmbeddingModule

    data = {**DATA, "manifest": str(manifest)}
    dm = build_datamodule({"data": data})
    torch.manual_seed(0)
    module = EmbeddingModule(preset=preset, vocab_size=dm.vocab_size, num_hashtags=dm.num_hashtags,
                             num_queries=dm.num_queries, ngram_buckets=dm.ngram_buckets, **module_kwargs)
    module.set_vocabularies(dm.vocabs)  # label names, as the module's setup does in training
    dm.vocabs.save(root / "vocab")
    version = root / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    config = {"model": {"preset": preset}, "data": data, "trainer": {"default_root_dir": str(root)}}
    (version / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    ckpt = version / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ckpt)
    return ckpt


@pytest.fixture(scope="module")
def run(small_demo, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export_run") / "run", small_demo)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, dict]:
    from mmemb.export import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "teacher"
    return out, export_checkpoint(run, out, progress=None)


def _config(out: Path) -> dict:
    return json.loads((out / "config.json").read_text(encoding="utf-8"))


def _demo_records(small_demo: Path, n: int = 4):
    from mmemb.data.manifest import read_manifest

    return read_manifest(small_demo)[:n]


# ----------------------------------------------------------------------------- the folder


def test_export_writes_a_self_contained_folder(run, exported):
    from mmemb.data.labels import LabelVocab

    out, result = exported
    for name in ("model.safetensors", "config.json", "video_encoder.onnx", "text_encoder.onnx", "parity.json",
                 "README.md", "tokenizer/tokenizer.json", "tokenizer/vocab.txt", "labels/hashtags.json",
                 "labels/queries.json"):
        assert (out / name).is_file(), name
    config = _config(out)
    assert config["format"] == "mmemb-export" and config["format_version"] == 1
    assert config["preset"] == "teacher_tiny" and config["model"]["embed_dim"] == 64
    assert config["model"]["text"]["ngram_buckets"] == 512 and config["model"]["use_audio"] is True
    prep = config["preprocessing"]
    assert prep["frames"]["num_frames"] == 4 and prep["frames"]["size"] == 32
    assert prep["frames"]["resize_policy"] == "center_crop" and prep["frames"]["mean"] == [0.485, 0.456, 0.406]
    assert prep["audio"]["sample_rate"] == 16000 and prep["audio"]["n_mels"] == 64 and prep["audio"]["mel_frames"] == 101
    assert prep["tokenizer"]["max_length"] == 32 and prep["text"]["max_length"] == 32
    assert prep["ngrams"]["n"] == 3 and prep["ngrams"]["buckets"] == 512 and "BLAKE2b" in prep["ngrams"]["hash"]
    assert prep["embedding"]["dim"] == 64
    assert [i["name"] for i in config["onnx"]["video"]["inputs"]] == ["frames", "video_mask", "mel", "audio_mask"]
    assert [i["name"] for i in config["onnx"]["text"]["inputs"]] == ["text_ids", "text_attention", "text_field_ids",
                                                                      "text_ngrams"]
    vocab = run.parents[2] / "vocab"
    for kind in ("hashtags", "queries"):  # the run's label vocabularies, in order
        assert LabelVocab.load(out / "labels" / f"{kind}.json").labels == LabelVocab.load(vocab / f"{kind}.json").labels
    assert (out / "tokenizer" / "vocab.txt").read_text() == (vocab / "tokenizer" / "vocab.txt").read_text()
    card = (out / "README.md").read_text(encoding="utf-8")
    for words in ("# mmemb embedding model: `teacher_tiny`", "## Training data", "## Evaluation", "## Intended use",
                  "## Limits", "## Licences", "CC BY-SA 4.0", "synthetic", "180 videos", "mmemb eval tasks"):
        assert words in card, words
    assert "model.safetensors" in result["files"] and "video_encoder.onnx" in result["files"]


def test_model_card_shows_the_runs_evaluation_table(run, tmp_path):
    from mmemb.export.writer import _metrics

    (run.parent / "metrics.json").write_text(json.dumps({"split": "test", "metrics": {
        "t2v_r1_category": 0.5, "t2v_r1_category_chance": 0.17, "n_text": 30, "n_video": 30, "hashtag_map": None}}))
    try:
        table, split = _metrics(run)
    finally:
        (run.parent / "metrics.json").unlink()
    assert split == "test" and "| t2v_r1_category | 0.5000 | 0.1700 |" in table


def test_parity_json_covers_every_graph_and_both_batches(exported):
    out, result = exported
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is True and parity["tolerance"] == 1e-4
    seen = {(c["graph"], c["runtime"], c["batch"]) for c in parity["checks"]}
    assert seen == {(g, r, b) for g in ("video", "text") for r in ("torch", "onnxruntime") for b in (1, 3)}
    assert all(0 <= c["max_abs_diff"] <= 1e-4 for c in parity["checks"])
    assert any(c["zero_rows"] == 1 for c in parity["checks"] if c["graph"] == "text" and c["batch"] == 3)
    assert _config(out)["parity"]["passed"] is True


def test_onnx_graphs_match_the_checkpoint_at_another_batch_size(run, exported):
    """Batch 5 (the graphs were traced at 2, parity checks 1 and 3): the batch axis is dynamic."""
    from mmemb.export.graphs import encoder_modules, example_inputs, graph_specs
    from mmemb.export.parity import onnx_session, run_onnx
    from mmemb.export.writer import model_from_checkpoint

    out, _ = exported
    model, _ = model_from_checkpoint(run)
    sizes = json.loads((out / "parity.json").read_text())["sizes"]
    inputs = example_inputs(model.cfg, sizes, batch=5, seed=7)
    for name, spec in graph_specs(model.cfg).items():
        with torch.inference_mode():
            ref = encoder_modules(model)[name](*[inputs[name][n] for n in spec.input_names]).numpy()
        got = run_onnx(onnx_session(out / spec.file), spec, inputs[name])
        assert got.shape == (5, 64)
        assert abs(got - ref).max() <= 1e-4, name


def test_export_fails_loudly_when_parity_fails(run, tmp_path, monkeypatch, capsys):
    """The command exits non-zero, parity.json says why, and the folder has no config.json (it does not load)."""
    import mmemb.export.parity as parity
    from mmemb.cli import main

    monkeypatch.setattr(parity, "TOLERANCE", 0.0)  # ONNX Runtime differs from eager by ~1e-7
    out = tmp_path / "bad"
    assert main(["export", "--ckpt", str(run), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "parity failed" in err and "parity.json" in err and len(err.strip().splitlines()) == 1
    assert json.loads((out / "parity.json").read_text())["passed"] is False
    assert not (out / "config.json").exists()


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from mmemb.cli import main

    assert main(["export", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmemb export: error:") and "nope.ckpt" in err and len(err.splitlines()) == 1


def test_export_without_the_runs_vocabulary_names_what_is_missing(run, tmp_path):
    from mmemb.export import ExportError, export_checkpoint

    lone = tmp_path / "lone.ckpt"
    shutil.copy(run, lone)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": DATA}))
    with pytest.raises(ExportError, match="no vocabulary"):
        export_checkpoint(lone, tmp_path / "o", progress=None)


# ----------------------------------------------------------------------------- loading


def test_loaded_model_matches_the_training_pipeline_and_the_checkpoint(run, exported, small_demo):
    """Preprocessing equals the training data pipeline's evaluation batches; embeddings equal the
    checkpoint's module on them; the onnx runtime agrees."""
    import mmemb
    from mmemb.data.dataset import collate, encode_record
    from mmemb.data.decode import DecodeConfig
    from mmemb.data.vocab import TextConfig, Vocabularies
    from mmemb.lit.module import EmbeddingModule

    out, _ = exported
    m = mmemb.load(out)
    assert isinstance(m.model, torch.nn.Module) and not m.model.training
    assert m.embed_dim == 64 and m.hashtags and m.hashtags == json.loads((out / "labels/hashtags.json").read_text())["labels"]
    records = _demo_records(small_demo)
    vocabs = Vocabularies.load(run.parents[2] / "vocab")
    decode, text = DecodeConfig(**DATA["decode"]), TextConfig(**DATA["text"])
    ref = collate([encode_record(r, vocabs, decode, text, train=False) for r in records])
    batch = m.preprocess_records(records)
    for key in ("frames", "video_mask", "mel", "audio_mask", "text_ids", "text_attention", "text_field_ids",
                "text_mask", "text_ngrams"):
        assert torch.equal(batch[key], ref[key]), key
    module = EmbeddingModule.from_checkpoint_weights(str(run)).eval()
    with torch.inference_mode():
        expected = module(ref)
    video, texts = m.encode_video(batch), m.encode_text(batch)
    assert torch.allclose(video, expected["video"], atol=1e-5) and torch.allclose(texts, expected["text"], atol=1e-5)
    onnx = mmemb.load(out, runtime="onnx")
    assert onnx.model is None
    assert (onnx.encode_video(batch) - video).abs().max() <= 1e-4
    assert (onnx.encode_text(batch) - texts).abs().max() <= 1e-4
    # raw inputs: a clip that fails is a zero row with its reason; an empty text is a zero row
    clips = m.preprocess_clips([records[0].video, "/no/such/clip.mp4"])
    assert clips["video_error"] == [None, "missing"] and clips["video_mask"].tolist() == [True, False]
    emb = m.encode_video(clips)
    assert torch.allclose(emb[0], video[0], atol=1e-5) and not emb[1].any()
    q = m.embed_texts(["funny cat video", ""])
    assert q.shape == (2, 64) and abs(float(q[0].norm()) - 1) < 1e-5 and not q[1].any()


LOAD_SCRIPT = r"""
import pickle, sys, torch
def refuse(*a, **k):
    raise AssertionError("pickle used while loading an export")
pickle.load = pickle.loads = torch.load = refuse
import mmemb
for runtime in ("torch", "onnx"):
    m = mmemb.load(sys.argv[1], runtime=runtime)
    v = m.embed_videos([sys.argv[2]])
    t = m.embed_texts(["a funny cat"])
    assert v.shape == (1, 64) and t.shape == (1, 64) and float(v.norm()) > 0.99
    if runtime == "torch":
        assert isinstance(m.model, torch.nn.Module)
heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric",
               "jsonargparse") or k.startswith("mmemb.lit") or k in ("mmemb.data.datamodule", "mmemb.export.writer"))
assert not heavy, heavy
print("ok")
"""


def test_load_imports_no_lightning_and_no_pickle(exported, small_demo):
    out, _ = exported
    clip = _demo_records(small_demo, 1)[0].video
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(out), clip], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_import_mmemb_stays_light():
    done = subprocess.run([sys.executable, "-c", "import sys, mmemb; assert 'torch' not in sys.modules; "
                           "assert callable(mmemb.load); print('ok')"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ----------------------------------------------------------------------------- bad folders


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(exported[0], out)
    return out


def _edit_config(folder: Path, edit) -> None:
    config = _config(folder)
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_a_folder_of_another_format_version_is_refused(copy):
    from mmemb.export import ExportError, load

    _edit_config(copy, lambda c: c.update(format_version=99))
    with pytest.raises(ExportError, match=r"config\.json: export format version 99.*reads version 1"):
        load(copy)
    _edit_config(copy, lambda c: c.update(format="something-else", format_version=1))
    with pytest.raises(ExportError, match=r"config\.json: not an mmemb export"):
        load(copy)


@pytest.mark.parametrize("name, runtime", [("model.safetensors", "torch"), ("config.json", "torch"),
                                           ("text_encoder.onnx", "onnx"), ("labels/hashtags.json", "torch"),
                                           ("tokenizer/tokenizer.json", "torch")])
def test_a_missing_file_is_named(copy, name, runtime):
    from mmemb.export import ExportError, load

    (copy / name).unlink()
    with pytest.raises(ExportError, match=rf"{name.replace('.', '[.]')}.*missing file"):
        load(copy, runtime=runtime)


@pytest.mark.parametrize("name, runtime, message", [
    ("model.safetensors", "torch", "not a readable safetensors file"),
    ("video_encoder.onnx", "onnx", "not a loadable ONNX graph"),
    ("config.json", "torch", "not valid JSON"),
    ("labels/queries.json", "torch", "not valid JSON"),
    ("tokenizer/tokenizer.json", "torch", "not a valid tokenizer file"),
])
def test_a_truncated_file_is_named(copy, name, runtime, message):
    from mmemb.export import ExportError, load

    path = copy / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
    with pytest.raises(ExportError, match=rf"{name.replace('.', '[.]')}: {message}"):
        load(copy, runtime=runtime)


def test_a_config_that_does_not_match_the_weights_is_named(copy):
    from mmemb.export import ExportError, load

    _edit_config(copy, lambda c: c["model"]["audio"].update(width=32, heads=2))
    with pytest.raises(ExportError, match=r"model\.safetensors: the weights do not match the model of .*config\.json"
                                          r".*size mismatch"):
        load(copy)
    _edit_config(copy, lambda c: c["model"]["vision"].update(frame_size=33))  # an invalid config value
    with pytest.raises(ExportError, match=r"config\.json: model\.vision: .*frame_size 33"):
        load(copy)


# ----------------------------------------------------------------------------- another preset


def test_a_two_tower_checkpoint_exports_with_its_own_graph_inputs(small_demo, tmp_path):
    """No audio tower, no n-gram bag, no heads: the graphs take only what the model reads."""
    import mmemb
    from mmemb.export import export_checkpoint

    ckpt = make_run(tmp_path / "run", small_demo, preset="two_tower_tiny",
                    loss_weights={"clip_v2t": 0.5, "clip_t2v": 0.5})
    result = export_checkpoint(ckpt, tmp_path / "out", progress=None)
    assert result["parity"]["passed"]
    config = _config(tmp_path / "out")
    assert [i["name"] for i in config["onnx"]["video"]["inputs"]] == ["frames", "video_mask"]
    assert [i["name"] for i in config["onnx"]["text"]["inputs"]] == ["text_ids", "text_attention", "text_field_ids"]
    assert config["preprocessing"]["audio"] is None and config["preprocessing"]["ngrams"] is None
    clip = _demo_records(small_demo, 1)[0].video
    torch_m, onnx_m = mmemb.load(tmp_path / "out"), mmemb.load(tmp_path / "out", runtime="onnx")
    assert "mel" not in torch_m.preprocess_clips([clip])
    assert (torch_m.embed_videos([clip]) - onnx_m.embed_videos([clip])).abs().max() <= 1e-4
    assert (torch_m.embed_texts(["cat"]) - onnx_m.embed_texts(["cat"])).abs().max() <= 1e-4
