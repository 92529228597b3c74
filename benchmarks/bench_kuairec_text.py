"""How long one epoch of ``configs/kuairec_text.yaml`` takes: a few training steps and validation batches,
extrapolated to the epoch.

    mmemb data import-kuairec assets/kuairec/kuairec_caption_category.csv data/kuairec.jsonl --category-level 2
    python benchmarks/bench_kuairec_text.py --manifest data/kuairec.jsonl --steps 20

Three short ``mmemb fit`` runs in subprocesses (each in its own temporary run folder, so each also learns
the vocabularies: the setup cost):

* ``a``: ``--steps-base`` training steps, no validation;
* ``b``: ``--steps-base + --steps`` training steps, no validation;
* ``c``: ``--steps-base`` training steps after ``--val-batches`` sanity-validation batches.

Seconds per training step = (b - a) / steps; per validation batch = (c - a) / val batches; an epoch =
train batches x step + val batches x validation batch (+ the setup, once per run: a minus its steps).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MMEMB = (sys.executable, "-m", "mmemb.cli")


def _fit(manifest: str, root: Path, steps: int, val_batches: int, extra: list[str]) -> float:
    cmd = [*MMEMB, "fit", "--config", str(REPO / "configs" / "kuairec_text.yaml"), f"--data.manifest={manifest}",
           f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false",
           f"--trainer.num_sanity_val_steps={val_batches}", f"--trainer.limit_val_batches={val_batches}",
           "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/kuairec.jsonl")
    ap.add_argument("--steps", type=int, default=20, help="training steps measured (b - a)")
    ap.add_argument("--steps-base", type=int, default=3, help="steps of runs a and c")
    ap.add_argument("--val-batches", type=int, default=5)
    ap.add_argument("extra", nargs="*", help="more mmemb fit arguments (after --)")
    args = ap.parse_args()
    from mmemb.data.datamodule import SplitConfig, split_records
    from mmemb.data.manifest import read_manifest

    splits = split_records(read_manifest(args.manifest), SplitConfig(0.1, 0.1, 0))
    batch = 64  # configs/kuairec_text.yaml
    train_batches, val_batches = math.ceil(len(splits["train"]) / batch), math.ceil(len(splits["val"]) / batch)
    with tempfile.TemporaryDirectory() as tmp:
        a = _fit(args.manifest, Path(tmp) / "a", args.steps_base, 0, args.extra)
        b = _fit(args.manifest, Path(tmp) / "b", args.steps_base + args.steps, 0, args.extra)
        c = _fit(args.manifest, Path(tmp) / "c", args.steps_base, args.val_batches, args.extra)
    step = (b - a) / args.steps
    val_batch = max(c - a, 0.0) / args.val_batches
    epoch = train_batches * step + val_batches * val_batch
    print(json.dumps({"train_batches": train_batches, "val_batches": val_batches, "seconds_a": round(a, 1),
                      "seconds_b": round(b, 1), "seconds_c": round(c, 1), "seconds_per_step": round(step, 3),
                      "seconds_per_val_batch": round(val_batch, 3), "setup_seconds": round(a - args.steps_base * step, 1),
                      "epoch_seconds": round(epoch, 1), "epoch_minutes": round(epoch / 60, 2)}))


if __name__ == "__main__":
    main()
