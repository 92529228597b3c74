"""Training: the LightningModule on synthetic batches, the CLI on the demo corpus, and the learning test."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO
from test_models import synthetic_batch
from torch.utils.data import DataLoader

from mmemb.lit.module import EmbeddingModule
from mmemb.lit.optim import warmup_cosine

CLIP_ONLY = {"clip_v2t": 0.5, "clip_t2v": 0.5}  # the two-tower model's loss (configs/tiny.yaml)


def _two_tower(**kwargs) -> EmbeddingModule:
    return EmbeddingModule(**{"preset": "two_tower_tiny", "vocab_size": 300, "loss_weights": CLIP_ONLY, **kwargs})


def _script(name: str):
    """Import a top-level script (train.py, evaluate.py) as a module."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the module alone


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 20) == pytest.approx(1.0)
    assert warmup_cosine(12, 4, 20) == pytest.approx(0.5)  # half-way through the cosine
    assert warmup_cosine(20, 4, 20, min_ratio=0.1) == pytest.approx(0.1)
    after = [warmup_cosine(s, 4, 20) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert warmup_cosine(0, 0, 10) == pytest.approx(1.0)


def _loader(n_batches: int, seed: int = 0) -> DataLoader:
    batches = []
    for i in range(n_batches):
        batch = synthetic_batch(b=6, seed=seed + i)
        batch["video_mask"][1] = False  # one clip per batch failed to decode
        batch["frames"][1] = 0.0
        batch["video_error"][1] = "truncated"
        batches.append(batch)
    return DataLoader(batches, batch_size=None, shuffle=False)


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    from mmemb.lit.callbacks import DecodeFailureSummary

    best = pl.callbacks.ModelCheckpoint(monitor="val/t2v_r1_category", mode="max", filename="best-{epoch}",
                                        save_top_k=1)
    last = pl.callbacks.ModelCheckpoint(save_top_k=1, filename="last")  # as in configs/*.yaml
    defaults = dict(default_root_dir=tmp_path, accelerator="cpu", devices=1, max_epochs=2, log_every_n_steps=1,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    logger=pl.loggers.CSVLogger(tmp_path, name=""), callbacks=[best, last, DecodeFailureSummary()])
    return pl.Trainer(**{**defaults, **kwargs})


def test_module_fits_logs_checkpoints_and_predicts(tmp_path):
    pl.seed_everything(0)
    module = _two_tower(overrides={"embed_dim": 32}, lr=1e-3, warmup_fraction=0.25)
    assert module.config.embed_dim == 32 and module.config.text.vocab_size == 300
    trainer = _trainer(tmp_path)
    trainer.fit(module, train_dataloaders=_loader(3), val_dataloaders=_loader(2, seed=10))
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/clip_v2t", "train/clip_t2v", "train/logit_scale", "val/loss",
                "val/t2v_r1_category", "val/v2t_r1_category", "val/t2v_r1_instance", "val/t2v_r5_instance",
                "val/chance_r1_category"):
        assert key in metrics, key
    # 12 val samples, 2 without video; categories 0,1,2,0,1,2 per batch -> the gallery holds 10 videos
    assert metrics["val/n_video"].item() == 10 and metrics["val/n_text"].item() == 12
    assert 0.0 <= metrics["val/t2v_r1_category"].item() <= 1.0
    # the learning rate followed warmup + cosine down to ~0 over the 6 steps
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs[0] == pytest.approx(1e-3 * warmup_cosine(6, 1, 6), abs=1e-9)
    rows = list(csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv")))
    assert any(r.get("val/t2v_r1_category") for r in rows) and any(r.get("train/loss") for r in rows)

    # checkpoints load without unpickling code, and rebuild the same model
    last = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
    raw = torch.load(last, map_location="cpu", weights_only=True)
    assert raw["global_step"] == trainer.global_step == 6  # written after the last epoch, best or not
    assert raw["hyper_parameters"]["overrides"] == {"embed_dim": 32}
    rebuilt = EmbeddingModule.from_checkpoint_weights(str(last)).eval()
    batch = synthetic_batch(b=6, seed=99)
    module.eval()
    with torch.no_grad():
        for key in ("video", "text"):
            torch.testing.assert_close(rebuilt(batch)[key], module(batch)[key])

    preds = trainer.predict(module, dataloaders=_loader(2, seed=20))
    assert preds[0]["ids"] == [f"v{i}" for i in range(6)]
    assert preds[0]["video"].shape == (6, 32) and torch.all(preds[0]["video"][1] == 0)
    assert preds[0]["video"][0].norm().item() == pytest.approx(1.0, abs=1e-5)


def test_module_arguments_are_checked():
    with pytest.raises(KeyError, match="two_tower_tiny"):
        EmbeddingModule(preset="nope")
    with pytest.raises(ValueError, match="warmup_fraction"):
        _two_tower(warmup_fraction=1.5)
    with pytest.raises(KeyError, match="clip_v2t"):
        _two_tower(loss_weights={"bogus": 1.0})


def test_module_test_step_uses_test_prefix(tmp_path):
    module = _two_tower()
    trainer = _trainer(tmp_path, logger=False, enable_checkpointing=False, callbacks=[])
    (result,) = trainer.test(module, dataloaders=_loader(2), verbose=False)
    assert {"test/t2v_r1_category", "test/t2v_r1_instance", "test/chance_r1_category", "test/loss"} <= set(result)
    # 12 text queries, 4 per category; the 10 videos (sample 1, category 1, has none) hold 4, 2, 4
    assert result["test/chance_r1_category"] == pytest.approx((4 * 0.4 + 4 * 0.2 + 4 * 0.4) / 12)


# ----------------------------------------------------------------------------- the CLI on the demo corpus


def _cli_args(config: str, manifest: Path, root: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / config), "--data.manifest", str(manifest),
            "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root), *extra]


@pytest.fixture()
def bare_argv(monkeypatch):
    """LightningCLI warns when both ``args`` and ``sys.argv`` (pytest's) carry arguments."""
    monkeypatch.setattr(sys, "argv", ["train.py"])


@pytest.mark.slow
def test_tiny_config_learns_and_evaluates(learning_demo, tmp_path, capsys, bare_argv):
    cli = _script("train").main(_cli_args("tiny.yaml", learning_demo, tmp_path, "--data.split.val_fraction=0.3",
                                          "--data.split.test_fraction=0.0"))
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    chance = metrics["val/chance_r1_category"]
    assert 0.1 < chance < 0.25  # ~1/6, computed from the validation categories
    # the last epoch is clearly above chance in both directions ...
    assert metrics["val/t2v_r1_category"] > 1.5 * chance
    assert metrics["val/v2t_r1_category"] > 2 * chance
    assert metrics["train/loss"] < math.log(16)  # below the loss of a random embedding at batch size 16

    # ... and the best checkpoint, found and evaluated by evaluate.py from the run folder, beats 1.75x chance
    # (it reaches ~2.3x here; the margin leaves room for float differences across CPUs)
    result = _script("evaluate").main(["--run", str(tmp_path), "--split", "val", "--num-workers", "0"])
    best = cli.trainer.checkpoint_callback
    assert Path(result["checkpoint"]).resolve() == Path(best.best_model_path).resolve()
    last = torch.load(Path(best.dirpath) / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == cli.trainer.max_epochs - 1
    val = result["metrics"]
    assert val["t2v_r1_category"] == pytest.approx(best.best_model_score.item(), abs=1e-6)
    assert val["chance_r1_category"] == pytest.approx(chance)
    assert val["t2v_r1_category"] > 1.75 * val["chance_r1_category"]
    saved = json.loads((Path(result["checkpoint"]).parent / "metrics.json").read_text())
    assert saved["split"] == "val" and saved["metrics"]["t2v_r1_category"] == val["t2v_r1_category"]
    out = capsys.readouterr().out
    assert "| metric | value | chance |" in out and "| t2v_r1_category |" in out


def test_checkpoint_rebuild_does_not_need_the_pretrained_file(tmp_path):
    from safetensors.torch import save_file

    from mmemb.models import create_model

    vit = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in
               create_model("two_tower_tiny", text={"vocab_size": 50}).visual.vit.state_dict().items()}, str(vit))
    module = _two_tower(vocab_size=50, overrides={"vision": {"pretrained_path": str(vit)}})
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "m.ckpt")
    vit.unlink()  # moved or deleted after training: the checkpoint holds the weights
    rebuilt = EmbeddingModule.from_checkpoint_weights(str(tmp_path / "m.ckpt"))
    torch.testing.assert_close(rebuilt.model.visual.vit.pos_embed, module.model.visual.vit.pos_embed)


