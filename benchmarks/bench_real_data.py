"""Real-data benchmarks (issue #4): KuaiRec tagging + category probe, and AV correspondence on the real clips.

Every benchmark has a classical baseline computed by the same code on the same split:

    python benchmarks/bench_real_data.py                      # baselines only
    python benchmarks/bench_real_data.py --out runs/real_data --max-rows 2000
    python benchmarks/bench_real_data.py --ckpt path/to/ckpt  # TODO: mmemb rows (not wired yet)

Prints Markdown tables and writes ``results.json``, ``results.csv`` and ``results.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmemb.eval import av_bench, kuairec_bench  # noqa: E402


def load_embedders(ckpt: str):
    """TODO(lead): wire the trained model here.

    Must return ``(text_embed_fn, av_embed_fn)``:

    * ``text_embed_fn(texts: list[str]) -> np.ndarray (N, D)``: the text-path (or fused-path, for
      text-only inputs) embedding of each KuaiRec text, passed to
      :func:`mmemb.eval.kuairec_bench.run_kuairec_benchmark` as ``embed_fn``;
    * ``av_embed_fn(frames (N, F, 3, S, S) uint8, mel (N, n_mels, Fm) float32) -> (video_emb, audio_emb)``
      passed to :func:`mmemb.eval.av_bench.run_av_benchmark` as ``embed_fn``.

    Either may be ``None`` to skip those rows. Nothing is invented here: no model rows are produced
    until this is implemented.
    """
    raise NotImplementedError(
        f"--ckpt {ckpt}: loading the trained model's text/fused and AV embedders is not wired yet "
        "(see load_embedders in benchmarks/bench_real_data.py)")


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(REPO / "assets/kuairec/kuairec_caption_category.csv"))
    ap.add_argument("--clips", default=str(REPO / "assets/clips"))
    ap.add_argument("--out", default="runs/real_data")
    ap.add_argument("--ckpt", default=None, help="trained mmemb checkpoint (TODO: not wired yet)")
    ap.add_argument("--max-rows", type=int, default=None, help="only the first rows of the KuaiRec CSV")
    ap.add_argument("--skip-kuairec", action="store_true")
    ap.add_argument("--skip-av", action="store_true")
    args = ap.parse_args(argv)

    text_fn = av_fn = None
    if args.ckpt:
        text_fn, av_fn = load_embedders(args.ckpt)

    t0 = time.perf_counter()
    rows: list[dict] = []
    tables = []
    if not args.skip_kuairec:
        k_rows = kuairec_bench.run_kuairec_benchmark(args.csv, embed_fn=text_fn, max_rows=args.max_rows)
        rows += k_rows
        tables.append(kuairec_bench.markdown_table(k_rows))
    if not args.skip_av:
        a_rows = av_bench.run_av_benchmark(args.clips, embed_fn=av_fn)
        rows += a_rows
        tables.append(av_bench.markdown_table(a_rows))
    total = time.perf_counter() - t0

    header = (f"## Real-data benchmarks\n\n{platform.platform()}, python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s); total {total:.1f}s"
              + (f"; KuaiRec first {args.max_rows} rows" if args.max_rows else "") + "\n")
    md = header + "\n" + "\n".join(tables)
    print(md)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], indent=2, ensure_ascii=False), encoding="utf-8")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(md, encoding="utf-8")
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
