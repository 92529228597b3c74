"""Several checkpoints, and weighted-concatenation ensembles of them, on every task (``mmemb eval compare``).

Each checkpoint (a file, or a run folder: its newest version's best checkpoint) is evaluated on the
same split by :func:`mmemb.eval.checkpoint.run_tasks`; an ensemble (:func:`parse_ensemble`: members
by position 1..N, label or source, optional ``:weight``) is scored by the same
:func:`~mmemb.eval.tasks.task_metrics` on :func:`~mmemb.eval.tasks.ensemble_outputs`.
:func:`compare_checkpoints` writes ``compare.json``, ``compare.csv`` (one row per model),
``compare.md`` and ``compare.png`` (bars per metric, chance / baseline ticked).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from . import report
from .checkpoint import PLOT_METRICS, TABLE_KS, run_tasks
from .loading import load_run, resolve_checkpoint
from .tasks import SplitOutputs, ensemble_outputs, task_metrics

__all__ = ["COMPARE_COLUMNS", "parse_ensemble", "row_labels", "compare_markdown", "compare_checkpoints"]

log = logging.getLogger(__name__)

COMPARE_COLUMNS = (("t2v_r1_category", "t2v_r1_category_chance"), ("t2v_r5_category", "t2v_r5_category_chance"),
                   ("t2v_r10_category", "t2v_r10_category_chance"), ("v2t_r1_category", "v2t_r1_category_chance"),
                   ("v2t_r5_category", "v2t_r5_category_chance"), ("t2v_r10_instance", "t2v_r10_instance_chance"),
                   ("t2v_medr_category", None), ("hashtag_map", "hashtag_map_popularity"),
                   ("hashtag_p1", "hashtag_p1_popularity"), ("probe_video_accuracy", "probe_video_chance_majority"),
                   ("probe_multimodal_accuracy", "probe_multimodal_chance_majority"))


def parse_ensemble(spec: str, labels: Sequence[str], sources: Sequence[str]) -> list[tuple[int, float]]:
    """``"1,2"``, ``"1:0.7,2:0.3"`` or labels/sources instead of positions -> ``[(member index, weight)]``;
    an unknown member or a negative weight raises :class:`~mmemb.errors.InputError`."""
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
            raise InputError(f"--ensemble {spec!r}: {ref!r} is not a position 1..{len(labels)} or one of {list(labels)}")
        if not (weight >= 0 and math.isfinite(weight)):
            raise InputError(f"--ensemble {spec!r}: weight {weight} must be >= 0")
        members.append((idx, weight))
    if len(members) < 1 or sum(w for _, w in members) <= 0:
        raise InputError(f"--ensemble {spec!r} needs members with a positive total weight")
    return members


def row_labels(sources: Sequence[str], given: Sequence[str] | None) -> list[str]:
    """The row names: ``given``, else the run folder names (``run/ckpt-stem`` for checkpoint files),
    made unique with ``#2``, ``#3``."""
    if given:
        if len(given) != len(sources):
            raise InputError(f"{len(given)} --labels for {len(sources)} checkpoints")
        return list(given)
    out: list[str] = []
    for src in sources:
        p = Path(src)
        name = p.name if p.is_dir() else (f"{p.parent.parent.parent.name}/{p.stem}"
                                          if p.parent.name == "checkpoints" else p.stem)
        base, i = name, 2
        while name in out:
            name, i = f"{base}#{i}", i + 1
        out.append(name)
    return out


def _reference(rows: Sequence[dict], key: str | None) -> float | None:
    """The chance / baseline ``key`` of the first row that has it (same split: the same for all)."""
    for r in rows:
        value = r["metrics"].get(key) if key else None
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def compare_markdown(rows: Sequence[dict]) -> str:
    """Rows = models, columns = metrics present in any row; last row = chance / baseline."""
    cols = [(k, c) for k, c in COMPARE_COLUMNS if any(k in r["metrics"] for r in rows)]
    body = [[r["name"], *[report.fmt(r["metrics"].get(k), 1 if "medr" in k else 4) for k, _ in cols]] for r in rows]
    body.append(["chance / baseline", *[report.fmt(_reference(rows, c), 4) if c else "–" for _, c in cols]])
    return report.markdown_table(["model", *[k for k, _ in cols]], body)