def test_data_wait_timer_counts_waits_between_steps_but_not_the_first():
    import time

    from mmemb.lit.callbacks import DataWaitTimer

    timer = DataWaitTimer()
    for epoch in range(2):
        timer.on_train_epoch_start(None, None)
        for i in range(3):
            time.sleep(0.3 if (epoch, i) == (0, 0) else 0.02)  # worker start-up, then the loader's wait
            timer.on_train_batch_start(None, None, None, i)
            time.sleep(0.02)  # the step
            timer.on_train_batch_end(None, None, None, None, i)
    assert timer.steps == 5  # every batch but the very first, later epochs' first batches included
    assert 0.1 <= timer.wait < 0.3  # five waits of 20 ms, not the 300 ms start-up
    assert 0.3 < timer.wait_share < 0.7


@pytest.mark.slow
def test_same_seed_same_weights(small_demo, tmp_path, monkeypatch):
    """Two seeded runs of the tiny config on one machine end with identical weights (also with a
    DataLoader worker: each sample's random choices depend on the seed, the epoch and the sample only)."""
    from mmemb.lit.cli import main

    monkeypatch.chdir(tmp_path)
    weights = []
    for name in ("a", "b"):
        root = tmp_path / name
        main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.manifest", str(small_demo),
              "--data.max_videos", "60", "--data.num_workers", "1", "--trainer.max_epochs", "2",
              "--trainer.default_root_dir", str(root)])
        ckpt = next(root.glob("version_*/checkpoints/last.ckpt"))
        weights.append(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    a, b = weights
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
