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
    assert prep["audio"]["sample_rate"] == 16000 and prep["audio"]["n_mels"] == 64
    assert prep["audio"]["mel_frames"] == 101
    assert prep["tokenizer"]["max_length"] == 32 and prep["text"]["max_length"] == 32
    assert prep["ngrams"]["n"] == 3 and prep["ngrams"]["buckets"] == 512 and "BLAKE2b" in prep["ngrams"]["hash"]
    assert prep["embedding"]["dim"] == 64
    assert [i["name"] for i in config["onnx"]["video"]["inputs"]] == ["frames", "video_mask", "mel", "audio_mask",
                                                                       "mel_valid"]
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


def test_short_audio_is_masked_in_both_runtimes_and_an_older_video_graph_still_loads(run, exported, tmp_path,
                                                                                     caplog):
    """A clip shorter than the audio window: its zero padding is masked (``mel_valid``) by the torch model and
    the ONNX graph alike, as in training; an export made before the graph took ``mel_valid`` still loads."""
    import logging

    import mmemb
    from mmemb.export.graphs import example_inputs, export_onnx, graph_specs, legacy_video_spec
    from mmemb.export.writer import model_from_checkpoint

    model, _ = model_from_checkpoint(run)
    model.eval()
    sizes = json.loads((exported[0] / "parity.json").read_text())["sizes"]
    video = example_inputs(model.cfg, sizes, batch=3, seed=3)["video"]
    assert int(video["mel_valid"][0]) < sizes["F"] and bool((video["mel_valid"][1:] == sizes["F"]).all())
    with torch.inference_mode():
        unmasked = model.encode_video({k: v for k, v in video.items() if k != "mel_valid"})  # (3, D)
    masked = mmemb.load(exported[0]).encode_video(video)
    assert (masked[0] - unmasked[0]).abs().max() > 1e-3  # the padding, if read, changes the embedding
    assert (masked[1:] - unmasked[1:]).abs().max() <= 1e-5  # full windows: nothing to mask
    assert (mmemb.load(exported[0], runtime="onnx").encode_video(video) - masked).abs().max() <= 1e-4
    # an older export: its video graph has no mel_valid input; it loads with a warning and runs as made
    old = tmp_path / "old"
    shutil.copytree(exported[0], old)
    spec = legacy_video_spec(graph_specs(model.cfg)["video"])
    export_onnx(model, "video", example_inputs(model.cfg, sizes, batch=2, seed=1)["video"], spec,
                old / "video_encoder.onnx")
    with caplog.at_level(logging.WARNING, logger="mmemb.export.loader"):
        legacy = mmemb.load(old, runtime="onnx")
    assert "exported before the graph took mel_valid" in caplog.text
    assert (legacy.encode_video(video) - unmasked).abs().max() <= 1e-4


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
    assert m.embed_dim == 64 and m.hashtags
    assert m.hashtags == json.loads((out / "labels/hashtags.json").read_text())["labels"]
    records = _demo_records(small_demo)
    vocabs = Vocabularies.load(run.parents[2] / "vocab")
    decode, text = DecodeConfig(**DATA["decode"]), TextConfig(**DATA["text"])
    ref = collate([encode_record(r, vocabs, decode, text, train=False) for r in records])
    batch = m.preprocess_records(records)
    for key in ("frames", "video_mask", "mel", "audio_mask", "mel_valid", "text_ids", "text_attention",
                "text_field_ids", "text_mask", "text_ngrams"):
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


# ----------------------------------------------------------------------------- other presets


# (preset, module kwargs, video graph inputs, text graph inputs): the first model (no audio tower, no n-gram
# bag, no heads) and the distilled student (no audio tower, n-gram bag and label heads), when registered
OTHER_PRESETS = [
    ("two_tower_tiny", {"loss_weights": {"clip_v2t": 0.5, "clip_t2v": 0.5}}, ["frames", "video_mask"],
     ["text_ids", "text_attention", "text_field_ids"]),
    ("student_tiny", {}, ["frames", "video_mask"], ["text_ids", "text_attention", "text_field_ids", "text_ngrams"]),
]


