"""Sweep faiss index settings against exact search: recall, documents scanned, latency, memory.

:func:`run_sweep` builds each *structure* once (Flat, IVF-Flat per ``nlist``, IVF-PQ per
``nlist x pq_bytes x opq``, HNSW per ``M``) and then measures every *search setting* on it
(``nprobe``, re-rank ``k_factor``, ``efSearch``). Per setting, one row (a dict) with:

* ``recall@k`` for each ``k`` in ``cfg.ks``: ``|approx top-k ∩ exact top-k| / k`` averaged over
  the queries, each from a search at exactly ``k`` (HNSW and the re-rank depend on ``k``). Exact
  top-k comes from :func:`mmemb.eval.topk.chunked_topk` (ties by lower id), so a setting can lose a
  little recall on exact float ties only.
* ``docs_scanned``: :func:`~mmemb.index.factory.docs_scanned_per_query` at ``cfg.latency_k``.
* ``p50_ms`` / ``p99_ms``: single-query latency, one query per call on one thread
  (``faiss.omp_set_num_threads(1)``, restored after), at ``cfg.latency_k``.
* ``qps``: all queries in one call (``cfg.batch_size`` per call when set), default threads.
* ``memory_bytes`` (:func:`~mmemb.index.factory.index_memory_bytes`) and ``build_s`` (wall time
  to train and fill the structure; the same for all of its search settings).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import faiss
import numpy as np

from ..eval.topk import chunked_topk
from .factory import (
    GPU_CHOICES,
    METRICS,
    GpuUse,
    IVF_KINDS,
    PQ_KINDS,
    IndexMetric,
    IndexSpec,
    _as_vectors,
    _is_gpu,
    add_refine,
    build_index,
    docs_scanned_per_query,
    index_memory_bytes,
    search,
    set_search_params,
)

__all__ = [
    "SweepConfig",
    "run_sweep",
    "exact_topk",
    "recall_at_k",
    "write_json",
    "write_csv",
    "markdown_table",
    "target_report",
    "format_target_report",
]


@dataclass
class SweepConfig:
    """Which settings :func:`run_sweep` measures and how (empty tuples drop a family)."""

    ks: tuple[int, ...] = (1, 10, 100)  # recall@k cut-offs
    latency_k: int = 10  # k of the latency, QPS and HNSW documents-scanned searches
    flat: bool = True  # exact Flat: the reference for speed-ups and memory shares
    nlist: tuple[int, ...] = (1024,)  # IVF: coarse list counts, one structure each
    nprobe: tuple[int, ...] = (1, 4, 16, 64)  # IVF: lists probed, searched on each IVF structure (> nlist skipped)
    ivf_flat: bool = True  # IVF-Flat structures (one per nlist)
    pq_bytes: tuple[int | str, ...] = (32,)  # IVF-PQ code sizes M (0 or "d/4" = dim // 4); empty = no IVF-PQ
    opq: tuple[bool, ...] = (False, True)  # IVF-PQ without / with an OPQ rotation
    nbits: int = 8  # IVF-PQ bits per sub-quantizer
    refine: tuple[float, ...] = (0.0,)  # IVF-PQ exact re-rank k_factors, 0 = none (one flat copy serves all > 0)
    hnsw_m: tuple[int, ...] = (32,)  # HNSW graph degrees, one structure each; empty = no HNSW
    hnsw_ef_search: tuple[int, ...] = (16, 32, 64, 128)  # HNSW search beam widths
    hnsw_ef_construction: int = 40  # HNSW build beam width
    metric: IndexMetric = "ip"  # "ip" (normalised embeddings) or "l2"
    use_gpu: GpuUse = "auto"  # see IndexSpec.use_gpu
    n_latency_queries: int = 200  # queries timed one at a time (the first ones); 0 = no latency
    warmup_queries: int = 10  # untimed single queries before each latency loop
    batch_size: int = 0  # queries per call in the recall and QPS searches; 0 = all in one call
    max_train: int | None = None  # training sample size (None: build_index's default)
    seed: int = 0  # training sample seed

    def __post_init__(self) -> None:
        for name in ("ks", "nlist", "nprobe", "hnsw_m", "hnsw_ef_search"):
            values = tuple(getattr(self, name))
            setattr(self, name, values)
            if any(int(v) != v or v < 1 for v in values):
                raise ValueError(f"{name}={values} must hold positive ints")
        if not self.ks:
            raise ValueError("ks is empty: give at least one recall cut-off")
        self.pq_bytes, self.opq, self.refine = tuple(self.pq_bytes), tuple(self.opq), tuple(self.refine)
        if any(r != 0 and r < 1 for r in self.refine):
            raise ValueError(f"refine={self.refine}: each k_factor must be 0 (off) or >= 1")
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not one of {METRICS}")
        if self.use_gpu not in GPU_CHOICES:
            raise ValueError(f"use_gpu={self.use_gpu!r} is not one of {GPU_CHOICES}")
        for name in ("latency_k",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("n_latency_queries", "warmup_queries", "batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not (self.flat or self.ivf_flat and self.nlist or self.pq_bytes and self.nlist and self.opq
                or self.hnsw_m and self.hnsw_ef_search):
            raise ValueError("the sweep has no settings: enable flat, ivf_flat, pq_bytes/opq or hnsw_m")

    def structures(self) -> list[tuple[IndexSpec, list[IndexSpec]]]:
        """``(structure, search settings)`` pairs: each structure is built once, then searched
        with each of its settings (specs differing only in nprobe / refine / ef_search)."""
        common = {"metric": self.metric, "use_gpu": self.use_gpu}
        out: list[tuple[IndexSpec, list[IndexSpec]]] = []
        if self.flat:
            spec = IndexSpec("flat", **common)
            out.append((spec, [spec]))
        for nlist in self.nlist:
            nprobes = [p for p in self.nprobe if p <= nlist]
            if self.ivf_flat:
                base = IndexSpec("ivf_flat", nlist=nlist, **common)
                out.append((base, [replace(base, nprobe=p) for p in nprobes]))
            for pq in self.pq_bytes:
                for opq in self.opq:
                    kind = "opq_ivf_pq" if opq else "ivf_pq"
                    base = IndexSpec(kind, nlist=nlist, pq_bytes=pq, nbits=self.nbits, **common)
                    out.append((base, [replace(base, nprobe=p, refine=float(r), use_gpu="never" if r else base.use_gpu)
                                       for r in self.refine for p in nprobes]))
        for m in self.hnsw_m:
            base = IndexSpec("hnsw", hnsw_m=m, ef_construction=self.hnsw_ef_construction, metric=self.metric,
                             use_gpu="never" if self.use_gpu == "never" else "auto")
            out.append((base, [replace(base, ef_search=ef) for ef in self.hnsw_ef_search]))
        return out

    def num_settings(self) -> int:
        return sum(len(settings) for _, settings in self.structures())


def exact_topk(database, queries, k: int, metric: str = "ip", chunk_size: int = 1024) -> np.ndarray:
    """``(Q, k)`` int64 ids of the exact top-k by inner product or L2 distance (ties: lower id).

    L2 uses the inner-product form ``argmax_x 2 q.x - |x|^2`` on augmented vectors.
    """
    db, q = _as_vectors(database, "database"), _as_vectors(queries, "queries", None)
    if metric == "l2":
        db = np.hstack([2.0 * db, -np.einsum("nd,nd->n", db, db)[:, None]]).astype(np.float32)  # (N, D + 1)
        q = np.hstack([q, np.ones((q.shape[0], 1), np.float32)])  # (Q, D + 1)
    elif metric != "ip":
        raise ValueError(f"metric={metric!r} is not one of {METRICS}")
    return chunked_topk(q, db, k, chunk_size=chunk_size)[1]


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean over queries of ``|approx top-k ∩ exact top-k| / k`` (ids ``-1`` never match)."""
    a, e = np.asarray(approx_ids)[:, :k], np.asarray(exact_ids)[:, :k]
    if a.shape[1] < k or e.shape[1] < k or a.shape[0] != e.shape[0]:
        raise ValueError(f"recall@{k} needs (Q, >= {k}) id arrays, got {a.shape} and {e.shape}")
    hits = (a[:, :, None] == e[:, None, :]).any(axis=2) & (a >= 0)  # (Q, k) approx ids found in the exact top-k
    return float(hits.sum(axis=1).mean() / k)


