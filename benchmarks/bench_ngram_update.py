"""Cost of one training update of the n-gram table alone: backward through the bag + optimizer step.

    python benchmarks/bench_ngram_update.py                       # the quickstart's table, CPU
    python benchmarks/bench_ngram_update.py --buckets 4194304 --steps 20

The table is :class:`mmemb.models.ngram.NgramBag` (``--buckets`` x ``--width``, the quickstart's
32,768 x 128), a batch ``--batch-size`` (32) clips of ``--ngrams`` (256, the data's cap) random n-gram
ids. Three updates, timed in turn step by step (so that a varying machine load hits all alike; median
over ``--steps`` after ``--warmup``):

* ``adamw``: dense gradient, ``torch.optim.AdamW`` (torch's default implementation on this device):
  the update of the table before the sparse one;
* ``adamw_fused``: the same with ``fused=True`` (for reference);
* ``sparse``: sparse gradient and ``torch.optim.SparseAdam`` through
  :func:`mmemb.lit.optim.build_optimizer`, what training does on one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mmemb.lit.optim import build_optimizer  # noqa: E402
from mmemb.models.ngram import NgramBag  # noqa: E402

VARIANTS = ("adamw", "adamw_fused", "sparse")


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmark, print a Markdown table, return ``{variant: {"backward_ms", "step_ms"}}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", type=int, default=32768)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ngrams", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bags = {name: NgramBag(args.buckets, args.width) for name in VARIANTS}
    opts = {
        "adamw": torch.optim.AdamW(bags["adamw"].parameters(), lr=1e-4, weight_decay=0.0),
        "adamw_fused": torch.optim.AdamW(bags["adamw_fused"].parameters(), lr=1e-4, weight_decay=0.0, fused=True),
        "sparse": build_optimizer(bags["sparse"], "adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    }
    g = torch.Generator().manual_seed(1)
    times: dict[str, dict[str, list[float]]] = {name: {"backward": [], "step": []} for name in VARIANTS}
    for i in range(args.warmup + args.steps):
        ids = torch.randint(1, args.buckets + 1, (args.batch_size, args.ngrams), generator=g)  # (B, G)
        for name in VARIANTS:
            opts[name].zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            vec, _ = bags[name](ids)  # (B, W)
            vec.square().sum().backward()
            t1 = time.perf_counter()
            opts[name].step()
            t2 = time.perf_counter()
            if i >= args.warmup:
                times[name]["backward"].append(t1 - t0)
                times[name]["step"].append(t2 - t1)
    out = {name: {"backward_ms": 1e3 * statistics.median(t["backward"]), "step_ms": 1e3 * statistics.median(t["step"])}
           for name, t in times.items()}
    print(f"table {args.buckets} x {args.width}, batch {args.batch_size} x {args.ngrams} n-grams, "
          f"{torch.get_num_threads()} threads, median of {args.steps} steps")
    print("| update | forward+backward ms | optimizer step ms | total ms |\n|---|---:|---:|---:|")
    for name, r in out.items():
        print(f"| {name} | {r['backward_ms']:.1f} | {r['step_ms']:.1f} | {r['backward_ms'] + r['step_ms']:.1f} |")
    return out


if __name__ == "__main__":
    main()
