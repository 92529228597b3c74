"""EBR index sweep: recall, documents scanned, latency, QPS, memory and build time of faiss indexes.

On N database vectors (default 1,000,000, d=128) and 1,000 held-out queries drawn the same way,
it sweeps Flat, IVF-Flat, IVF-PQ with / without OPQ and with / without an exact re-rank
(IndexRefineFlat, ``--refine`` k_factors), and HNSW (``--ef-search``), through
:func:`mmemb.index.run_sweep`. Datasets:

* ``clustered``: synthetic embeddings. ``--clusters`` gaussian clusters with centres uniform on
  the sphere; each point is its centre plus an offset of expected norm ``--spread``, drawn in the
  cluster's own random ``--intrinsic-dim``-dimensional subspace (plus an isotropic share
  ``--noise-floor`` of it in all dimensions; ``--intrinsic-dim 0``: isotropic), then normalised.
  Real embeddings have low intrinsic dimension; an isotropic cloud is the hard case for PQ.
* ``demo-tiled``: the rows of ``--embeddings`` (an ``.npy``, or the ``--embedding-name``
  embeddings of an ``evaluate.py extract`` store of the demo corpus), tiled to N with gaussian
  noise of relative norm ``--tile-noise``, normalised.
  Skipped with a message when ``--embeddings`` is not given.

It prints the Markdown table, checks the targets (fastest setting with recall@10 >= 0.99 and its
p99 speed-up over Flat, target >= 100x; best recall@10 within 1/8 of Flat's memory, target
>= 0.90), and writes ``<dataset>-n<N>.json`` / ``.csv`` / ``-p99.png`` / ``-p50.png`` and
``summary.md`` under ``--out``.

    python benchmarks/bench_index.py                          # 1M x 128, clustered (minutes, many cores)
    python benchmarks/bench_index.py --n 20000 --threads 1    # quick check
    python benchmarks/bench_index.py --datasets demo-tiled --embeddings runs/quickstart/emb
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from mmemb.index import (SweepConfig, markdown_table, plot_recall_latency, run_sweep, target_report, write_csv,
                         write_json)
from mmemb.index.sweep import Targets, format_target_report

DATASETS = ("clustered", "demo-tiled")
CHUNK = 65536  # rows generated at a time


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def clustered(n: int, d: int, clusters: int, spread: float, intrinsic_dim: int, noise_floor: float,
              seed: int) -> np.ndarray:
    """``(n, d)`` unit vectors around ``clusters`` random centres (see the module docstring)."""
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.standard_normal((clusters, d)).astype(np.float32))
    r = intrinsic_dim if 0 < intrinsic_dim < d else d
    bases = rng.standard_normal((clusters, r, d)).astype(np.float32) / math.sqrt(d)  # (C, r, d) rows of norm ~1
    assign = rng.integers(0, clusters, n)
    out = np.empty((n, d), dtype=np.float32)
    chunk = max(CHUNK // max(r, 1), 1024)  # the gathered bases take chunk x r x d floats
    for start in range(0, n, chunk):
        a = assign[start:start + chunk]
        z = rng.standard_normal((a.size, r)).astype(np.float32) * (spread / math.sqrt(r))  # (m, r)
        offset = np.einsum("mr,mrd->md", z, bases[a]) if r < d else z  # (m, d), norm ~ spread
        iso = rng.standard_normal((a.size, d)).astype(np.float32) * (noise_floor * spread / math.sqrt(d))
        out[start:start + a.size] = centres[a] + offset + (iso if r < d else 0.0)
    return _normalise(out)


def tiled(embeddings: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """``(n, d)`` unit vectors: random rows of ``embeddings`` plus gaussian noise of relative norm ``noise``."""
    rng = np.random.default_rng(seed)
    base = _normalise(np.asarray(embeddings, dtype=np.float32).copy())
    d = base.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        rows = rng.integers(0, base.shape[0], m)
        out[start:start + m] = base[rows] + rng.standard_normal((m, d)).astype(np.float32) * (noise / math.sqrt(d))
    return _normalise(out)


def load_embeddings(path: Path, name: str = "multimodal") -> np.ndarray:
    """Rows of an ``.npy`` ``(rows, dim)`` array, or the ``name`` embeddings of an EmbeddingStore folder
    (``evaluate.py extract``); all-zero rows (a missing modality) are dropped."""
    if path.is_dir():
        from mmemb.eval.store import EmbeddingStore

        store = EmbeddingStore(path)
        if name not in store.dims:
            raise SystemExit(f"benchmarks/bench_index.py: --embeddings {path}: the store has {sorted(store.dims)}, "
                             f"not {name!r} (--embedding-name)")
        x = store.load(name)[1]
    else:
        x = np.load(path)
    if x.ndim != 2 or x.shape[0] < 1:
        raise SystemExit(f"benchmarks/bench_index.py: --embeddings {path}: need a 2-D (rows, dim) array, got {x.shape}")
    return x[np.asarray(x).any(axis=1)]


def auto_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest ``4 sqrt(n)`` (4096 at 1M), in [16, 65536]."""
    return int(min(max(2 ** round(math.log2(4 * math.sqrt(n))), 16), 65536))


def dataset(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray] | None:
    """``(database, queries)`` of a dataset; None (with a message) when it cannot be made."""
    total = args.n + args.queries
    if name == "clustered":
        x = clustered(total, args.d, args.clusters, args.spread, args.intrinsic_dim, args.noise_floor, args.seed)
    else:
        if args.embeddings is None:
            print("# demo-tiled: skipped (no --embeddings .npy given)")
            return None
        base = load_embeddings(args.embeddings, args.embedding_name)
        print(f"# demo-tiled: {base.shape[0]} distinct {args.embedding_name} embeddings of dim {base.shape[1]}, "
              f"each repeated ~{total / base.shape[0]:.0f} times with noise {args.tile_noise}")
        x = tiled(base, total, args.tile_noise, args.seed)
    held_out = np.random.default_rng(args.seed + 1).permutation(total)[: args.queries]
    mask = np.zeros(total, bool)
    mask[held_out] = True
    return x[~mask], x[mask]


