"""Embedding extraction throughput (clips/s) and peak memory of ``evaluate.py extract``.

Runs the real command (decode, model forward, chunked store, Parquet export) on a run's checkpoint
into a fresh store, and reports clips per second, the peak resident memory of the main process and
of its DataLoader workers (``getrusage``: the largest single worker), and the store's size.

    python benchmarks/bench_extract.py --run runs/quickstart                 # all splits, 2 workers
    python benchmarks/bench_extract.py --run runs/quickstart --num-workers 0 --split test
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MiB = 2 ** 20


def _evaluate_module():
    spec = importlib.util.spec_from_file_location("_mmemb_evaluate", REPO / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=Path("runs/quickstart"), help="a run folder or a checkpoint")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--keep", type=Path, help="write the store here and keep it (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluate = _evaluate_module()
    out = args.keep or Path(tempfile.mkdtemp(prefix="bench_extract_")) / "store"
    if out.exists():
        shutil.rmtree(out)
    print(f"# bench_extract  {_dt.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"# command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
    t0 = time.perf_counter()
    result = evaluate.main(["extract", "--run", str(args.run), "--split", args.split, "--out", str(out),
                            "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
                            "--no-progress"])
    wall = time.perf_counter() - t0
    rows = int(result["added"])
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"\n| clips | wall s (load + decode + forward + store) | clips/s | peak RSS main MiB | "
          f"peak RSS largest worker MiB | store MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {rows} | {wall:.1f} | {rows / wall:.1f} | {self_rss / MiB:.0f} | {child_rss / MiB:.0f} | {size / MiB:.1f} |")
    if args.keep is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
