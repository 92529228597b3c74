"""How long one epoch of ``configs/kuairec_text.yaml`` takes: a few training steps and validation batches
timed one by one, extrapolated to the epoch.

    mmemb data import-kuairec assets/kuairec/kuairec_caption_category.csv data/kuairec.jsonl --category-level 2
    nice python benchmarks/bench_kuairec_text.py --manifest data/kuairec.jsonl --steps 20

The config's model, data module (its loaders and workers) and optimizer, built as ``mmemb fit`` builds
them (``mmemb.lit.cli.main(run=False)``), then ``--steps`` training steps (forward with every loss term,
backward, optimizer step; the time waiting for the batch counted apart) after ``--warmup`` untimed ones,
and ``--val-batches`` validation batches (the evaluation step of ``mmemb fit``). An epoch = train batches x
median step (+ median batch wait) + validation batches x median validation batch. The setup (reading the
manifest, learning the vocabularies) is reported apart: once per run. Prints one JSON line with the load
average, since the 2 cores are often shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", default="data/kuairec.jsonl")
    ap.add_argument("--config", default=str(REPO / "configs" / "kuairec_text.yaml"))
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    ap.add_argument("--val-batches", type=int, default=5, help="timed validation batches")
    ap.add_argument("extra", nargs="*", help="more mmemb fit arguments (after --)")
    args = ap.parse_args(argv)
    from mmemb.lit.cli import main as lightning_main
    from mmemb.lit.optim import build_optimizer

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        saved, sys.argv = sys.argv, ["bench"]
        try:
            cli = lightning_main(["--config", args.config, f"--data.manifest={args.manifest}",
                                  f"--trainer.default_root_dir={tmp}", *args.extra], run=False)
        finally:
            sys.argv = saved
        dm, module = cli.datamodule, cli.model
        dm.setup("fit")
        module.set_vocabularies(dm.vocabs, dm.splits["train"], dm.text.max_length)
        if module.config.keyword_head and module.loss_weights.get("keyword", 0) > 0:
            dm.set_keywords(module.keyword_cfg)
        setup = time.perf_counter() - t0
        hp = module.hparams
        opt = build_optimizer(module.model, hp.optimizer, hp.lr, tuple(hp.betas), hp.weight_decay)
        module.train()
        steps, waits = [], []
        loader = iter(dm.train_dataloader())
        for i in range(args.warmup + args.steps):
            t = time.perf_counter()
            batch = next(loader)
            wait = time.perf_counter() - t
            t = time.perf_counter()
            _, terms = module._losses(batch, batch_idx=i)
            module._total(terms).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= args.warmup:
                steps.append(time.perf_counter() - t)
                waits.append(wait)
        module.eval()
        vals = []
        with torch.no_grad():
            for i, batch in enumerate(dm.val_dataloader()):
                if i >= args.val_batches:
                    break
                t = time.perf_counter()
                module._losses(batch)
                vals.append(time.perf_counter() - t)
        train_batches = math.ceil(len(dm.splits["train"]) / dm.batch_size)
        val_batches = math.ceil(len(dm.splits["val"]) / dm.batch_size)
    step, wait, val = statistics.median(steps), statistics.median(waits), statistics.median(vals)
    epoch = train_batches * (step + wait) + val_batches * val
    result = {"config": Path(args.config).name, "train_batches": train_batches, "val_batches": val_batches,
              "batch_size": dm.batch_size, "torch_threads": torch.get_num_threads(),
              "setup_seconds": round(setup, 1), "step_seconds_median": round(step, 3),
              "step_seconds_min": round(min(steps), 3), "batch_wait_seconds_median": round(wait, 3),
              "val_batch_seconds_median": round(val, 3), "epoch_seconds": round(epoch, 1),
              "epoch_minutes": round(epoch / 60, 1), "epoch_minutes_at_min_step": round(
                  (train_batches * (min(steps) + wait) + val_batches * val) / 60, 1),
              "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
