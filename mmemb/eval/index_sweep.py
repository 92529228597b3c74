"""The faiss index sweep of ``mmemb eval sweep`` on stored embeddings or ``.npy`` vectors.

:func:`default_grid` adapts the settings to the database size; :class:`SweepOptions` holds what the
command line chooses (the data, grid overrides, metric, GPU use); :func:`run_index_sweep` loads the
vectors (:func:`sweep_data`), measures every setting of :func:`mmemb.index.run_sweep` one index
structure at a time (so the progress moves while slow structures such as OPQ train), reports the
fastest setting meeting the recall targets, and writes ``sweep.json``, ``sweep.csv``, ``sweep.md``
and ``recall_latency_p50.png`` / ``_p99.png``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from . import report

__all__ = ["SweepOptions", "default_grid", "sweep_data", "sweep_config", "sweep_parts", "sweep_in_parts",
           "run_index_sweep"]

log = logging.getLogger(__name__)


@dataclass
class SweepOptions:
    """What to sweep: the vectors, the grid (None: :func:`default_grid`'s value) and how to measure."""

    out: Path  # output folder
    store: Path | None = None  # an EmbeddingStore folder (mmemb eval extract) ...
    vectors: Path | None = None  # ... or a (rows, dim) .npy database
    name: str = "video"  # store: the embedding to index
    query_name: str | None = None  # store: the embedding used as queries (None: rows held out of the database)
    queries: Path | None = None  # vectors: a (rows, dim) .npy of queries (None: rows held out)
    n_queries: int = 1000  # at most this many queries (held out: at most 10% of the database)
    quick: bool = False  # a small grid: one nlist, nprobe 1/8/32, PQ d/4 without OPQ, efSearch 16/64
    k: tuple[int, ...] = (1, 10, 100)  # recall@k cut-offs (those above the database size are dropped)
    nlist: tuple[int, ...] | None = None  # IVF list counts
    nprobe: tuple[int, ...] | None = None  # IVF lists probed
    pq_bytes: tuple[int | str, ...] | None = None  # IVF-PQ code bytes (ints dividing the dimension, or "d/4")
    opq: tuple[bool, ...] | None = None  # IVF-PQ without / with OPQ
    nbits: int | None = None  # IVF-PQ bits per code
    hnsw_m: tuple[int, ...] | None = None  # HNSW graph degrees
    ef_search: tuple[int, ...] | None = None  # HNSW efSearch values
    refine: tuple[float, ...] | None = None  # IVF-PQ exact re-rank k_factors (0 = none)
    latency_queries: int | None = None  # queries timed one at a time (0 = no latency)
    metric: Literal["ip", "l2"] = "ip"  # inner product (cosine) or L2
    use_gpu: Literal["auto", "never", "always"] = "never"  # GPU faiss for Flat/IVF
    normalize: bool = True  # L2-normalise the vectors (cosine)
    threads: int = 0  # faiss OpenMP threads (0 = faiss's default)
    seed: int = 0  # seed of the held-out queries and training samples

    def __post_init__(self) -> None:
        if (self.store is None) == (self.vectors is None):
            raise InputError("sweep: give exactly one of a store and a vectors file")
        if self.n_queries < 1:
            raise InputError(f"sweep: n_queries must be >= 1, got {self.n_queries}")


def _pow2_near(x: float) -> int:
    return int(2 ** round(math.log2(max(x, 1.0))))


def default_grid(n: int, d: int, quick: bool = False) -> dict[str, Any]:
    """Sweep settings for ``n`` database vectors of dimension ``d``.

    nlist: powers of two near sqrt(n) and 4 sqrt(n), at most n / 39 (faiss's points per centroid);
    PQ code bytes: d/8, d/4 and d/2 where they divide d, with 2**nbits <= n PQ centroids; OPQ on and
    off (off only when n < d: faiss's OPQ training corrupts memory with fewer vectors than
    dimensions); HNSW M=32. ``quick`` keeps one nlist, three nprobe, PQ d/4 without OPQ and two
    efSearch values.
    """
    cap = max(1, n // 39)
    nlists = sorted({min(_pow2_near(math.sqrt(n)), cap), min(_pow2_near(4 * math.sqrt(n)), cap)})
    pq = [m for m in dict.fromkeys((d // 8, d // 4, d // 2)) if m >= 1 and d % m == 0]
    grid = {
        "nlist": tuple(nlists),
        "nprobe": (1, 2, 4, 8, 16, 32, 64, 128),
        "pq_bytes": tuple(pq),
        "nbits": int(min(8, math.floor(math.log2(max(n, 2))))),
        "opq": (False, True) if n >= d else (False,),
        "hnsw_m": (32,),
        "hnsw_ef_search": (16, 32, 64, 128, 256),
        "refine": (0.0,),
        "n_latency_queries": 200,
    }
    if quick:  # no OPQ: its training takes minutes even on small data (faiss's 50 rotation iterations)
        grid.update(nlist=(nlists[-1],), nprobe=(1, 8, 32), pq_bytes=tuple(m for m in pq if m == d // 4)[:1],
                    opq=(False,), hnsw_ef_search=(16, 64), n_latency_queries=50)
    return grid


def _nonzero(x: np.ndarray) -> np.ndarray:
    return x[np.asarray(x).any(axis=1)]


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def sweep_data(opts: SweepOptions) -> tuple[np.ndarray, np.ndarray, str]:
    """``(database, queries, description)`` from the store or the ``.npy`` files (zero rows dropped)."""
    if opts.store is not None:
        from .store import EmbeddingStore

        store = EmbeddingStore(opts.store)
        db = np.asarray(store.load(opts.name)[1], dtype=np.float32)
        source = f"{opts.store} [{opts.name}]"
        queries = np.asarray(store.load(opts.query_name)[1], dtype=np.float32) if opts.query_name else None
        qsource = f"[{opts.query_name}]" if opts.query_name else None
    else:
        db = np.asarray(np.load(opts.vectors, mmap_mode="r"), dtype=np.float32)
        source = str(opts.vectors)
        queries = np.asarray(np.load(opts.queries), dtype=np.float32) if opts.queries is not None else None
        qsource = str(opts.queries) if opts.queries is not None else None
    if db.ndim != 2:
        raise InputError(f"sweep: {source}: the database must be a 2-D (rows, dim) array, got {db.shape}")
    db = _nonzero(db)
    if queries is None:
        n_q = min(opts.n_queries, max(1, db.shape[0] // 10))
        held = np.random.default_rng(opts.seed).permutation(db.shape[0])[:n_q]
        mask = np.zeros(db.shape[0], bool)
        mask[held] = True
        db, queries = db[~mask], db[mask]
        qsource = f"{n_q} rows held out of the database"
    else:
        queries = _nonzero(queries)[: opts.n_queries]
    if opts.normalize:
        db, queries = _l2(db), _l2(queries)
    return np.ascontiguousarray(db), np.ascontiguousarray(queries), f"database {source}, queries {qsource}"


def sweep_config(opts: SweepOptions, n: int, d: int):
    """The :class:`~mmemb.index.SweepConfig` for ``n`` vectors of dimension ``d``: the default grid
    with the options' overrides (OPQ dropped when faiss cannot train it)."""
    from mmemb.index import SweepConfig

    grid = default_grid(n, d, opts.quick)
    for key, value in (("nlist", opts.nlist), ("nprobe", opts.nprobe), ("pq_bytes", opts.pq_bytes),
                       ("opq", opts.opq), ("hnsw_m", opts.hnsw_m), ("hnsw_ef_search", opts.ef_search),
                       ("refine", opts.refine)):
        if value is not None:
            grid[key] = tuple(value)
    if opts.latency_queries is not None:
        grid["n_latency_queries"] = opts.latency_queries
    if opts.nbits is not None:
        grid["nbits"] = opts.nbits
    if True in grid["opq"] and n < d:
        log.warning("OPQ left out: faiss cannot train it on %d vectors of dimension %d (needs >= %d)", n, d, d)
        grid["opq"] = tuple(o for o in grid["opq"] if not o) or (False,)
    ks = tuple(k for k in opts.k if k <= n) or (n,)
    latency_k = 10 if 10 in ks else ks[-1]
    return SweepConfig(ks=ks, latency_k=latency_k, nlist=grid["nlist"], nprobe=grid["nprobe"],
                       pq_bytes=grid["pq_bytes"], nbits=grid["nbits"], opq=grid["opq"], refine=grid["refine"],
                       hnsw_m=grid["hnsw_m"], hnsw_ef_search=grid["hnsw_ef_search"], metric=opts.metric,
                       use_gpu=opts.use_gpu, n_latency_queries=grid["n_latency_queries"], seed=opts.seed)


def sweep_parts(cfg) -> list:
    """``cfg`` split into one config per index structure, in :meth:`SweepConfig.structures` order."""
    none = dict(flat=False, nlist=(), ivf_flat=False, pq_bytes=(), hnsw_m=())
    parts = [replace(cfg, **{**none, "flat": True})] if cfg.flat else []
    for nlist in cfg.nlist:
        if cfg.ivf_flat:
            parts.append(replace(cfg, **{**none, "nlist": (nlist,), "ivf_flat": True}))
        for pq in cfg.pq_bytes:
            for opq in cfg.opq:
                parts.append(replace(cfg, **{**none, "nlist": (nlist,), "pq_bytes": (pq,), "opq": (opq,)}))
    parts += [replace(cfg, **{**none, "hnsw_m": (m,)}) for m in cfg.hnsw_m]
    return [p for p in parts if p.num_settings()]


def sweep_in_parts(db: np.ndarray, queries: np.ndarray, cfg, run_sweep, show_progress: bool = True) -> list[dict]:
    """The rows of ``run_sweep(db, queries, cfg)``, measured one structure at a time so that the
    progress (a bar, or a line per structure in logs) moves while slow structures (OPQ) train."""
    rows: list[dict] = []
    bar = report.progress(total=cfg.num_settings(), desc="index sweep", unit="setting", enabled=show_progress)
    try:
        for part in sweep_parts(cfg):
            structure = part.structures()[0][0]
            bar.set_postfix_str(f"building {structure.name.split('-np')[0].split('-ef')[0]}")
            rows += run_sweep(db, queries, part, progress=False)
            bar.update(part.num_settings())
        bar.set_postfix_str("")
    finally:
        bar.close()
    return rows


def run_index_sweep(opts: SweepOptions, show_progress: bool = True) -> dict[str, Any]:
    """The sweep of ``opts``: returns ``rows``, ``target_report``, ``out``, ``table`` and ``targets``
    (Markdown), ``seconds`` and ``files`` (what was written under ``opts.out``)."""
    import faiss

    from mmemb.index import markdown_table as sweep_table
    from mmemb.index import plot_recall_latency, run_sweep, target_report
    from mmemb.index import write_csv as sweep_csv
    from mmemb.index import write_json as sweep_json
    from mmemb.index.sweep import Targets, format_target_report

    if opts.threads:
        faiss.omp_set_num_threads(opts.threads)
    db, queries, described = sweep_data(opts)
    if db.shape[0] < 2 or queries.shape[0] < 1:
        raise InputError(f"sweep: too few vectors ({db.shape[0]} in the database, {queries.shape[0]} queries)")
    cfg = sweep_config(opts, db.shape[0], db.shape[1])
    log.info("index sweep: %s; %d x %d database, %d queries, %d settings (nlist %s, PQ bytes %s x %d bits, OPQ %s, "
             "efSearch %s), faiss threads %d", described, db.shape[0], db.shape[1], queries.shape[0],
             cfg.num_settings(), cfg.nlist, cfg.pq_bytes, cfg.nbits, cfg.opq, cfg.hnsw_ef_search,
             faiss.omp_get_max_threads())
    t0 = time.perf_counter()
    rows = sweep_in_parts(db, queries, cfg, run_sweep, show_progress=show_progress)
    wall = time.perf_counter() - t0
    k = cfg.latency_k
    rep = target_report(rows, Targets(k=k))
    table, targets = sweep_table(rows), format_target_report(rep)
    out = Path(opts.out)
    meta = {"database": described, "n_database": db.shape[0], "n_queries": queries.shape[0], "dim": db.shape[1],
            "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "wall_s": wall, "quick": opts.quick,
            **{f"target_{key}": v for key, v in rep.items() if not isinstance(v, dict)}}
    files = [sweep_json(rows, out / "sweep.json", meta=meta), sweep_csv(rows, out / "sweep.csv")]
    (out / "sweep.md").write_text(f"{described}\n\n{table}\n\n{targets}\n", encoding="utf-8")
    files.append(out / "sweep.md")
    if any(r.get("p50_ms") for r in rows):
        for latency in ("p50_ms", "p99_ms"):
            files.append(plot_recall_latency(rows, out / f"recall_latency_{latency.split('_')[0]}.png", k=k,
                                             latency=latency, title=f"N={db.shape[0]}, d={db.shape[1]}: recall@{k} "
                                             f"vs {latency.split('_')[0]} latency"))
    return {"rows": rows, "target_report": rep, "out": str(out), "table": table, "targets": targets,
            "seconds": wall, "files": [str(f) for f in files]}
