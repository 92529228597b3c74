"""Exact resume after a crash: a training process killed mid-epoch (SIGKILL) and resumed from its last
step checkpoint ends with the same weights as an uninterrupted run; and the data-side pieces that make
that hold (the sampler's skip and DDP shards, per-epoch sample randomness independent of the process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmemb.data.sampler import EpochShuffleSampler

REPO = Path(__file__).resolve().parents[1]
BATCH = 32
STEP_EVERY = 3  # step checkpoints at global steps 3, 6, ...
KILL_AT = 7  # mid-epoch 1: with 5 batches per epoch, step 7 is its second batch


def test_sampler_skip_is_one_shot_and_keeps_the_order():
    s = EpochShuffleSampler(range(10), seed=3, epoch=2)
    full = list(s)
    s.skip(4)
    assert list(s) == full[4:]
    assert list(s) == full  # the skip holds for one pass only
    with pytest.raises(ValueError):
        s.skip(-1)


def test_sampler_shards_ranks_like_a_distributed_sampler():
    ranks = [list(EpochShuffleSampler(range(11), seed=0, epoch=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # padded to equal shards
    assert set(ranks[0]) | set(ranks[1]) == set(range(11))
    assert list(EpochShuffleSampler(range(11), seed=0, epoch=1)) != ranks[0]


def test_train_samples_depend_on_epoch_not_on_the_process_rng(small_demo):
    from mmemb.data.datamodule import VideoDataModule
    from mmemb.data.decode import DecodeConfig

    dm = VideoDataModule(manifest=str(small_demo), batch_size=4, num_workers=0,
                         decode=DecodeConfig(num_frames=2, frame_size=32, audio_seconds=0.5))
    dm.setup("fit")
    ds = dm.train_dataset()
    torch.manual_seed(1)
    first = ds[0]["frames"]
    torch.manual_seed(2)  # another process RNG state (another worker, a resumed run)
    assert torch.equal(ds[0]["frames"], first)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["frames"], first)  # a new random segment in the next epoch




def _config(path: Path, kill: bool, record: Path) -> Path:
    """A second ``--config`` after configs/teacher_tiny.yaml: no logger (checkpoints then live under
    default_root_dir/checkpoints), a step checkpoint every STEP_EVERY steps, last.ckpt at epoch ends, and
    (``kill``) the crash."""
    callbacks = [
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": STEP_EVERY, "save_top_k": -1, "filename": "step{step:03d}", "monitor": None,
                       "auto_insert_metric_name": False}},
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"save_top_k": 1, "filename": "last", "monitor": None}},
    ]
    callbacks.append({"class_path": "run_callbacks.RecordBatches", "init_args": {"path": str(record)}})
    if kill:
        callbacks.append({"class_path": "run_callbacks.KillAtStep", "init_args": {"step": KILL_AT}})
    import yaml

    path.write_text(yaml.safe_dump({"trainer": {"logger": False, "max_epochs": 2, "callbacks": callbacks}}))
    return path


def _train(tmp: Path, manifest: Path, root: Path, kill: bool, ckpt: Path | None = None,
           shards: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/teacher_tiny.yaml"),
           "--config", str(_config(tmp / f"extra_{root.name}.yaml", kill, root.with_suffix(".batches"))), "--data.manifest", str(manifest),
           "--data.batch_size", str(BATCH), "--trainer.default_root_dir", str(root)]
    if ckpt is not None:
        cmd += ["--ckpt_path", str(ckpt)]
    if shards is not None:
        cmd += ["--data.shards", str(shards)]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _shards(manifest: Path, out: Path) -> Path:
    """160 of the records in 5 shards of 32: with the config's 2 workers, 96 and 64 samples, so 3 + 2 = 5
    batches of 32 per epoch, as the manifest's train split gives."""
    from mmemb.data.manifest import read_manifest
    from mmemb.data.shards import write_shards

    write_shards(read_manifest(manifest)[:160], out, samples_per_shard=32, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True], ids=["manifest", "shards"])
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(small_demo, tmp_path, streamed):
    shards = _shards(small_demo, tmp_path / "shards") if streamed else None
    straight = _train(tmp_path, small_demo, tmp_path / "straight", kill=False, shards=shards)
    assert straight.returncode == 0, straight.stderr[-3000:]

    crashed = _train(tmp_path, small_demo, tmp_path / "crashed", kill=True, shards=shards)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    ckpt_dir = tmp_path / "crashed" / "checkpoints"
    steps = sorted(ckpt_dir.glob("step*.ckpt"))
    assert steps and steps[-1].name == "step006.ckpt"  # the last one before the crash at step 7
    raw = torch.load(steps[-1], map_location="cpu", weights_only=True)
    progress = raw["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert raw["epoch"] == 1 and progress["processed"] == 1  # mid-epoch: one batch of epoch 1 trained

    resumed = _train(tmp_path, small_demo, tmp_path / "crashed", kill=False, ckpt=steps[-1], shards=shards)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def batches(name: str) -> dict[int, str]:
        lines = (tmp_path / f"{name}.batches.0").read_text().splitlines()
        return {int(line.split()[0]): line for line in lines}

    assert batches("crashed") == batches("straight")  # the same batches at the same steps, resumed ones included
    a = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = _weights(ckpt_dir / "last.ckpt")
    assert a.keys() == b.keys()
    diff = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point()}
    assert max(diff.values()) == 0.0, sorted(diff.items(), key=lambda kv: -kv[1])[:5]