@pytest.mark.parametrize("preset, kwargs, video_inputs, text_inputs", OTHER_PRESETS, ids=[p[0] for p in OTHER_PRESETS])
def test_other_presets_export_with_their_own_graph_inputs(small_demo, tmp_path, preset, kwargs, video_inputs,
                                                          text_inputs):
    """The graphs take only what the model reads; both runtimes agree on real clips."""
    import mmemb
    from mmemb.export import export_checkpoint
    from mmemb.models import list_models

    if preset not in list_models():
        pytest.skip(f"no {preset} preset in this checkout")
    ckpt = make_run(tmp_path / "run", small_demo, preset=preset, **kwargs)
    result = export_checkpoint(ckpt, tmp_path / "out", progress=None)
    assert result["parity"]["passed"]
    config = _config(tmp_path / "out")
    assert config["preset"] == preset
    assert [i["name"] for i in config["onnx"]["video"]["inputs"]] == video_inputs
    assert [i["name"] for i in config["onnx"]["text"]["inputs"]] == text_inputs
    assert config["preprocessing"]["audio"] is None
    assert (config["preprocessing"]["ngrams"] is None) == ("text_ngrams" not in text_inputs)
    clip = _demo_records(small_demo, 1)[0].video
    torch_m, onnx_m = mmemb.load(tmp_path / "out"), mmemb.load(tmp_path / "out", runtime="onnx")
    assert "mel" not in torch_m.preprocess_clips([clip])
    assert (torch_m.embed_videos([clip]) - onnx_m.embed_videos([clip])).abs().max() <= 1e-4
    assert (torch_m.embed_texts(["cat"]) - onnx_m.embed_texts(["cat"])).abs().max() <= 1e-4


# ----------------------------------------------------------------------------- mmemb embed and mmemb data scan


