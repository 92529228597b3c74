"""DDP end to end on the CPU: ``mmemb fit`` of the tiny config in 2 gloo processes with the real
DataModule (map-style manifest and streamed shards), each rank on its own data; one merged validation
(the DistributedSampler's padded duplicates dropped) equal to a single process's; a checkpoint that loads
in one process. (That the InfoNCE negatives of every rank reach each rank's loss, with the gradients of a
single process, is tested in test_objectives.py.)"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MAX_VIDEOS = 120  # small_demo's first 120: 94 train videos, 9 validation videos (odd: one padded duplicate)


def _mmemb(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmemb.cli", *args]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)


def _common(manifest: Path, root: Path, devices: int) -> list[str]:
    return ["--config", str(REPO / "configs/teacher_tiny.yaml"), "--data.manifest", str(manifest),
            "--data.max_videos", str(MAX_VIDEOS), "--data.num_workers", "0", "--data.batch_size", "16",
            "--trainer.default_root_dir", str(root), "--trainer.devices", str(devices),
            "--trainer.strategy", "ddp" if devices > 1 else "auto"]


def _record_config(tmp: Path, record: Path) -> Path:
    path = tmp / f"record_{record.name}.yaml"
    callbacks = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                  "init_args": {"save_top_k": 1, "filename": "last", "monitor": None}},
                 {"class_path": "run_callbacks.RecordBatches", "init_args": {"path": str(record)}}]
    path.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1, "callbacks": callbacks}}))
    return path


def _ids_per_rank(record: Path) -> list[list[str]]:
    ranks = []
    for rank in (0, 1):
        lines = Path(f"{record}.{rank}").read_text().splitlines()
        ranks.append([i for line in lines for i in line.split()[1:]])
    return ranks


def _val_metrics(root: Path) -> dict[str, float]:
    """The ``val/*`` row of the newest version's metrics.csv (a ``validate`` run logs one)."""
    versions = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(versions[-1] / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/t2v_r1_category")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v != ""}


@pytest.mark.slow
def test_ddp_fit_validate_and_load_in_one_process(small_demo, tmp_path):
    from mmemb.data.datamodule import VideoDataModule

    splits = VideoDataModule(manifest=str(small_demo), max_videos=MAX_VIDEOS).splits
    assert len(splits["val"]) % 2 == 1  # the DistributedSampler pads one rank with a duplicate

    root, record = tmp_path / "ddp", tmp_path / "ddp.batches"
    fit = _mmemb(tmp_path, "fit", *_common(small_demo, root, 2), "--config", str(_record_config(tmp_path, record)))
    assert fit.returncode == 0, fit.stderr[-3000:]
    rank0, rank1 = _ids_per_rank(record)
    train_ids = {str(r.id) for r in splits["train"]}
    assert len(rank0) == len(rank1) == len(train_ids) // 2  # 94 videos: 47 per rank, no padding
    assert not set(rank0) & set(rank1) and set(rank0) | set(rank1) == train_ids  # disjoint, together all

    ckpt = next(root.glob("version_*/checkpoints/last.ckpt"))
    metrics = {}
    for devices in (2, 1):
        out = tmp_path / f"validate{devices}"
        run = _mmemb(tmp_path, "validate", *_common(small_demo, out, devices), "--ckpt_path", str(ckpt))
        assert run.returncode == 0, run.stderr[-3000:]
        metrics[devices] = _val_metrics(out)
    keys = {k for k in metrics[1] if k != "val/loss"}  # the loss is a mean over each rank's batches
    assert keys and keys <= set(metrics[2])
    for k in sorted(keys):
        a, b = metrics[2][k], metrics[1][k]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6), k

    from mmemb.lit.module import EmbeddingModule

    module = EmbeddingModule.from_checkpoint_weights(str(ckpt))  # one process, weights_only
    assert module.hparams.preset == "teacher_tiny"


@pytest.mark.slow
def test_ddp_fit_from_shards_deals_disjoint_data(small_demo, tmp_path):
    shards = tmp_path / "shards"
    made = _mmemb(tmp_path, "data", "write-shards", str(small_demo), str(shards), "--samples-per-shard", "12")
    assert made.returncode == 0, made.stderr[-3000:]
    root, record = tmp_path / "ddp_shards", tmp_path / "shards.batches"
    fit = _mmemb(tmp_path, "fit", *_common(small_demo, root, 2), "--data.shards", str(shards),
                 "--config", str(_record_config(tmp_path, record)))
    assert fit.returncode == 0, fit.stderr[-3000:]
    rank0, rank1 = _ids_per_rank(record)
    assert rank0 and len(rank0) == len(rank1)  # every rank yields the same number of samples per epoch
    assert not set(rank0) & set(rank1)  # shards are dealt disjointly to the ranks