def _single_query_latencies(index: faiss.Index, queries: np.ndarray, k: int, warmup: int) -> np.ndarray:
    """Per-query wall times (ms), one query per call on one faiss thread (restored after)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for i in range(min(warmup, queries.shape[0])):
            index.search(queries[i:i + 1], k)
        times = np.empty(queries.shape[0])
        for i in range(queries.shape[0]):
            t0 = time.perf_counter()
            index.search(queries[i:i + 1], k)
            times[i] = time.perf_counter() - t0
    finally:
        faiss.omp_set_num_threads(threads)
    return 1000.0 * times


def _measure(index: faiss.Index, spec: IndexSpec, queries: np.ndarray, truth: np.ndarray,
             cfg: SweepConfig) -> dict[str, Any]:
    """Recall, documents scanned, latency and QPS of one search setting of a built index."""
    ids_at: dict[int, np.ndarray] = {}
    qps = None
    for k in sorted(set(cfg.ks) | {cfg.latency_k}):
        t0 = time.perf_counter()
        ids_at[k] = search(index, queries, k, cfg.batch_size)[1]
        if k == cfg.latency_k:
            qps = queries.shape[0] / max(time.perf_counter() - t0, 1e-9)
    row: dict[str, Any] = {f"recall@{k}": recall_at_k(ids_at[k], truth, k) for k in cfg.ks}
    row["docs_scanned"] = docs_scanned_per_query(index, queries, cfg.latency_k)
    row["p50_ms"] = row["p99_ms"] = None
    if cfg.n_latency_queries:
        ms = _single_query_latencies(index, queries[: cfg.n_latency_queries], cfg.latency_k, cfg.warmup_queries)
        row["p50_ms"], row["p99_ms"] = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    row["qps"] = qps
    return row


def _describe(spec: IndexSpec) -> dict[str, Any]:
    """The identifying fields of a setting (None where the kind has no such parameter)."""
    ivf, pq, hnsw = spec.kind in IVF_KINDS, spec.kind in PQ_KINDS, spec.kind == "hnsw"
    return {
        "setting": spec.name,
        "factory": spec.factory_string,
        "kind": spec.kind,
        "nlist": spec.nlist if ivf else None,
        "nprobe": spec.nprobe if ivf else None,
        "pq_bytes": spec.pq_bytes if pq else None,
        "opq": spec.kind == "opq_ivf_pq" if pq else None,
        "refine": spec.refine if pq else None,
        "hnsw_m": spec.hnsw_m if hnsw else None,
        "ef_search": spec.ef_search if hnsw else None,
    }


def _built(structure: IndexSpec, settings: list[IndexSpec], database: np.ndarray,
           cfg: SweepConfig) -> Iterator[tuple[IndexSpec, faiss.Index, float, int]]:
    """Each setting with its index (search parameters set), build seconds and memory bytes.

    The structure is built once; re-ranked settings share one exact flat copy wrapped around it
    (on a CPU copy of a GPU index, as :func:`~mmemb.index.factory.build_index` does).
    """
    t0 = time.perf_counter()
    base = build_index(structure, database, max_train=cfg.max_train, seed=cfg.seed)
    base_s = time.perf_counter() - t0
    built = {False: (base, base_s, index_memory_bytes(base))}  # keyed by "re-ranked"
    for spec in settings:
        refined = bool(spec.refine)
        if refined not in built:
            t1 = time.perf_counter()
            wrapped = add_refine(faiss.index_gpu_to_cpu(base) if _is_gpu(base) else base, database, spec.refine)
            built[True] = (wrapped, base_s + time.perf_counter() - t1, index_memory_bytes(wrapped))
        index, build_s, nbytes = built[refined]
        yield spec, set_search_params(index, **spec.search_params), build_s, nbytes


def run_sweep(database, queries, cfg: SweepConfig | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Measure every setting of ``cfg`` on ``database`` (``(N, D)``) with held-out ``queries``
    (``(Q, D)``); one row per setting, as described in the module docstring."""
    cfg = cfg or SweepConfig()
    db = _as_vectors(database, "database")
    q = _as_vectors(queries, "queries", db.shape[1])
    kmax = max(max(cfg.ks), cfg.latency_k)
    if kmax > db.shape[0]:
        raise ValueError(f"k up to {kmax} (ks={cfg.ks}, latency_k={cfg.latency_k}) exceeds the database size "
                         f"{db.shape[0]}")
    truth = exact_topk(db, q, max(cfg.ks), cfg.metric)  # (Q, max k)
    plan = cfg.structures()
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(len(s) for _, s in plan), desc="index sweep", unit="setting", disable=not progress)
    rows: list[dict[str, Any]] = []
    try:
        for structure, settings in plan:
            bar.set_postfix_str(f"building {structure.name.split('-np')[0]}")
            for spec, index, build_s, nbytes in _built(structure, settings, db, cfg):
                bar.set_postfix_str(spec.name)
                row = _describe(spec.with_dim(db.shape[1]))
                row.update(_measure(index, spec, q, truth, cfg))
                row.update({"memory_bytes": nbytes, "build_s": build_s, "gpu": _is_gpu(index),
                            "n_database": db.shape[0], "n_queries": q.shape[0], "dim": db.shape[1]})
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return rows


