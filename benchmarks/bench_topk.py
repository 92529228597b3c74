"""Memory and time of the chunked exact top-K (:func:`mmemb.eval.topk.chunked_topk`) against a large gallery.

Evaluation never holds a full ``Q x G`` similarity matrix: queries go in blocks of ``--chunk-size``,
the gallery in blocks of ``--gallery-chunk-size``, and a running top-k is merged block by block.
This script measures, for ``--gallery`` unit vectors (default 1,000,000 x 128, float32) and each
``--queries`` count:

* the peak memory the top-K allocates beyond its inputs (``tracemalloc``: numpy reports its
  allocations to it), next to :func:`mmemb.eval.topk.topk_peak_bytes`'s estimate;
* the process's peak resident memory (inputs included);
* the wall time, and the time per 1,000 queries.

Only the outputs (``Q x k`` scores and ids, 12 bytes per entry) grow with ``Q``; the block buffers
do not. Running ``Q = 1M`` against ``G = 1M`` takes hours on 2 cores (2.6e14 multiply-adds plus
the selection), so the default measures a few query counts and prints the 1M x 1M figures that
follow from them: memory = the inputs + the block peak + the outputs, time = per-query time x 1M.

    python benchmarks/bench_topk.py                                  # G = 1M, Q = 4096 and 16384
    python benchmarks/bench_topk.py --gallery 200000 --queries 1024  # quick
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import resource
import sys
import time
import tracemalloc

import numpy as np

from mmemb.eval.topk import chunked_topk, topk_peak_bytes

MiB = 2 ** 20


def unit_rows(n: int, d: int, seed: int, chunk: int = 65536) -> np.ndarray:
    """``(n, d)`` float32 gaussian rows scaled to unit norm, made ``chunk`` rows at a time."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), d), dtype=np.float32)
        out[start:start + x.shape[0]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=1_000_000, help="gallery rows G")
    p.add_argument("--queries", type=int, nargs="+", default=[4096, 16384], help="query counts Q to measure")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per block")
    p.add_argument("--gallery-chunk-size", type=int, default=16384, help="gallery rows per block")
    p.add_argument("--target-queries", type=int, default=1_000_000, help="Q of the extrapolated row")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.gallery < args.k or min(args.queries) < 1:
        p.error(f"need --gallery >= --k ({args.k}) and positive --queries")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"# bench_topk  {_dt.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"python {platform.python_version()}  numpy {np.__version__}")
    print(f"# command: {' '.join([sys.argv[0].split('/')[-1]] + (argv if argv is not None else sys.argv[1:]))}")
    t0 = time.perf_counter()
    gallery = unit_rows(args.gallery, args.dim, args.seed)
    queries_all = unit_rows(max(args.queries), args.dim, args.seed + 1)
    print(f"# gallery {gallery.shape} ({gallery.nbytes / MiB:.0f} MiB), queries up to {queries_all.shape}, "
          f"k={args.k}, blocks {args.chunk_size} x {args.gallery_chunk_size} ({time.perf_counter() - t0:.1f} s to make)")
    rows = []
    for q in sorted(args.queries):
        queries = queries_all[:q]
        tracemalloc.start()
        t0 = time.perf_counter()
        scores, ids = chunked_topk(queries, gallery, args.k, args.chunk_size, args.gallery_chunk_size)
        wall = time.perf_counter() - t0
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        estimate = topk_peak_bytes(q, args.gallery, args.dim, args.k, args.chunk_size, args.gallery_chunk_size)
        outputs = scores.nbytes + ids.nbytes
        rows.append({"q": q, "wall": wall, "traced": traced_peak, "estimate": estimate, "outputs": outputs,
                     "rss": peak_rss_bytes()})
        del scores, ids
    print("\n| queries | wall s | ms / 1k queries | top-K peak MiB (traced) | of which outputs MiB | estimate MiB "
          "| process peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['q']} | {r['wall']:.1f} | {1000 * r['wall'] / r['q'] * 1000:.0f} | {r['traced'] / MiB:.1f} | "
              f"{r['outputs'] / MiB:.1f} | {r['estimate'] / MiB:.1f} | {r['rss'] / MiB:.0f} |")
    last = rows[-1]
    block = last["traced"] - last["outputs"]  # what does not grow with Q
    target = args.target_queries
    out_target = target * args.k * (4 + 8)
    inputs_target = (target + args.gallery) * args.dim * 4
    print(f"\nblock buffers (peak minus outputs) at Q={last['q']}: {block / MiB:.1f} MiB; at Q={rows[0]['q']}: "
          f"{(rows[0]['traced'] - rows[0]['outputs']) / MiB:.1f} MiB")
    print(f"extrapolated to {target} x {args.gallery}: inputs {inputs_target / MiB:.0f} MiB + block buffers "
          f"{block / MiB:.0f} MiB + outputs {out_target / MiB:.0f} MiB = {(inputs_target + block + out_target) / 2**30:.2f} "
          f"GiB; time {last['wall'] / last['q'] * target / 3600:.1f} h at the measured per-query rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
