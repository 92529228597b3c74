"""One checkpoint: every task on a split (``mmemb eval tasks``), or its embeddings into a store
(``mmemb eval extract``).

:func:`evaluate_checkpoint` rebuilds the run (:func:`mmemb.eval.loading.load_run`), scores every task
of :mod:`mmemb.eval.tasks` on one split and writes ``metrics.json`` (``checkpoint``, ``config``,
``split``, ``preset``, ``seconds``, ``metrics``; nan as null), ``metrics.csv`` (``metric,value``) and
``metrics.png`` (bars, chance / baseline ticked) beside the checkpoint or in ``out_dir``;
:func:`markdown_table` is the table the command prints. :func:`extract_checkpoint` writes the
``video``, ``text`` (and ``multimodal``) embeddings of a split, or of all three, into a resumable
:class:`~mmemb.eval.store.EmbeddingStore`, then ``embeddings.parquet``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import report
from .loading import LoadedRun, load_run, split_loader
from .tasks import SplitOutputs, embed_split, task_metrics, train_hashtag_targets

__all__ = [
    "TABLE_KS",
    "PLOT_METRICS",
    "device_of",
    "markdown_table",
    "run_tasks",
    "evaluate_checkpoint",
    "extract_checkpoint",
]

TABLE_LEVELS = ("category", "instance")
TABLE_DIRECTIONS = ("t2v", "v2t")
TABLE_KS = (1, 5, 10)
PROBES = ("video", "multimodal")
# metrics shown as bars (with their chance or baseline key)
PLOT_METRICS = (("t2v_r1_category", "t2v_r1_category_chance"), ("t2v_r5_category", "t2v_r5_category_chance"),
                ("t2v_r10_category", "t2v_r10_category_chance"), ("v2t_r1_category", "v2t_r1_category_chance"),
                ("v2t_r5_category", "v2t_r5_category_chance"), ("v2t_r10_category", "v2t_r10_category_chance"),
                ("t2v_r10_instance", "t2v_r10_instance_chance"), ("hashtag_p1", "hashtag_p1_popularity"),
                ("hashtag_map", "hashtag_map_popularity"), ("probe_video_accuracy", "probe_video_chance_majority"),
                ("probe_multimodal_accuracy", "probe_multimodal_chance_majority"))


def device_of(name: str | None) -> torch.device:
    """``name``, or cuda when available, else cpu."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


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


def json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """``metrics`` with nan as None (JSON null)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def nan_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The inverse of :func:`json_metrics`: None back to nan."""
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}


def run_tasks(run: LoadedRun, split: str = "test", device: str | None = None, probe: bool = True,
              probe_max_train: int | None = None, show_progress: bool = True, name: str = ""
              ) -> tuple[dict[str, float], SplitOutputs, SplitOutputs | None, np.ndarray]:
    """Every task on ``split`` for a loaded run: ``(metrics, split outputs, train outputs or None,
    train hashtag targets)``."""
    dev = device_of(device)
    label = f"{name}: " if name else ""
    ev = embed_split(run.module, split_loader(run.datamodule, split), dev, show_progress,
                     desc=f"{label}embedding {split}")
    train = None
    if probe:
        train = embed_split(run.module, split_loader(run.datamodule, "train", probe_max_train), dev, show_progress,
                            desc=f"{label}embedding train (probe)", hashtags=False)
    targets = train_hashtag_targets(run.datamodule)
    return task_metrics(ev, train, targets, ks=TABLE_KS), ev, train, targets


