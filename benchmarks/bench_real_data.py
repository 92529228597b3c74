"""Real-data benchmarks: KuaiRec tagging + category probe, and AV correspondence on the real clips.

Every benchmark has a classical baseline computed by the same code on the same split:

    python benchmarks/bench_real_data.py                      # baselines only
    python benchmarks/bench_real_data.py --out runs/real_data --max-rows 2000
    python benchmarks/bench_real_data.py --ckpt runs/quickstart          # + the model's rows (run folder or .ckpt)

With ``--ckpt`` (a checkpoint file or a run folder: its best checkpoint) the model's rows are added, on
the run's own data split: ``mmemb_head`` (its own hashtag head), ``mmemb_text`` (the text tower) and,
for the teacher, ``mmemb_fused`` (the fused path on text-only input) on KuaiRec, and ``mmemb_av`` (the video embedding from frames alone vs from audio alone) on
the clips; see :mod:`mmemb.eval.real_data` (also ``python evaluate.py real-data``).

Prints Markdown tables and writes ``results.json``, ``results.csv``, ``results.md`` and
``results.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmemb.eval.real_data import load_embedders, run_real_data, write_outputs  # noqa: E402,F401


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(REPO / "assets/kuairec/kuairec_caption_category.csv"))
    ap.add_argument("--clips", default=str(REPO / "assets/clips"))
    ap.add_argument("--out", default="runs/real_data")
    ap.add_argument("--ckpt", default=None, help="trained mmemb checkpoint, or a run folder (its best checkpoint)")
    ap.add_argument("--config", default=None, help="the run's config.yaml (default: found beside the checkpoint)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--max-rows", type=int, default=None, help="only the first rows of the KuaiRec CSV")
    ap.add_argument("--skip-kuairec", action="store_true")
    ap.add_argument("--skip-av", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    rows, tables = run_real_data(None if args.skip_kuairec else args.csv, None if args.skip_av else args.clips,
                                 args.ckpt, args.config, max_rows=args.max_rows, device=args.device,
                                 show_progress=not args.no_progress)
    total = time.perf_counter() - t0

    header = (f"## Real-data benchmarks\n\n{platform.platform()}, python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s); total {total:.1f}s"
              + (f"; checkpoint {args.ckpt}" if args.ckpt else "")
              + (f"; KuaiRec first {args.max_rows} rows" if args.max_rows else "") + "\n")
    md = header + "\n" + tables
    print(md)
    files = write_outputs(rows, md, args.out)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