def _parquet(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


@pytest.fixture(scope="module")
def manifest(small_demo, tmp_path_factory) -> Path:
    """Four demo records, one whose clip is missing, one without a clip, one without text."""
    import dataclasses

    from mmemb.data.manifest import VideoRecord, write_manifest

    records = _demo_records(small_demo, 5)
    records += [dataclasses.replace(records[0], id="gone", video=str(tmp_path_factory.mktemp("x") / "gone.mp4")),
                VideoRecord(id="textonly", caption="a funny cat"),
                dataclasses.replace(records[1], id="silent", caption=None, cover_text=None, asr=None, comments=[],
                                    hashtags=[])]
    return write_manifest(records, tmp_path_factory.mktemp("embed_manifest") / "m.jsonl")


def test_embed_a_manifest_writes_null_vectors_with_their_reason(exported, manifest, tmp_path, capsys):
    import mmemb
    from mmemb.cli import main
    from mmemb.data.manifest import read_manifest

    out_dir, _ = exported
    out = tmp_path / "e.parquet"
    assert main(["embed", "--model", str(out_dir), "--manifest", str(manifest), "--out", str(out), "--batch-size", "3",
                 "--quiet"]) == 0
    assert "8 rows (8 added" in capsys.readouterr().out
    rows = _parquet(out)
    assert rows["id"] == [r.id for r in read_manifest(manifest)]
    by_id = {i: {k: v[n] for k, v in rows.items()} for n, i in enumerate(rows["id"])}
    assert by_id["gone"]["video"] is None and by_id["gone"]["video_missing"] == "missing"
    assert by_id["gone"]["video_error"] == "missing" and by_id["gone"]["text"] is not None
    assert by_id["textonly"]["video"] is None and by_id["textonly"]["video_missing"] == "no_clip"
    assert by_id["silent"]["text"] is None and by_id["silent"]["text_missing"] == "no_text"
    assert by_id["silent"]["video"] is not None
    m = mmemb.load(out_dir)
    records = read_manifest(manifest)[:5]
    batch = m.preprocess_records(records)
    video, text = m.encode_video(batch), m.encode_text(batch)
    got_video = torch.tensor([by_id[r.id]["video"] for r in records])
    got_text = torch.tensor([by_id[r.id]["text"] for r in records])
    assert torch.allclose(got_video, video, atol=1e-6) and torch.allclose(got_text, text, atol=1e-6)
    assert all(v is None or abs(float(torch.tensor(v).norm()) - 1) < 1e-5 for v in rows["video"] + rows["text"])
    onnx_out = tmp_path / "onnx.parquet"
    assert main(["embed", "--model", str(out_dir), "--manifest", str(manifest), "--out", str(onnx_out), "--runtime",
                 "onnx", "--quiet"]) == 0
    onnx_rows = _parquet(onnx_out)
    assert onnx_rows["video_missing"] == rows["video_missing"] and onnx_rows["text_missing"] == rows["text_missing"]
    for a, b in zip(onnx_rows["video"] + onnx_rows["text"], rows["video"] + rows["text"]):
        assert (a is None) == (b is None) and (a is None or max(abs(x - y) for x, y in zip(a, b)) <= 1e-4)


def test_embed_resumes_after_an_interruption_and_refuses_another_export(exported, manifest, tmp_path, monkeypatch):
    from mmemb.export import ExportError
    from mmemb.export.embed import embed
    from mmemb.export.loader import ExportedModel

    out_dir, _ = exported
    out = tmp_path / "e.parquet"
    calls = {"n": 0}
    real = ExportedModel.encode_video

    def crash_on_third(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(ExportedModel, "encode_video", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        embed(out_dir, out, manifest=str(manifest), batch_size=2, chunk_size=2, show_progress=False)
    assert len(list((tmp_path / "e.parquet.parts").glob("part-*.parquet"))) == 2 and not out.exists()
    monkeypatch.setattr(ExportedModel, "encode_video", real)
    result = embed(out_dir, out, manifest=str(manifest), batch_size=2, chunk_size=2, show_progress=False)
    assert result["skipped"] == 4 and result["added"] == 4 and result["rows"] == 8
    ids = _parquet(out)["id"]
    assert len(ids) == len(set(ids)) == 8 and not (tmp_path / "e.parquet.parts").exists()
    again = embed(out_dir, out, manifest=str(manifest), show_progress=False)
    assert again["added"] == 0 and again["rows"] == 8
    other = tmp_path / "other"
    shutil.copytree(out_dir, other)
    _edit_config(other, lambda c: c["source"].update(checkpoint="elsewhere.ckpt"))
    with pytest.raises(ExportError, match="written with another export"):
        embed(other, out, manifest=str(manifest), show_progress=False)
    with pytest.raises(ExportError, match=r"holds \['video', 'text'\] embeddings, this input gives \['text'\]"):
        embed(out_dir, out, texts=["a cat"], show_progress=False)


def test_embed_a_folder_of_clips_and_scan_it(exported, small_demo, tmp_path, capsys):
    from mmemb.cli import main

    out_dir, _ = exported
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    records = _demo_records(small_demo, 3)
    shutil.copy(records[0].video, clips / "a.mp4")
    shutil.copy(records[1].video, clips / "sub" / "b.mp4")
    (clips / "sub" / "broken.mp4").write_bytes(b"not a video at all")
    (clips / "notes.txt").write_text("not a clip")
    out = tmp_path / "v.parquet"
    assert main(["embed", "--model", str(out_dir), "--videos", str(clips), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "not_media" in printed and "broken.mp4" in printed  # the failure table, as in training
    rows = _parquet(out)
    assert rows["id"] == ["a.mp4", "sub/b.mp4", "sub/broken.mp4"] and "text" not in rows
    assert rows["video"][2] is None and rows["video_missing"][2] == "not_media" and rows["video"][0] is not None
    glob_out = tmp_path / "g.parquet"
    assert main(["embed", "--model", str(out_dir), "--videos", str(clips / "sub" / "*.mp4"), "--out", str(glob_out),
                 "--quiet"]) == 0
    assert _parquet(glob_out)["id"] == ["b.mp4", "broken.mp4"]
    # another batch (other clips beside it): equal up to float rounding, which on some CPUs depends on the batch
    assert torch.allclose(torch.tensor(_parquet(glob_out)["video"][0]), torch.tensor(rows["video"][1]), atol=1e-6)
    scanned = tmp_path / "scan.jsonl"
    assert main(["data", "scan", str(clips), str(scanned)]) == 0
    lines = [json.loads(line) for line in scanned.read_text().splitlines()]
    assert [r["id"] for r in lines] == rows["id"] and lines[0]["video"] == "clips/a.mp4"
    from_manifest = tmp_path / "m.parquet"
    assert main(["embed", "--model", str(out_dir), "--manifest", str(scanned), "--out", str(from_manifest),
                 "--quiet"]) == 0
    m_rows = _parquet(from_manifest)
    assert m_rows["video"] == rows["video"] and m_rows["text_missing"] == ["no_text"] * 3
    assert main(["data", "scan", str(tmp_path / "nothing"), str(tmp_path / "x.jsonl")]) == 2


def test_embed_texts_from_a_file_and_the_command_line(exported, tmp_path):
    import mmemb
    from mmemb.cli import main

    out_dir, _ = exported
    m = mmemb.load(out_dir)
    (tmp_path / "q.txt").write_text("funny cat\n\n猫咪 搞笑\n", encoding="utf-8")
    out = tmp_path / "q.parquet"
    assert main(["embed", "--model", str(out_dir), "--texts", str(tmp_path / "q.txt"), "--out", str(out),
                 "--quiet"]) == 0
    rows = _parquet(out)
    assert rows["id"] == ["1", "2", "3"] and rows["input"] == ["funny cat", "", "猫咪 搞笑"] and "video" not in rows
    assert rows["text"][1] is None and rows["text_missing"] == [None, "no_text", None]
    expected = m.embed_texts(["funny cat", "猫咪 搞笑"])
    assert torch.allclose(torch.tensor([rows["text"][0], rows["text"][2]]), expected, atol=1e-6)
    one = tmp_path / "one.parquet"
    assert main(["embed", "--model", str(out_dir), "--text", "funny cat", "--text", "dog", "--out", str(one),
                 "--quiet"]) == 0
    assert _parquet(one)["id"] == ["funny cat", "dog"]
    # another batch (padded to another length): equal up to float rounding, which on some CPUs depends on the shapes
    assert torch.allclose(torch.tensor(_parquet(one)["text"][0]), torch.tensor(rows["text"][0]), atol=1e-6)


def test_embed_runs_with_the_threads_it_is_given_and_restores_torchs(exported, tmp_path, monkeypatch):
    from mmemb.export.embed import embed

    out_dir, _ = exported
    seen = []
    import mmemb.export.loader as loader

    real = loader.ExportedModel.encode_text
    monkeypatch.setattr(loader.ExportedModel, "encode_text",
                        lambda self, batch: seen.append(torch.get_num_threads()) or real(self, batch))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        embed(out_dir, tmp_path / "a.parquet", texts=["funny cat"], show_progress=False)  # default: 1 thread
        embed(out_dir, tmp_path / "b.parquet", texts=["funny cat"], threads=None, show_progress=False)
        assert seen == [1, 2] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads"):
            embed(out_dir, tmp_path / "c.parquet", texts=["funny cat"], threads=0, show_progress=False)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- short texts


def test_text_batches_are_trimmed_to_their_longest_row_with_the_same_embeddings(exported):
    """The text graph takes any token / n-gram length, and encoding trims the padded batch: a short query
    embeds exactly as at the preprocessing's full lengths, in both runtimes."""
    import mmemb
    from mmemb.export.loader import trim_text_batch
    from mmemb.export.parity import onnx_session

    out, _ = exported
    session = onnx_session(out / "text_encoder.onnx")
    assert [i.shape[1] for i in session.get_inputs()] == ["tokens", "tokens", "tokens", "ngrams"]
    texts = ["funny cat", "猫咪搞笑视频 cat", "", "a much longer caption with many more tokens than the others"]
    for runtime in ("torch", "onnx"):
        m = mmemb.load(out, runtime=runtime)
        assert m.trim_text
        batch = m.preprocess_texts(texts)
        trimmed = trim_text_batch(batch)
        longest = int(batch["text_attention"].sum(1).max())
        assert trimmed["text_ids"].shape == (4, longest) < batch["text_ids"].shape
        assert trimmed["text_ngrams"].shape[1] == int((batch["text_ngrams"] != 0).sum(1).max())
        short = m.encode_text(batch)
        m.trim_text = False
        padded = m.encode_text(batch)
        assert (short - padded).abs().max() <= 1e-5, runtime
        assert not short[2].any()  # the empty text stays a zero row
        one = m.embed_texts(["funny cat"])
        m.trim_text = True
        assert (m.embed_texts(["funny cat"]) - one).abs().max() <= 1e-5
    empty = trim_text_batch(mmemb.load(out).preprocess_texts([""]))
    assert empty["text_ids"].shape == (1, 1) and empty["text_ngrams"].shape == (1, 1)  # never a 0-length axis


def test_query_path_builds_trimmed_arrays_and_embeds_like_the_padded_batch(exported):
    """``text_arrays(trim=True)`` is the padded batch cut at its longest row (tokens and n-grams); the ONNX
    ``embed_texts`` (numpy arrays straight to the session) gives the torch model's padded embeddings."""
    import numpy as np

    import mmemb

    out, _ = exported
    texts = ["funny cat", "", "猫咪搞笑视频 cat", "a much longer caption with many more tokens than the others"]
    torch_model, onnx_model = mmemb.load(out), mmemb.load(out, runtime="onnx")
    prep = torch_model.preprocessor
    rows = prep.single_text_rows(texts)
    full, cut = prep.text_arrays(rows), prep.text_arrays(rows, trim=True)
    length, grams = cut["text_ids"].shape[1], cut["text_ngrams"].shape[1]
    assert length == full["text_attention"].sum(1).max() < full["text_ids"].shape[1]
    assert grams == (full["text_ngrams"] != 0).sum(1).max() < full["text_ngrams"].shape[1]
    for key, n in (("text_ids", length), ("text_attention", length), ("text_field_ids", length),
                   ("text_ngrams", grams)):
        assert cut[key].dtype == np.int64
        np.testing.assert_array_equal(cut[key], full[key][:, :n])
        assert not full[key][:, n:].any()  # only padding was cut
    np.testing.assert_array_equal(cut["text_mask"], [True, False, True, True])
    torch_model.trim_text = False
    padded = torch_model.encode_text(torch_model.preprocess_texts(texts))
    got = onnx_model.embed_texts(texts)
    assert got.shape == padded.shape and (got - padded).abs().max() <= 1e-5
    assert not got[1].any() and got[0].norm() > 0.99  # the empty text is a zero row
    empty = prep.text_arrays([[None]], trim=True)
    assert empty["text_ids"].shape == (1, 1) and empty["text_ngrams"].shape == (1, 1)  # never a 0-length axis
    with pytest.raises(TypeError, match="wrap it in a list"):
        onnx_model.embed_texts("funny cat")


def test_text_graph_has_no_loop_and_export_restores_the_attention(exported):
    """The exported text graph gathers the n-gram bag (no ONNX Loop) and uses plain attention (no SDPA
    guards); :func:`eager_attention` puts the model's own attention implementation back."""
    import onnx

    import mmemb
    from mmemb.export.graphs import eager_attention

    out, _ = exported
    ops = {node.op_type for node in onnx.load(str(out / "text_encoder.onnx")).graph.node}
    assert "Loop" not in ops and "IsNaN" not in ops and "Gather" in ops
    model = mmemb.load(out).model
    config = model.text.bert.config
    before = config._attn_implementation
    assert before != "eager"
    with eager_attention(model):
        assert config._attn_implementation == "eager"
    assert config._attn_implementation == before


def test_int8_text_graph_is_checked_loaded_on_request_and_kept_apart(run, exported, tmp_path, monkeypatch):
    """``--int8-text`` writes the int8 text graph with its own check (cosine to the float graph) in
    parity.json; ``load(int8_text=True)`` runs it (close to, not equal to, the float embeddings; empty text
    still a zero row); an export without it, the torch runtime, a failed check and an embed file of the
    float graph are clear errors."""
    import mmemb
    import mmemb.export.quantize as quantize
    from mmemb.export import ExportError, export_checkpoint
    from mmemb.export.embed import embed

    out = tmp_path / "int8"
    result = export_checkpoint(run, out, progress=None, int8_text=True)
    report = result["parity"]["int8_text"]
    assert report["passed"] and report["min_cosine"] >= quantize.MIN_COSINE and report["zero_rows_kept"]
    assert json.loads((out / "parity.json").read_text())["int8_text"] == report
    assert _config(out)["files"]["text_encoder_int8"] == "text_encoder.int8.onnx"
    texts = ["funny cat", "", "猫咪搞笑视频 cat"]
    float_model = mmemb.load(out, runtime="onnx")
    int8_model = mmemb.load(out, runtime="onnx", int8_text=True)
    assert int8_model.int8_text and not float_model.int8_text
    a, b = float_model.embed_texts(texts), int8_model.embed_texts(texts)
    cosine = (a * b).sum(1)
    assert cosine[0] >= 0.99 and cosine[2] >= 0.99 and not b[1].any()
    assert (a - b).abs().max() > 1e-6  # it is another graph, not the float one again

    float_out, _ = exported
    with pytest.raises(ExportError, match="no int8 text graph.*--int8-text"):
        mmemb.load(float_out, runtime="onnx", int8_text=True)
    with pytest.raises(ExportError, match="runtime='onnx'"):
        mmemb.load(out, int8_text=True)
    embed(out, tmp_path / "q.parquet", texts=["funny cat"], runtime="onnx", show_progress=False)
    with pytest.raises(ExportError, match="another export"):
        embed(out, tmp_path / "q.parquet", texts=["funny cat"], runtime="onnx", int8_text=True, show_progress=False)

    monkeypatch.setattr(quantize, "MIN_COSINE", 1.5)  # no graph can pass: the export must fail, naming parity.json
    with pytest.raises(ExportError, match="parity.json: the int8 text graph is too far"):
        export_checkpoint(run, tmp_path / "bad", progress=None, int8_text=True)
    assert not (tmp_path / "bad" / "config.json").exists()


@pytest.mark.parametrize("option, value", [("--threads", "0"), ("--batch-size", "0"), ("--workers", "-1"),
                                           ("--chunk-size", "0")])
def test_embed_refuses_counts_out_of_range_in_one_line(option, value, tmp_path, capsys):
    from mmemb.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--model", str(tmp_path), "--text", "hi", "--out", str(tmp_path / "o.parquet"), option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be an integer >=" in err and "Traceback" not in err


def test_query_path_hashes_the_n_gram_lengths_of_the_training_data(exported):
    """An export whose data hashed char 1-3-grams (``ngram_min_n``) hashes a query's n-grams as training did:
    the preprocessor's ``text_ngrams`` equal the data set's :func:`encode_ngrams` of the same fields."""
    import dataclasses

    import numpy as np

    import mmemb
    from mmemb.data.dataset import encode_ngrams

    out, _ = exported
    prep = mmemb.load(out).preprocessor
    prep.text = dataclasses.replace(prep.text, ngram_min_n=1)
    rows = prep.single_text_rows(["猫咪搞笑视频 cat", "a"])
    got = prep.text_arrays(rows)["text_ngrams"]
    for row, fields in zip(got, rows):
        np.testing.assert_array_equal(row, encode_ngrams(fields, prep.text).numpy())
    assert (got[0] != 0).sum() == (6 + 5 + 4) + (5 + 4 + 3)  # 1-, 2-, 3-grams of 猫咪搞笑视频 and of #cat#


def test_an_export_keeps_the_wide_heads_and_their_pooling(small_demo, tmp_path):
    """A model with wide label heads (``teacher_text_wide``'s settings) exports and loads with them: the
    config's ``wide_pooling`` / ``wide_loss`` and the wide tables come back, and the loaded model's hashtag
    logits (deep + wide) equal the checkpoint module's on the same preprocessed clips and texts."""
    import mmemb
    from mmemb.export import export_checkpoint
    from mmemb.lit.module import EmbeddingModule

    wide = {"wide_ngram_heads": True, "wide_pooling": "l2_sublinear", "wide_loss": "bce"}
    ckpt = make_run(tmp_path / "run", small_demo, overrides=wide)
    state = torch.load(ckpt, weights_only=True)
    torch.manual_seed(1)
    state["state_dict"]["model.hashtag_wide.bag.weight"].normal_()  # not zero, as after training
    torch.save(state, ckpt)
    out = tmp_path / "export"
    export_checkpoint(ckpt, out, progress=None)
    loaded = mmemb.load(out)
    assert loaded.model_config.wide_pooling == "l2_sublinear" and loaded.model_config.wide_loss == "bce"
    assert loaded.model.hashtag_wide.pooling == "l2_sublinear"
    module = EmbeddingModule.from_checkpoint_weights(ckpt).eval()
    batch = loaded.preprocess_records(_demo_records(small_demo, 3))
    with torch.no_grad():
        got, want = loaded.model(batch)["hashtag_logits"], module.model(batch)["hashtag_logits"]
        wide_part = module.model(batch)["hashtag_wide_logits"]
    assert wide_part.abs().sum() > 0
    torch.testing.assert_close(got, want)