def compare_checkpoints(sources: Sequence[str], out: str | Path, labels: Sequence[str] | None = None,
                        ensembles: Sequence[str] = (), split: str = "test", config_path: Path | None = None,
                        batch_size: int | None = None, num_workers: int | None = None, device: str | None = None, *,
                        probe: bool = True, probe_max_train: int | None = None, show_progress: bool = True,
                        plot: bool = True) -> dict[str, Any]:
    """Every task for each of ``sources`` and each ensemble spec on ``split``; returns ``split``,
    ``rows`` (``name``, ``kind``, ``checkpoint``, ``preset``, ``metrics``), ``out``, ``table``
    (Markdown) and ``files``."""
    sources = [str(s) for s in sources]
    names = row_labels(sources, labels)
    specs = [(spec, parse_ensemble(spec, names, sources)) for spec in ensembles]
    keep = bool(specs)
    rows: list[dict] = []
    kept: list[tuple[SplitOutputs, SplitOutputs | None, np.ndarray] | None] = []
    splits_seen = set()
    t0 = time.perf_counter()
    for name, src in zip(names, sources):
        ckpt = resolve_checkpoint(src)
        run = load_run(ckpt, config_path, batch_size, num_workers)
        data = run.datamodule
        splits_seen.add((str(data.manifest_path().resolve()), repr(sorted(vars(data.split).items()))))
        metrics, ev, train, targets = run_tasks(run, split, device, probe, probe_max_train, show_progress, name=name)
        rows.append({"name": name, "kind": "model", "checkpoint": str(ckpt), "preset": run.preset,
                     "metrics": metrics})
        kept.append((ev, train, targets) if keep else None)
        del run
    if len(splits_seen) > 1:
        log.warning("the checkpoints use different manifests or split settings: their %s splits differ", split)
    if len({r["metrics"].get("hashtag_map_popularity") for r in rows}) > 1:
        log.warning("the checkpoints' hashtag vocabularies differ: their hashtag metrics rank different labels")
    for spec, members in specs:
        weights = [w for _, w in members]
        ev = ensemble_outputs([kept[i][0] for i, _ in members], weights)
        trains = [kept[i][1] for i, _ in members]
        train = ensemble_outputs(trains, weights) if all(t is not None for t in trains) else None
        metrics = task_metrics(ev, train, kept[members[0][0]][2], ks=TABLE_KS)
        name = "ensemble(" + ", ".join(f"{names[i]}:{w:g}" for i, w in members) + ")"
        rows.append({"name": name, "kind": "ensemble", "metrics": metrics, "preset": "",
                     "checkpoint": " + ".join(rows[i]["checkpoint"] for i, _ in members)})
    out = Path(out)
    table = compare_markdown(rows)
    keys = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    files = [report.write_json({"split": split, "seconds": time.perf_counter() - t0,
                                "ensembles": [s for s, _ in specs], "rows": rows}, out / "compare.json"),
             report.write_csv([{"name": r["name"], "kind": r["kind"], "checkpoint": r["checkpoint"],
                                "preset": r["preset"], **r["metrics"]} for r in rows], out / "compare.csv",
                              columns=["name", "kind", "checkpoint", "preset", *keys])]
    (out / "compare.md").write_text(f"{split} split\n\n{table}\n", encoding="utf-8")
    files.append(out / "compare.md")
    shown = [(k, c) for k, c in PLOT_METRICS if any(not math.isnan(r["metrics"].get(k, math.nan)) for r in rows)]
    if shown and plot:
        files.append(report.plot_bars([k for k, _ in shown], {r["name"]: [r["metrics"].get(k) for k, _ in shown]
                                                              for r in rows}, out / "compare.png",
                                      reference=[_reference(rows, c) for _, c in shown], title=f"{split} split"))
    return {"split": split, "rows": rows, "out": str(out), "table": table, "files": [str(f) for f in files]}