# ----------------------------------------------------------------------------------------- outputs

def _clean(value):
    """JSON-safe value: nan/inf become None, numpy scalars plain Python."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(rows: Sequence[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write ``{"meta": meta, "rows": rows}`` as JSON (nan/inf as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": {k: _clean(v) for k, v in (meta or {}).items()},
            "rows": [{k: _clean(v) for k, v in row.items()} for row in rows]}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the rows as CSV (columns: the union of their keys, in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if _clean(row.get(k)) is None else _clean(row.get(k)) for k in columns} for row in rows)
    return path


def _fmt(value, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict], ks: Sequence[int] | None = None) -> str:
    """Markdown table: setting, recall@k, docs scanned, p50/p99 ms, QPS, memory MiB, build s."""
    if ks is None:
        ks = sorted(int(key.split("@")[1]) for key in (rows[0] if rows else {}) if key.startswith("recall@"))
    header = ["setting", *[f"recall@{k}" for k in ks], "docs scanned", "p50 ms", "p99 ms", "QPS", "memory MiB",
              "build s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        cells = [row["setting"], *[_fmt(row.get(f"recall@{k}"), 4) for k in ks], _fmt(row.get("docs_scanned"), 0),
                 _fmt(row.get("p50_ms"), 3), _fmt(row.get("p99_ms"), 3), _fmt(row.get("qps"), 0),
                 _fmt(row["memory_bytes"] / 2**20, 1), _fmt(row.get("build_s"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Targets:
    """The EBR index targets :func:`target_report` checks."""

    k: int = 10  # recall cut-off
    min_recall: float = 0.99  # a "near-exact" setting has recall@k >= this
    min_speedup: float = 100.0  # ... and should be this much faster than Flat at p99
    memory_share: float = 1 / 8  # a "compact" setting uses at most this share of Flat's memory
    min_compact_recall: float = 0.90  # ... and should reach this recall@k
    extra: dict = field(default_factory=dict)  # free-form notes copied into the report


def target_report(rows: Sequence[dict], targets: Targets | None = None) -> dict[str, Any]:
    """Against Flat's row: the fastest setting (p99) with recall@k >= ``min_recall`` and its
    speed-up, and the best recall@k among settings within ``memory_share`` of Flat's memory."""
    t = targets or Targets()
    flat = next((r for r in rows if r["kind"] == "flat"), None)
    if flat is None:
        raise ValueError("target_report needs the Flat row (SweepConfig.flat=True)")
    key = f"recall@{t.k}"
    near_exact = [r for r in rows if r["kind"] != "flat" and r.get(key, 0) >= t.min_recall and r.get("p99_ms")]
    fastest = min(near_exact, key=lambda r: r["p99_ms"], default=None)
    speedup = flat["p99_ms"] / fastest["p99_ms"] if fastest and flat.get("p99_ms") else None
    budget = flat["memory_bytes"] * t.memory_share
    compact = [r for r in rows if r["memory_bytes"] <= budget]
    best_compact = max(compact, key=lambda r: (r[key], -(r.get("p99_ms") or 0)), default=None)
    return {
        "targets": asdict(t),
        "flat_p99_ms": flat.get("p99_ms"),
        "flat_memory_bytes": flat["memory_bytes"],
        "near_exact_setting": fastest["setting"] if fastest else None,
        "near_exact_recall": fastest[key] if fastest else None,
        "near_exact_p99_ms": fastest["p99_ms"] if fastest else None,
        "near_exact_speedup": speedup,
        "near_exact_met": bool(speedup is not None and speedup >= t.min_speedup),
        "compact_budget_bytes": budget,
        "compact_setting": best_compact["setting"] if best_compact else None,
        "compact_recall": best_compact[key] if best_compact else None,
        "compact_memory_bytes": best_compact["memory_bytes"] if best_compact else None,
        "compact_met": bool(best_compact is not None and best_compact[key] >= t.min_compact_recall),
    }