def evaluate_checkpoint(ckpt: str | Path, config_path: Path | None = None, split: str = "test",
                        batch_size: int | None = None, num_workers: int | None = None, device: str | None = None, *,
                        probe: bool = True, probe_max_train: int | None = None, out_dir: Path | None = None,
                        show_progress: bool = True, plot: bool = True) -> dict[str, Any]:
    """Every task on ``split`` for checkpoint ``ckpt``; writes ``metrics.json``, ``metrics.csv`` and
    ``metrics.png`` to ``out_dir`` (default: beside the checkpoint) and returns the JSON's content
    (plus ``files``: the paths written)."""
    ckpt = Path(ckpt)
    t0 = time.perf_counter()
    run = load_run(ckpt, config_path, batch_size, num_workers)
    metrics = run_tasks(run, split, device, probe, probe_max_train, show_progress)[0]
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent
    result = {"checkpoint": str(ckpt), "config": str(run.config_path), "split": split, "preset": run.preset,
              "seconds": time.perf_counter() - t0, "metrics": json_metrics(metrics)}
    files = [report.write_json(result, out_dir / "metrics.json"),
             report.write_csv([{"metric": k, "value": v} for k, v in metrics.items()], out_dir / "metrics.csv",
                              columns=("metric", "value"))]
    if plot:
        shown = [(k, c) for k, c in PLOT_METRICS if k in metrics and not math.isnan(metrics[k])]
        if shown:
            files.append(report.plot_bars([k for k, _ in shown], {ckpt.name: [metrics[k] for k, _ in shown]},
                                          out_dir / "metrics.png", reference=[metrics.get(c) for _, c in shown],
                                          title=f"{split} split: {ckpt.name}"))
    return {**result, "files": [str(f) for f in files]}


def extract_checkpoint(ckpt: str | Path, out: str | Path, split: str = "test", config_path: Path | None = None,
                       batch_size: int | None = None, num_workers: int | None = None, device: str | None = None, *,
                       chunk_size: int = 4096, parquet: bool = True, show_progress: bool = True,
                       logits: bool = False) -> dict[str, Any]:
    """The embeddings of ``split`` (``train``/``val``/``test``, or ``all``) into the store at ``out``:
    resumable (only ids the store lacks are decoded); returns ``checkpoint``, ``split``, ``added``,
    ``stored``, ``dims``, ``out``, ``table`` (Markdown: rows and zero rows per embedding), ``files``.

    With ``logits`` the store also holds the label heads' raw scores (``hashtag_logits``,
    ``query_logits``, for the heads the model has) and its info the run's vocabulary fingerprint
    (``vocab_fingerprint``, :func:`mmemb.data.vocab.vocab_fingerprint`): the teacher store of offline
    distillation (:class:`mmemb.lit.distill.DistillModule`)."""
    from .store import EmbeddingStore, extract

    run = load_run(ckpt, config_path, batch_size, num_workers)
    dev = device_of(device)
    module = run.module.to(dev).eval()
    splits = ("train", "val", "test") if split == "all" else (split,)
    info = {"checkpoint": str(Path(ckpt).resolve()), "split": split, "preset": run.preset}
    if logits:
        from ..data.vocab import vocab_fingerprint

        info["vocab_fingerprint"] = vocab_fingerprint(run.datamodule.vocabs)
    store = EmbeddingStore(out, info=info)
    before = len(store)
    done = store.done_ids()  # resume: decode only what the store lacks
    loaders = [split_loader(run.datamodule, s, exclude=done) for s in splits]

    def batches():
        for loader in loaders:
            yield from loader

    @torch.inference_mode()
    def embed_fn(batch: dict) -> dict[str, torch.Tensor]:
        outputs = module({k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()})
        names = ("video", "text", "multimodal") + (("hashtag_logits", "query_logits") if logits else ())
        return {n: outputs[n].float().cpu() for n in names if n in outputs}

    bar = report.progress(batches(), total=sum(len(ld) for ld in loaders), desc=f"extracting {split}",
                          unit="batch", enabled=show_progress)
    added = extract(bar, embed_fn, store, chunk_size=chunk_size, progress=False)
    bar.close()
    rows = []
    for name, dim in sorted(store.dims.items()):
        ids, x = store.load(name)
        rows.append([name, str(dim), str(len(ids)), str(int((~np.asarray(x).any(axis=1)).sum()))])
    files = [str(Path(out) / "manifest.json")]
    if parquet and len(store):
        files.append(str(store.to_parquet(Path(out) / "embeddings.parquet")))
    table = report.markdown_table(["embedding", "dim", "rows", "zero rows (missing modality)"], rows)
    return {"checkpoint": str(ckpt), "split": split, "added": added, "before": before, "stored": len(store),
            "dims": store.dims, "out": str(out), "table": table, "files": files}