def sweep_config(args: argparse.Namespace) -> SweepConfig:
    nlist = tuple(args.nlist) if args.nlist else (auto_nlist(args.n),)
    return SweepConfig(
        ks=tuple(args.k), latency_k=10 if 10 in args.k else args.k[0], nlist=nlist, nprobe=tuple(args.nprobe),
        ivf_flat=not args.no_ivf_flat, pq_bytes=tuple(args.pq_bytes), opq=tuple(args.opq), refine=tuple(args.refine),
        hnsw_m=tuple(args.hnsw_m), hnsw_ef_search=tuple(args.ef_search), hnsw_ef_construction=args.ef_construction,
        use_gpu=args.use_gpu, n_latency_queries=args.latency_queries, max_train=args.max_train, seed=args.seed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    p.add_argument("--d", type=int, default=128, help="dimension of the clustered dataset")
    p.add_argument("--queries", type=int, default=1000, help="held-out queries")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--embeddings", type=Path, help="demo-tiled: a (rows, dim) .npy or an evaluate.py extract store")
    p.add_argument("--embedding-name", default="multimodal",
                   help="demo-tiled: which embedding of a store (multimodal: the one embedding per video)")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--spread", type=float, default=0.5, help="expected norm of a point's offset from its centre")
    p.add_argument("--intrinsic-dim", type=int, default=16, help="dimensions of each cluster's spread (0 = all)")
    p.add_argument("--noise-floor", type=float, default=0.1, help="isotropic share of the spread")
    p.add_argument("--tile-noise", type=float, default=0.1, help="demo-tiled: relative norm of the added noise")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="recall@k cut-offs")
    p.add_argument("--nlist", type=int, nargs="*", help="IVF list counts (default: nearest power of 2 to 4 sqrt(N))")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64, 128])
    p.add_argument("--no-ivf-flat", action="store_true", help="skip IVF-Flat")
    p.add_argument("--pq-bytes", nargs="+", default=[32, 64], type=lambda s: s if s == "d/4" else int(s),
                   help="IVF-PQ code bytes (an int dividing d, or d/4)")
    p.add_argument("--opq", type=lambda s: s.lower() in ("1", "true", "yes", "on"), nargs="+", default=[False, True],
                   help="IVF-PQ without/with OPQ (e.g. --opq true)")
    p.add_argument("--refine", type=float, nargs="+", default=[0, 4, 16], help="exact re-rank k_factors (0 = none)")
    p.add_argument("--hnsw-m", type=int, nargs="*", default=[32])
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--latency-queries", type=int, default=1000, help="queries timed one at a time")
    p.add_argument("--max-train", type=int, help="training sample size (default max(64 nlist, 65536))")
    p.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads for builds and batches (0 = default)")
    p.add_argument("--use-gpu", choices=("auto", "never", "always"), default="never",
                   help="GPU faiss for Flat/IVF (latency loop then times the GPU)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_index"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.n < 1 or args.queries < 1:
        p.error(f"--n {args.n} and --queries {args.queries} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    cfg = sweep_config(args)
    print(f"# bench_index  {_dt.datetime.now().isoformat(timespec='seconds')}  {platform.node()}  "
          f"python {platform.python_version()}  faiss {faiss.__version__}  threads {faiss.omp_get_max_threads()}")
    print(f"# command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}")
    print(f"# N={args.n} queries={args.queries} nlist={cfg.nlist} settings={cfg.num_settings()} "
          f"latency: {cfg.n_latency_queries} single queries at k={cfg.latency_k} on 1 thread")
    summary = [f"# bench_index N={args.n}", ""]
    for name in args.datasets:
        t0 = time.perf_counter()
        data = dataset(name, args)
        if data is None:
            summary += [f"## {name}", "", "skipped: no --embeddings given", ""]
            continue
        database, queries = data
        print(f"\n## {name}: database {database.shape}, queries {queries.shape} "
              f"({time.perf_counter() - t0:.1f} s to make)")
        rows = run_sweep(database, queries, cfg, progress=not args.no_progress)
        table = markdown_table(rows)
        targets = format_target_report(report := target_report(rows, Targets(k=10 if 10 in cfg.ks else cfg.ks[0])))
        wall = time.perf_counter() - t0
        print(f"{table}\n\n{targets}\n# {name}: {wall:.1f} s")
        stem = args.out / f"{name}-n{args.n}"
        meta = {"dataset": name, "n": args.n, "dim": database.shape[1], "queries": args.queries, "seed": args.seed,
                "faiss": faiss.__version__, "host": platform.node(), "wall_s": wall, **{
                    f"arg_{k}": str(v) for k, v in vars(args).items()}, **{f"target_{k}": v for k, v in report.items()
                                                                         if not isinstance(v, dict)}}
        write_json(rows, stem.with_suffix(".json"), meta=meta)
        write_csv(rows, stem.with_suffix(".csv"))
        for latency in ("p99_ms", "p50_ms"):
            plot_recall_latency(rows, f"{stem}-{latency.split('_')[0]}.png", k=10 if 10 in cfg.ks else cfg.ks[0],
                                latency=latency, title=f"{name}, N={args.n}: recall vs {latency.split('_')[0]} latency")
        summary += [f"## {name} (database {database.shape}, {wall:.0f} s)", "", table, "", targets, ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text("\n".join(summary) + "\n")
    print(f"\n# wrote {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