def format_target_report(report: dict[str, Any]) -> str:
    """The report of :func:`target_report` as a few Markdown bullet lines."""
    t = report["targets"]
    mark = lambda ok: "MET" if ok else "NOT MET"  # noqa: E731
    if report["near_exact_setting"]:
        near = (f"- fastest setting with recall@{t['k']} >= {t['min_recall']}: `{report['near_exact_setting']}` "
                f"(recall {report['near_exact_recall']:.4f}, p99 {report['near_exact_p99_ms']:.3f} ms vs Flat "
                f"{report['flat_p99_ms']:.3f} ms = {report['near_exact_speedup']:.1f}x; target >= "
                f"{t['min_speedup']:g}x: {mark(report['near_exact_met'])})")
    else:
        near = f"- no approximate setting reached recall@{t['k']} >= {t['min_recall']} (target NOT MET)"
    budget_mib = report["compact_budget_bytes"] / 2**20
    if report["compact_setting"]:
        compact = (f"- best recall@{t['k']} within {t['memory_share']:.3g} of Flat's memory ({budget_mib:.1f} MiB): "
                   f"`{report['compact_setting']}` ({report['compact_recall']:.4f}, "
                   f"{report['compact_memory_bytes'] / 2**20:.1f} MiB; target >= {t['min_compact_recall']}: "
                   f"{mark(report['compact_met'])})")
    else:
        compact = f"- no setting fits in {budget_mib:.1f} MiB (target NOT MET)"
    return near + "\n" + compact
