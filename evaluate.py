"""Evaluate trained checkpoints: tasks, embedding extraction, index sweeps, comparisons, real-data benchmarks.

    python evaluate.py --run runs/quickstart                  # = tasks: newest version, best checkpoint, test split
    python evaluate.py tasks --ckpt runs/quickstart/version_0/checkpoints/last.ckpt --split val
    python evaluate.py tasks --run runs/quickstart --config my_data.yaml      # another data section
    python evaluate.py extract --run runs/quickstart --split all --out runs/quickstart/emb
    python evaluate.py sweep --store runs/quickstart/emb --out runs/quickstart/sweep --quick
    python evaluate.py sweep --vectors db.npy --queries q.npy --out runs/sweep
    python evaluate.py compare runs/first_model runs/quickstart --ensemble 1,2 --out runs/compare
    python evaluate.py real-data --run runs/quickstart --out runs/real_data
    python evaluate.py COMMAND --help                        # every option, with an example

Commands
--------
``tasks`` (the default: ``python evaluate.py --run ...`` is ``python evaluate.py tasks --run ...``)
    On one split (``--split``, default test): text-to-video and video-to-text retrieval (recall@1/5/10,
    median rank, category and instance level, with chance), hashtag recommendation (P@1, R@5, mAP
    over the videos that have hashtags, next to the label-popularity baseline of the train split) and
    a category linear probe on the frozen video embeddings (and fused embeddings when the model has
    them; trained on the train split, with the majority-class baseline). Prints a Markdown table and
    writes ``metrics.json`` (``checkpoint``, ``config``, ``split``, ``metrics``), ``metrics.csv``
    (``metric,value``) and ``metrics.png`` next to the checkpoint (or in ``--out``). The metrics are
    defined in :mod:`mmemb.eval.tasks`.
``extract``
    Embeddings (``video``, ``text``, and ``multimodal`` for the teacher; zero rows where a modality is
    missing) of a split, or ``all`` splits, with their ids, into an :class:`~mmemb.eval.store.EmbeddingStore`
    (``--out``): resumable, a second run adds only what is missing; then ``embeddings.parquet``.
``sweep``
    faiss index sweep (:func:`mmemb.index.run_sweep`): Flat, IVF-Flat (nlist x nprobe), IVF-PQ with
    and without OPQ (PQ bytes d/8, d/4, d/2), HNSW (efSearch), against exact search, on a store's
    embeddings (``--store``; queries: ``--query-name``, e.g. text against the video gallery) or an
    ``.npy`` (``--vectors``, ``--queries``; without queries, rows held out of the database). The grid
    adapts to the database size (``--quick``: a smaller one). Writes ``sweep.json``, ``sweep.csv``,
    ``sweep.md``, ``recall_latency_p50.png`` / ``_p99.png`` (Pareto front), prints the table and
    the target report.
``compare``
    Several checkpoints (files or run folders) on every task on the same split, optionally with
    weighted-concatenation ensembles (``--ensemble 1,2`` or ``--ensemble 1:0.7,2:0.3``; members by
    position or label). Writes ``compare.json``, ``compare.csv`` (one row per model), ``compare.md``
    and ``compare.png`` (bars per metric, chance / baseline marked); prints the table.
``real-data``
    The KuaiRec hashtag / category benchmarks and the audio-visual correspondence benchmark on the
    real clips, with their classical baselines and, given ``--run``/``--ckpt``, the model's rows
    (text path, fused path, audio-visual; :mod:`mmemb.eval.real_data`). Writes ``results.json``,
    ``results.csv``, ``results.md``, ``results.png``.

Long loops show progress: a bar on a terminal, a plain line every 30 s in logs (``--no-progress``
turns it off). Checkpoints are read with ``torch.load(weights_only=True)`` (state dict and
hyper-parameters, no pickled code). The data module is rebuilt from the run's ``config.yaml``
(written by LightningCLI next to the logs) with the vocabularies saved by the training run.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmemb.eval import report  # noqa: E402
from mmemb.eval.loading import (  # noqa: E402,F401  (re-exported: evaluate.load_run etc.)
    LoadedRun,
    best_checkpoint,
    build_datamodule,
    checkpoint_dir,
    find_config,
    find_vocab_dir,
    load_run,
    resolve_checkpoint,
    split_loader,
)
from mmemb.eval.tasks import (  # noqa: E402
    SplitOutputs,
    embed_split,
    ensemble_outputs,
    task_metrics,
    train_hashtag_targets,
)

log = logging.getLogger("evaluate")

SUBCOMMANDS = ("tasks", "extract", "sweep", "compare", "real-data")
TABLE_LEVELS = ("category", "instance")
TABLE_DIRECTIONS = ("t2v", "v2t")
TABLE_KS = (1, 5, 10)
PROBES = ("video", "multimodal")


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


# ============================================================================ tasks


def _fmt(value: float | None) -> str:
    return report.fmt(value, 4)


def markdown_table(metrics: dict[str, float]) -> str:
    """``| metric | value | chance |`` rows: recall@k of both directions and levels, median ranks, then
    hashtag metrics (chance column: the label-popularity baseline) and the category probes (chance
    column: the majority class), then the counts."""
    lines = ["| metric | value | chance |", "| --- | ---: | ---: |"]
    for level in TABLE_LEVELS:
        for direction in TABLE_DIRECTIONS:
            for k in TABLE_KS:
                key = f"{direction}_r{k}_{level}"
                if key in metrics:
                    lines.append(f"| {key} | {_fmt(metrics[key])} | {_fmt(metrics.get(key + '_chance'))} |")
    for level in TABLE_LEVELS:
        for direction in TABLE_DIRECTIONS:
            key = f"{direction}_medr_{level}"
            if key in metrics:
                lines.append(f"| {key} | {report.fmt(metrics[key], 1)} | – |")
    for k in ("p1", "r5", "map"):
        key, base = f"hashtag_{k}", f"hashtag_{k}_popularity"
        if key in metrics or base in metrics:
            lines.append(f"| {key} | {_fmt(metrics.get(key))} | {_fmt(metrics.get(base))} (label popularity) |")
    for name in PROBES:
        key = f"probe_{name}_accuracy"
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} | "
                         f"{_fmt(metrics.get(f'probe_{name}_chance_majority'))} (majority class) |")
    lines.append(f"| queries (text) / gallery (video) | {int(metrics['n_text'])} / {int(metrics['n_video'])} | |")
    if "hashtag_n_samples" in metrics:
        lines.append(f"| videos with / without hashtags | {int(metrics['hashtag_n_samples'])} / "
                     f"{int(metrics.get('hashtag_n_excluded', 0))} | |")
    if "probe_video_n_train" in metrics:
        lines.append(f"| probe train / test videos | {int(metrics['probe_video_n_train'])} / "
                     f"{int(metrics['probe_video_n_test'])} | |")
    return "\n".join(lines)


def _json_ready(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def _nan(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


# metrics shown as bars (with their chance or baseline key)
PLOT_METRICS = (("t2v_r1_category", "t2v_r1_category_chance"), ("t2v_r5_category", "t2v_r5_category_chance"),
                ("t2v_r10_category", "t2v_r10_category_chance"), ("v2t_r1_category", "v2t_r1_category_chance"),
                ("v2t_r5_category", "v2t_r5_category_chance"), ("v2t_r10_category", "v2t_r10_category_chance"),
                ("t2v_r10_instance", "t2v_r10_instance_chance"), ("hashtag_p1", "hashtag_p1_popularity"),
                ("hashtag_map", "hashtag_map_popularity"), ("probe_video_accuracy", "probe_video_chance_majority"),
                ("probe_multimodal_accuracy", "probe_multimodal_chance_majority"))


def run_tasks(run: LoadedRun, split: str = "test", device: str | None = None, probe: bool = True,
              probe_max_train: int | None = None, show_progress: bool = True, name: str = ""
              ) -> tuple[dict[str, float], SplitOutputs, SplitOutputs | None, np.ndarray]:
    """Every task on ``split`` for a loaded run: ``(metrics, split outputs, train outputs or None,
    train hashtag targets)``."""
    dev = _device(device)
    label = f"{name}: " if name else ""
    ev = embed_split(run.module, split_loader(run.datamodule, split), dev, show_progress,
                     desc=f"{label}embedding {split}")
    train = None
    if probe:
        train = embed_split(run.module, split_loader(run.datamodule, "train", probe_max_train), dev, show_progress,
                            desc=f"{label}embedding train (probe)", hashtags=False)
    targets = train_hashtag_targets(run.datamodule)
    return task_metrics(ev, train, targets, ks=TABLE_KS), ev, train, targets


def evaluate(ckpt: Path, config_path: Path | None = None, split: str = "test", batch_size: int | None = None,
             num_workers: int | None = None, device: str | None = None, *, probe: bool = True,
             probe_max_train: int | None = None, out_dir: Path | None = None, show_progress: bool = True,
             plot: bool = True) -> dict[str, Any]:
    """Every task on ``split`` for checkpoint ``ckpt``; writes ``metrics.json``, ``metrics.csv`` and
    ``metrics.png`` to ``out_dir`` (default: beside the checkpoint) and returns the JSON's content."""
    ckpt = Path(ckpt)
    t0 = time.perf_counter()
    run = load_run(ckpt, config_path, batch_size, num_workers)
    metrics = run_tasks(run, split, device, probe, probe_max_train, show_progress)[0]
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent
    result = {"checkpoint": str(ckpt), "config": str(run.config_path), "split": split, "preset": run.preset,
              "seconds": time.perf_counter() - t0, "metrics": _json_ready(metrics)}
    report.write_json(result, out_dir / "metrics.json")
    report.write_csv([{"metric": k, "value": v} for k, v in metrics.items()], out_dir / "metrics.csv",
                     columns=("metric", "value"))
    if plot:
        shown = [(k, c) for k, c in PLOT_METRICS if k in metrics and not math.isnan(metrics[k])]
        if shown:
            report.plot_bars([k for k, _ in shown], {Path(ckpt).name: [metrics[k] for k, _ in shown]},
                             out_dir / "metrics.png", reference=[metrics.get(c) for _, c in shown],
                             title=f"{split} split: {ckpt.name}")
    return result


def cmd_tasks(args: argparse.Namespace) -> dict[str, Any]:
    ckpt = args.ckpt if args.ckpt is not None else resolve_checkpoint(args.run)
    out_dir = args.out if args.out is not None else ckpt.parent
    result = evaluate(ckpt, args.config, args.split, args.batch_size, args.num_workers, args.device,
                      probe=not args.no_probe, probe_max_train=args.probe_max_train, out_dir=out_dir,
                      show_progress=not args.no_progress, plot=not args.no_plot)
    print(f"\n{args.split} split, checkpoint {ckpt}\n")
    print(markdown_table(_nan(result["metrics"])))
    files = ["metrics.json", "metrics.csv"] + (["metrics.png"] if (out_dir / "metrics.png").exists()
                                               and not args.no_plot else [])
    print(f"\nwrote {', '.join(str(out_dir / f) for f in files)}")
    return result


# ============================================================================ extract


def cmd_extract(args: argparse.Namespace) -> dict[str, Any]:
    from mmemb.eval.store import EmbeddingStore, extract

    ckpt = args.ckpt if args.ckpt is not None else resolve_checkpoint(args.run)
    run = load_run(ckpt, args.config, args.batch_size, args.num_workers)
    dev = _device(args.device)
    module = run.module.to(dev).eval()
    splits = ("train", "val", "test") if args.split == "all" else (args.split,)
    info = {"checkpoint": str(Path(ckpt).resolve()), "split": args.split, "preset": run.preset}
    store = EmbeddingStore(args.out, info=info)
    before = len(store)
    done = store.done_ids()  # resume: decode only what the store lacks
    loaders = [split_loader(run.datamodule, s, exclude=done) for s in splits]

    def batches():
        for loader in loaders:
            yield from loader

    @torch.inference_mode()
    def embed_fn(batch: dict) -> dict[str, torch.Tensor]:
        out = module({k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()})
        names = ("video", "text", "multimodal")
        return {n: out[n].float().cpu() for n in names if n in out}

    bar = report.progress(batches(), total=sum(len(ld) for ld in loaders), desc=f"extracting {args.split}",
                          unit="batch", enabled=not args.no_progress)
    added = extract(bar, embed_fn, store, chunk_size=args.chunk_size, progress=False)
    bar.close()
    rows = []
    for name, dim in sorted(store.dims.items()):
        ids, x = store.load(name)
        rows.append([name, str(dim), str(len(ids)), str(int((~np.asarray(x).any(axis=1)).sum()))])
    files = [str(Path(args.out) / "manifest.json")]
    if not args.no_parquet and len(store):
        files.append(str(store.to_parquet(Path(args.out) / "embeddings.parquet")))
    print(f"\n{args.split} split, checkpoint {ckpt}: {added} rows added, {before} already stored\n")
    print(report.markdown_table(["embedding", "dim", "rows", "zero rows (missing modality)"], rows))
    print(f"\nwrote {', '.join(files)}")
    return {"checkpoint": str(ckpt), "split": args.split, "added": added, "stored": len(store), "dims": store.dims,
            "out": str(args.out)}


# ============================================================================ sweep


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


def sweep_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    """``(database, queries, description)`` from ``--store`` / ``--vectors`` (zero rows dropped)."""
    if args.store is not None:
        from mmemb.eval.store import EmbeddingStore

        store = EmbeddingStore(args.store)
        db = np.asarray(store.load(args.name)[1], dtype=np.float32)
        source = f"{args.store} [{args.name}]"
        queries = np.asarray(store.load(args.query_name)[1], dtype=np.float32) if args.query_name else None
        qsource = f"[{args.query_name}]" if args.query_name else None
    else:
        db = np.asarray(np.load(args.vectors, mmap_mode="r"), dtype=np.float32)
        source = str(args.vectors)
        queries = np.asarray(np.load(args.queries), dtype=np.float32) if args.queries is not None else None
        qsource = str(args.queries) if args.queries is not None else None
    if db.ndim != 2:
        raise SystemExit(f"evaluate.py sweep: the database must be a 2-D (rows, dim) array, got {db.shape}")
    db = _nonzero(db)
    if queries is None:
        n_q = min(args.n_queries, max(1, db.shape[0] // 10))
        held = np.random.default_rng(args.seed).permutation(db.shape[0])[:n_q]
        mask = np.zeros(db.shape[0], bool)
        mask[held] = True
        db, queries = db[~mask], db[mask]
        qsource = f"{n_q} rows held out of the database"
    else:
        queries = _nonzero(queries)[: args.n_queries]
    if not args.no_normalize:
        db, queries = _l2(db), _l2(queries)
    return np.ascontiguousarray(db), np.ascontiguousarray(queries), f"database {source}, queries {qsource}"


def sweep_config(args: argparse.Namespace, n: int, d: int):
    from mmemb.index import SweepConfig

    grid = default_grid(n, d, args.quick)
    for key, attr in (("nlist", "nlist"), ("nprobe", "nprobe"), ("pq_bytes", "pq_bytes"), ("opq", "opq"),
                      ("hnsw_m", "hnsw_m"), ("hnsw_ef_search", "ef_search"), ("refine", "refine")):
        value = getattr(args, attr)
        if value is not None:
            grid[key] = tuple(value)
    if args.latency_queries is not None:
        grid["n_latency_queries"] = args.latency_queries
    if args.nbits is not None:
        grid["nbits"] = args.nbits
    if True in grid["opq"] and n < d:
        log.warning("OPQ left out: faiss cannot train it on %d vectors of dimension %d (needs >= %d)", n, d, d)
        grid["opq"] = tuple(o for o in grid["opq"] if not o) or (False,)
    ks = tuple(k for k in args.k if k <= n) or (n,)
    latency_k = 10 if 10 in ks else ks[-1]
    return SweepConfig(ks=ks, latency_k=latency_k, nlist=grid["nlist"], nprobe=grid["nprobe"],
                       pq_bytes=grid["pq_bytes"], nbits=grid["nbits"], opq=grid["opq"], refine=grid["refine"],
                       hnsw_m=grid["hnsw_m"], hnsw_ef_search=grid["hnsw_ef_search"], metric=args.metric,
                       use_gpu=args.use_gpu, n_latency_queries=grid["n_latency_queries"], seed=args.seed)


def sweep_parts(cfg) -> list:
    """``cfg`` split into one config per index structure, in :meth:`SweepConfig.structures` order."""
    from dataclasses import replace

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


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from mmemb.index import markdown_table as sweep_table
    from mmemb.index import plot_recall_latency, run_sweep, target_report
    from mmemb.index import write_csv as sweep_csv
    from mmemb.index import write_json as sweep_json
    from mmemb.index.sweep import Targets, format_target_report

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    db, queries, described = sweep_data(args)
    if db.shape[0] < 2 or queries.shape[0] < 1:
        raise SystemExit(f"evaluate.py sweep: too few vectors ({db.shape[0]} in the database, {queries.shape[0]} "
                         "queries)")
    cfg = sweep_config(args, db.shape[0], db.shape[1])
    print(f"index sweep: {described}; {db.shape[0]} x {db.shape[1]} database, {queries.shape[0]} queries, "
          f"{cfg.num_settings()} settings (nlist {cfg.nlist}, PQ bytes {cfg.pq_bytes} x {cfg.nbits} bits, OPQ "
          f"{cfg.opq}, efSearch {cfg.hnsw_ef_search}), faiss threads {faiss.omp_get_max_threads()}", flush=True)
    t0 = time.perf_counter()
    rows = sweep_in_parts(db, queries, cfg, run_sweep, show_progress=not args.no_progress)
    wall = time.perf_counter() - t0
    k = cfg.latency_k
    rep = target_report(rows, Targets(k=k))
    table, targets = sweep_table(rows), format_target_report(rep)
    out = Path(args.out)
    meta = {"database": described, "n_database": db.shape[0], "n_queries": queries.shape[0], "dim": db.shape[1],
            "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "wall_s": wall, "quick": args.quick,
            **{f"target_{key}": v for key, v in rep.items() if not isinstance(v, dict)}}
    files = [sweep_json(rows, out / "sweep.json", meta=meta), sweep_csv(rows, out / "sweep.csv")]
    (out / "sweep.md").write_text(f"{described}\n\n{table}\n\n{targets}\n", encoding="utf-8")
    files.append(out / "sweep.md")
    if any(r.get("p50_ms") for r in rows):
        for latency in ("p50_ms", "p99_ms"):
            files.append(plot_recall_latency(rows, out / f"recall_latency_{latency.split('_')[0]}.png", k=k,
                                             latency=latency, title=f"N={db.shape[0]}, d={db.shape[1]}: recall@{k} "
                                             f"vs {latency.split('_')[0]} latency"))
    print(f"\n{table}\n\n{targets}\n\nsweep: {wall:.1f} s; wrote {', '.join(str(f) for f in files)}")
    return {"rows": rows, "target_report": rep, "out": str(out)}


# ============================================================================ compare

COMPARE_COLUMNS = (("t2v_r1_category", "t2v_r1_category_chance"), ("t2v_r5_category", "t2v_r5_category_chance"),
                   ("t2v_r10_category", "t2v_r10_category_chance"), ("v2t_r1_category", "v2t_r1_category_chance"),
                   ("v2t_r5_category", "v2t_r5_category_chance"), ("t2v_r10_instance", "t2v_r10_instance_chance"),
                   ("t2v_medr_category", None), ("hashtag_map", "hashtag_map_popularity"),
                   ("hashtag_p1", "hashtag_p1_popularity"), ("probe_video_accuracy", "probe_video_chance_majority"),
                   ("probe_multimodal_accuracy", "probe_multimodal_chance_majority"))


def parse_ensemble(spec: str, labels: Sequence[str], sources: Sequence[str]) -> list[tuple[int, float]]:
    """``"1,2"``, ``"1:0.7,2:0.3"`` or labels/sources instead of positions -> ``[(member index, weight)]``."""
    members = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        ref, weight = part, 1.0
        if ":" in part:
            head, tail = part.rsplit(":", 1)
            try:
                ref, weight = head, float(tail)
            except ValueError:
                ref, weight = part, 1.0
        if ref.isdigit() and 1 <= int(ref) <= len(labels):
            idx = int(ref) - 1
        elif ref in labels:
            idx = list(labels).index(ref)
        elif ref in sources:
            idx = list(sources).index(ref)
        else:
            raise SystemExit(f"evaluate.py compare: --ensemble {spec!r}: {ref!r} is not a position 1..{len(labels)} "
                             f"or one of {list(labels)}")
        if not (weight >= 0 and math.isfinite(weight)):
            raise SystemExit(f"evaluate.py compare: --ensemble {spec!r}: weight {weight} must be >= 0")
        members.append((idx, weight))
    if len(members) < 1 or sum(w for _, w in members) <= 0:
        raise SystemExit(f"evaluate.py compare: --ensemble {spec!r} needs members with a positive total weight")
    return members


def _labels(sources: Sequence[str], given: Sequence[str] | None) -> list[str]:
    if given:
        if len(given) != len(sources):
            raise SystemExit(f"evaluate.py compare: {len(given)} --labels for {len(sources)} checkpoints")
        return list(given)
    out = []
    for src in sources:
        p = Path(src)
        name = p.name if p.is_dir() else (f"{p.parent.parent.parent.name}/{p.stem}"
                                          if p.parent.name == "checkpoints" else p.stem)
        base, i = name, 2
        while name in out:
            name, i = f"{base}#{i}", i + 1
        out.append(name)
    return out


def compare_markdown(rows: Sequence[dict]) -> str:
    """Rows = models, columns = metrics present in any row; last row = chance / baseline."""
    cols = [(k, c) for k, c in COMPARE_COLUMNS if any(k in r["metrics"] for r in rows)]
    body = [[r["name"], *[report.fmt(r["metrics"].get(k), 1 if "medr" in k else 4) for k, _ in cols]] for r in rows]
    body.append(["chance / baseline", *[report.fmt(_reference(rows, c), 4) if c else "–" for _, c in cols]])
    return report.markdown_table(["model", *[k for k, _ in cols]], body)


def _reference(rows: Sequence[dict], key: str | None) -> float | None:
    """The chance / baseline ``key`` of the first row that has it (same split: the same for all)."""
    for r in rows:
        value = r["metrics"].get(key) if key else None
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    sources = list(args.checkpoints)
    labels = _labels(sources, args.labels)
    ensembles = [(spec, parse_ensemble(spec, labels, sources)) for spec in args.ensemble or []]
    keep = bool(ensembles)
    rows: list[dict] = []
    kept: list[tuple[SplitOutputs, SplitOutputs | None, np.ndarray]] = []
    splits_seen = set()
    t0 = time.perf_counter()
    for label, src in zip(labels, sources):
        ckpt = resolve_checkpoint(src)
        run = load_run(ckpt, args.config, args.batch_size, args.num_workers)
        data = run.datamodule
        splits_seen.add((str(data.manifest_path().resolve()), repr(sorted(vars(data.split).items()))))
        metrics, ev, train, targets = run_tasks(run, args.split, args.device, not args.no_probe, args.probe_max_train,
                                                not args.no_progress, name=label)
        rows.append({"name": label, "kind": "model", "checkpoint": str(ckpt), "preset": run.preset,
                     "metrics": metrics})
        kept.append((ev, train, targets) if keep else None)
        del run
    if len(splits_seen) > 1:
        log.warning("the checkpoints use different manifests or split settings: their %s splits differ", args.split)
    if len({r["metrics"].get("hashtag_map_popularity") for r in rows}) > 1:
        log.warning("the checkpoints' hashtag vocabularies differ: their hashtag metrics rank different labels")
    for spec, members in ensembles:
        weights = [w for _, w in members]
        ev = ensemble_outputs([kept[i][0] for i, _ in members], weights)
        trains = [kept[i][1] for i, _ in members]
        train = ensemble_outputs(trains, weights) if all(t is not None for t in trains) else None
        metrics = task_metrics(ev, train, kept[members[0][0]][2], ks=TABLE_KS)
        name = "ensemble(" + ", ".join(f"{labels[i]}:{w:g}" for i, w in members) + ")"
        rows.append({"name": name, "kind": "ensemble", "checkpoint": " + ".join(rows[i]["checkpoint"] for i, _ in members),
                     "preset": "", "metrics": metrics})
    out = Path(args.out)
    table = compare_markdown(rows)
    keys = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    report.write_csv([{"name": r["name"], "kind": r["kind"], "checkpoint": r["checkpoint"], "preset": r["preset"],
                       **r["metrics"]} for r in rows], out / "compare.csv",
                     columns=["name", "kind", "checkpoint", "preset", *keys])
    report.write_json({"split": args.split, "seconds": time.perf_counter() - t0, "ensembles": [s for s, _ in ensembles],
                       "rows": rows}, out / "compare.json")
    (out / "compare.md").write_text(f"{args.split} split\n\n{table}\n", encoding="utf-8")
    files = [out / "compare.json", out / "compare.csv", out / "compare.md"]
    shown = [(k, c) for k, c in PLOT_METRICS if any(not math.isnan(r["metrics"].get(k, math.nan)) for r in rows)]
    if shown and not args.no_plot:
        files.append(report.plot_bars([k for k, _ in shown], {r["name"]: [r["metrics"].get(k) for k, _ in shown]
                                                              for r in rows}, out / "compare.png",
                                      reference=[_reference(rows, c) for _, c in shown],
                                      title=f"{args.split} split"))
    print(f"\n{args.split} split\n\n{table}\n\nwrote {', '.join(str(f) for f in files)}")
    return {"split": args.split, "rows": rows, "out": str(out)}


# ============================================================================ real-data


def cmd_real_data(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    from mmemb.eval.real_data import run_real_data, write_outputs

    ckpt = args.ckpt if args.ckpt is not None else (resolve_checkpoint(args.run) if args.run is not None else None)
    t0 = time.perf_counter()
    rows, tables = run_real_data(None if args.skip_kuairec else args.csv, None if args.skip_av else args.clips, ckpt,
                                 args.config, max_rows=args.max_rows, device=args.device,
                                 show_progress=not args.no_progress)
    total = time.perf_counter() - t0
    header = (f"## Real-data benchmarks\n\n{platform.platform()}, python {platform.python_version()}, "
              f"{os.cpu_count()} CPU(s); total {total:.1f}s" + (f"; checkpoint {ckpt}" if ckpt else "")
              + (f"; KuaiRec first {args.max_rows} rows" if args.max_rows else "") + "\n")
    md = header + "\n" + tables
    files = write_outputs(rows, md, args.out, plot=not args.no_plot)
    print(md)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return {"rows": rows, "out": str(args.out), "checkpoint": str(ckpt) if ckpt else None}


# ============================================================================ parser

REPO = Path(__file__).resolve().parent


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows a default when the help does not mention it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and "default" not in text and action.default not in (None, False, argparse.SUPPRESS):
            value = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            text += f" (default: {value})"
        return text


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100)


def _common(parser: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        parser.add_argument("--config", type=Path, default=None,
                            help="config.yaml of the run (default: found beside the checkpoint)")
        parser.add_argument("--batch-size", type=int, default=None, help="default: the run's data.batch_size")
        parser.add_argument("--num-workers", type=int, default=None, help="default: the run's data.num_workers")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")


def _source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--run", type=Path, help="run folder (e.g. runs/quickstart): newest version, best checkpoint")
    source.add_argument("--ckpt", type=Path, help="a checkpoint file")


def _probe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-probe", action="store_true",
                        help="skip the category linear probe (saves embedding the train split)")
    parser.add_argument("--probe-max-train", type=int, default=None,
                        help="train the probe on at most this many train videos (evenly spaced); default all")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        epilog="Without a command, the arguments go to `tasks` (python evaluate.py --run runs/quickstart).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tasks", formatter_class=_Help, help="retrieval, hashtag and probe metrics of one checkpoint",
                       description=_wrap("Retrieval (t2v/v2t R@1/5/10, median rank), hashtag P@1/R@5/mAP with the label-"
                       "popularity baseline, and a category linear probe, on one split. Writes metrics.json, "
                       "metrics.csv and metrics.png beside the checkpoint (or in --out)."),
                       epilog="example:\n  python evaluate.py tasks --run runs/quickstart --split test\n"
                       "  python evaluate.py --run runs/quickstart            # the same: tasks is the default")
    _source(p)
    p.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the checkpoint's folder)")
    _probe_args(p)
    _common(p)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("extract", formatter_class=_Help, help="embeddings of a split into a resumable store",
                       description=_wrap("Embeddings (video, text, and multimodal for the teacher; zero rows where a "
                       "modality is missing) with their ids into an EmbeddingStore (chunked .npy + manifest; a "
                       "second run resumes), then embeddings.parquet."),
                       epilog="example:\n  python evaluate.py extract --run runs/quickstart --split all "
                       "--out runs/quickstart/emb")
    _source(p)
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="the split to embed (train in evaluation mode), or all three")
    p.add_argument("--out", type=Path, required=True, help="store folder")
    p.add_argument("--chunk-size", type=int, default=4096, help="rows per stored chunk")
    p.add_argument("--no-parquet", action="store_true", help="do not export embeddings.parquet")
    _common(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("sweep", formatter_class=_Help, help="faiss index sweep: recall, latency, memory",
                       description=_wrap("Sweep Flat, IVF-Flat, IVF-PQ (with/without OPQ) and HNSW settings against exact "
                       "search. The default grid adapts to the database size (see default_grid); options override "
                       "it. Vectors are L2-normalised (cosine) unless --no-normalize."),
                       epilog="examples:\n  python evaluate.py sweep --store runs/quickstart/emb --query-name text "
                       "--out runs/quickstart/sweep\n  python evaluate.py sweep --vectors db.npy --out runs/sweep "
                       "--quick")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", type=Path, help="an EmbeddingStore folder (evaluate.py extract)")
    src.add_argument("--vectors", type=Path, help="a (rows, dim) .npy database")
    p.add_argument("--name", default="video", help="--store: the embedding to index")
    p.add_argument("--query-name", default=None, help="--store: the embedding used as queries (default: rows held "
                   "out of the database)")
    p.add_argument("--queries", type=Path, default=None, help="--vectors: a (rows, dim) .npy of queries")
    p.add_argument("--n-queries", type=int, default=1000, help="at most this many queries (held out: at most 10%%)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="a small grid: one nlist, nprobe 1/8/32, PQ d/4 without OPQ (whose training takes minutes), "
                   "efSearch 16/64")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="recall@k cut-offs (<= database size)")
    p.add_argument("--nlist", type=int, nargs="+", default=None, help="IVF list counts")
    p.add_argument("--nprobe", type=int, nargs="+", default=None, help="IVF lists probed")
    p.add_argument("--pq-bytes", nargs="+", default=None, type=lambda s: s if s == "d/4" else int(s),
                   help="IVF-PQ code bytes (ints dividing the dimension, or d/4)")
    p.add_argument("--opq", nargs="+", default=None, type=lambda s: s.lower() in ("1", "true", "yes", "on"),
                   help="IVF-PQ without / with OPQ, e.g. --opq false true")
    p.add_argument("--nbits", type=int, default=None, help="IVF-PQ bits per code (default 8, fewer on small "
                   "data: 2**nbits centroids need as many training vectors)")
    p.add_argument("--hnsw-m", type=int, nargs="+", default=None, help="HNSW graph degrees")
    p.add_argument("--ef-search", type=int, nargs="+", default=None, help="HNSW efSearch values")
    p.add_argument("--refine", type=float, nargs="+", default=None, help="IVF-PQ exact re-rank k_factors (0 = none)")
    p.add_argument("--latency-queries", type=int, default=None, help="queries timed one at a time (0 = no latency; default 200, 50 with --quick)")
    p.add_argument("--metric", choices=("ip", "l2"), default="ip", help="inner product (cosine) or L2")
    p.add_argument("--use-gpu", choices=("auto", "never", "always"), default="never",
                   help="GPU faiss for Flat/IVF (the latency loop then times the GPU)")
    p.add_argument("--no-normalize", action="store_true", help="keep the vectors as they are")
    p.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0 = faiss's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out queries and training samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", formatter_class=_Help, help="several checkpoints (and ensembles) on every task",
                       description=_wrap("Every task for each checkpoint (file or run folder) on the same split; "
                       "--ensemble adds the weighted-concatenation ensemble of some of them (members by position "
                       "1..N or label, optional :weight). Writes compare.json, compare.csv, compare.md, compare.png."),
                       epilog="examples:\n  python evaluate.py compare runs/first_model runs/quickstart\n"
                       "  python evaluate.py compare runs/a runs/b --labels a b --ensemble a:0.7,b:0.3 --out runs/cmp")
    p.add_argument("checkpoints", nargs="+", metavar="RUN_OR_CKPT", help="run folders or checkpoint files")
    p.add_argument("--labels", nargs="+", default=None, help="row names (default: run folder names)")
    p.add_argument("--ensemble", action="append", default=None, metavar="A,B[:w]",
                   help="members of an ensemble, e.g. 1,2 or 1:0.7,2:0.3 (repeatable)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    _probe_args(p)
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("real-data", formatter_class=_Help, help="KuaiRec and audio-visual real-data benchmarks",
                       description=_wrap("KuaiRec hashtag recommendation and category probe (text), audio-visual "
                       "correspondence on the real clips: classical baselines, and the checkpoint's rows given "
                       "--run/--ckpt (text path, fused path, audio-visual), by the same code on the same split."),
                       epilog="examples:\n  python evaluate.py real-data                      # baselines only\n"
                       "  python evaluate.py real-data --run runs/quickstart --max-rows 2000")
    _source(p, required=False)
    p.add_argument("--csv", default=str(REPO / "assets/kuairec/kuairec_caption_category.csv"),
                   help="the KuaiRec caption/category CSV")
    p.add_argument("--clips", default=str(REPO / "assets/clips"), help="folder of real clips for the AV benchmark")
    p.add_argument("--out", type=Path, default=Path("runs/real_data"), help="output folder")
    p.add_argument("--max-rows", type=int, default=None, help="only the first rows of the KuaiRec CSV")
    p.add_argument("--skip-kuairec", action="store_true", help="no KuaiRec rows")
    p.add_argument("--skip-av", action="store_true", help="no audio-visual rows")
    p.add_argument("--config", type=Path, default=None, help="config.yaml of the run (default: found beside it)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_real_data)
    return parser


def _with_command(argv: list[str]) -> list[str]:
    """Arguments without a command go to ``tasks`` (the historical ``evaluate.py --run ...`` form)."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        return ["tasks", *argv]
    return argv


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(_with_command(argv))
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    return args.func(args)


if __name__ == "__main__":
    main()
