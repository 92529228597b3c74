"""Ablations over seeds: train and evaluate a config and each ablation overlay with several seeds, and
tell which differences exceed the seed spread.

    mmemb eval ablate --config configs/kuairec_text.yaml --ablations configs/ablations/no_*.yaml \\
        --seeds 3 --out runs/ablate_kuairec --fit-args --trainer.max_epochs 4

Every (config, seed) is one run in ``OUT/<name>/seed<s>/`` (``name``: ``full`` for the config alone, else
the overlay's file stem; the overlay is given after the config, ``--config C --config A``):

1. ``mmemb fit`` in a subprocess with ``--seed_everything <s>`` and ``--trainer.default_root_dir`` the run
   folder (the fit arguments follow), its output in ``fit.log``;
2. ``mmemb eval tasks --run <folder> --split test`` (the best checkpoint: retrieval, hashtag and
   category-probe metrics; :mod:`mmemb.eval.checkpoint`), output in ``eval.log``, files in ``eval/``;
3. ``result.json``: the run's metrics and timings, written last (atomically): a run is finished when it
   exists. A rerun of the command skips finished runs and restarts unfinished ones from scratch (their
   folder is cleared). ``result.json`` also records what the run was made from (``inputs``: the SHA-256 of
   each config file's content, the fit arguments, the split, the probe); a finished run whose inputs no
   longer match (a config edited since) is an error naming the run folder and what changed, never a stale
   row in the table. The code is not fingerprinted: a preset or a default changed in ``mmemb`` goes unseen;
   ``result.json`` records what it ran (``code``: the version, the git commit of the checkout and whether
   ``mmemb/`` had uncommitted changes) and the table names the commits its runs came from.

An overlay that sets ``model.overrides`` or ``model.loss_weights`` replaces the config's whole dict (a
second ``--config`` does not merge dicts), so :func:`plan_runs` refuses an overlay that would silently drop
entries of the config's dict and names them.

The seed changes the initialisation, the shuffle and the augmentations (``seed_everything``); the data
split (``data.split.seed``) stays, so every run is scored on the same test videos.

The table (``ablation.md``, ``ablation.json``) holds, per config and metric, the mean and the sample
standard deviation (``ddof=1``) over the seeds, and for an ablation its difference to the full model,
which *exceeds the seed spread* when ``|mean_ablation - mean_full| > max(std_full, std_ablation)`` (a
rule of thumb, not a test: with 3 seeds a Welch t-test has little power; with one seed there is no
spread and the verdict is ``n/a``). The label-popularity baseline (``hashtag_map_popularity``, in
:data:`REFERENCE_METRICS`) is a column without a difference: it is the same for every run unless an
ablation changes the task (another label set), which it makes visible.

No Lightning here: the training and evaluation run as subprocesses (``python -m mmemb.cli``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, InputError

__all__ = ["AblationRun", "DEFAULT_METRICS", "FULL", "REFERENCE_METRICS", "StaleRunError", "plan_runs",
           "check_overlay", "run_inputs", "code_identity", "code_counts", "fit_command", "eval_command", "run_one",
           "run_all", "summarize", "markdown_table", "write_tables", "ablate"]

FULL = "full"  # the name of the config without an overlay
RESULT = "result.json"  # a run is finished when this file exists
# the metrics of the table, those with a value in some run (retrieval needs clips, the probes a category)
DEFAULT_METRICS = ("hashtag_map", "hashtag_map_popularity", "hashtag_p1", "hashtag_r5", "probe_multimodal_accuracy",
                   "probe_video_accuracy", "t2v_r1_category", "v2t_r1_category", "t2v_r1_instance")
# baselines scored on each run's own test labels, not the model: a column of them shows whether an ablation
# changed the task (another label set), so their cells get no difference and no verdict
REFERENCE_METRICS = frozenset({"hashtag_map_popularity", "hashtag_p1_popularity"})
MMEMB = (sys.executable, "-m", "mmemb.cli")  # the mmemb command of this interpreter
REPLACED_DICTS = ("overrides", "loss_weights")  # model.<key> dicts that a second config replaces whole


class StaleRunError(InputError):
    """A finished run whose recorded inputs differ from the planned run's."""


@dataclass(frozen=True)
class AblationRun:
    """One training + evaluation: a config set and a seed."""

    name: str  # FULL or the overlay's file stem
    seed: int
    configs: tuple[Path, ...]  # the config, then the overlay (if any)
    folder: Path  # OUT/<name>/seed<seed>

    @property
    def result_file(self) -> Path:
        return self.folder / RESULT

    @property
    def finished(self) -> bool:
        return self.result_file.exists()

    @property
    def label(self) -> str:
        return f"{self.name} seed{self.seed}"


def plan_runs(config: str | Path, ablations: Sequence[str | Path], seeds: int, out: str | Path) -> list[AblationRun]:
    """The runs: the full config and each overlay, for seeds ``0 .. seeds-1`` (config-major order)."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    config, out = Path(config), Path(out)
    sets: list[tuple[str, tuple[Path, ...]]] = [(FULL, (config,))]
    for overlay in map(Path, ablations):
        if overlay.resolve() == config.resolve():
            continue  # a glob that also matches the config itself
        if overlay.stem == FULL or overlay.stem in {name for name, _ in sets}:
            raise ValueError(f"ablation {overlay}: the name {overlay.stem!r} is taken (the full model is {FULL!r}; "
                             "overlay file names must differ)")
        sets.append((overlay.stem, (config, overlay)))
    for _, files in sets:
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"config not found: {f}")
    for _, files in sets[1:]:
        check_overlay(*files)
    return [AblationRun(name, seed, files, out / name / f"seed{seed}") for name, files in sets for seed in range(seeds)]


def _model_section(path: Path) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, dict) else {}


def check_overlay(config: Path, overlay: Path) -> None:
    """Raise if ``overlay`` sets ``model.overrides`` / ``model.loss_weights`` to a dict that lacks some of
    ``config``'s entries: the second config replaces the whole dict, so those entries would be dropped
    silently. The error names the file, the key and the entries to repeat in the overlay."""
    base, over = _model_section(Path(config)), _model_section(Path(overlay))
    for key in REPLACED_DICTS:
        b, o = base.get(key), over.get(key)
        if not isinstance(b, dict) or key not in over:
            continue
        dropped = sorted(set(b) - set(o)) if isinstance(o, dict) else sorted(b)
        if dropped:
            raise ConfigError(f"{overlay}: model.{key} replaces the whole dict of {config} (a second config does "
                             f"not merge dicts), which would drop {', '.join(dropped)}; repeat them in the overlay")


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_inputs(run: AblationRun, fit_args: Sequence[str] = (), split: str = "test", probe: bool = True) -> dict:
    """What ``run`` is made from, as recorded in its ``result.json``: the SHA-256 of each config file's
    content, in order (the config, then the overlay; the paths are kept for messages only, so the same
    files under another path or from another folder match), the fit arguments, the evaluation split and
    whether the probe runs."""
    return {"configs": [{"path": str(c), "sha256": _sha256(c)} for c in run.configs], "fit_args": list(fit_args),
            "split": split, "probe": bool(probe)}


def _changes(recorded: dict, planned: dict) -> list[str]:
    """The differences between two :func:`run_inputs`, in words."""
    rec_cfg, new_cfg = recorded.get("configs", []), planned["configs"]
    if [c.get("sha256") for c in rec_cfg] == [c["sha256"] for c in new_cfg]:
        out = []
    elif len(rec_cfg) != len(new_cfg):
        out = [f"{len(rec_cfg)} config files then, {len(new_cfg)} now"]
    else:
        out = [f"config {new['path']} changed" for old, new in zip(rec_cfg, new_cfg) if old.get("sha256") != new["sha256"]]
    out += [f"{k} was {recorded.get(k)!r}, now {planned[k]!r}" for k in ("fit_args", "split", "probe")
            if recorded.get(k) != planned[k]]
    return out


def code_identity(root: Path | None = None) -> dict:
    """What code a run used: ``{"mmemb_version", "git_commit", "git_dirty"}`` (the commit of the checkout that
    holds the imported ``mmemb`` and whether its ``mmemb/`` folder differs from it; None outside git)."""
    from .. import __version__

    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", "mmemb") if commit else None
    return {"mmemb_version": __version__, "git_commit": commit, "git_dirty": None if status is None else bool(status)}


def fit_command(run: AblationRun, fit_args: Sequence[str] = (), mmemb: Sequence[str] = MMEMB) -> list[str]:
    """``mmemb fit`` of ``run``: its configs, seed and folder (then ``fit_args``, which win)."""
    cmd = [*mmemb, "fit"]
    for cfg in run.configs:
        cmd += ["--config", str(cfg)]
    return cmd + [f"--seed_everything={run.seed}", f"--trainer.default_root_dir={run.folder}",
                  "--trainer.enable_progress_bar=false", *fit_args]


def eval_command(run: AblationRun, split: str = "test", probe: bool = True,
                 mmemb: Sequence[str] = MMEMB) -> list[str]:
    """``mmemb eval tasks`` of ``run``'s best checkpoint on ``split`` (files in ``<folder>/eval``)."""
    cmd = [*mmemb, "eval", "tasks", "--run", str(run.folder), "--split", split, "--out", str(run.folder / "eval"),
           "--no-progress", "--no-plot"]
    return cmd + ([] if probe else ["--no-probe"])


def _run_logged(cmd: list[str], log: Path, what: str) -> float:
    """Run ``cmd`` with its output in ``log``; seconds taken. A failure raises naming the log."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{what} failed (exit status {code}), see {log}: {tail[0][:300]}")
    return time.perf_counter() - t0


def run_one(run: AblationRun, fit_args: Sequence[str] = (), split: str = "test", probe: bool = True,
            mmemb: Sequence[str] = MMEMB) -> dict:
    """Train and evaluate ``run`` from scratch (its folder cleared first); writes and returns its result."""
    if run.folder.exists():
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True)
    fit_s = _run_logged(fit_command(run, fit_args, mmemb), run.folder / "fit.log", f"{run.label}: mmemb fit")
    eval_s = _run_logged(eval_command(run, split, probe, mmemb), run.folder / "eval.log",
                         f"{run.label}: mmemb eval tasks")
    evaluated = json.loads((run.folder / "eval" / "metrics.json").read_text(encoding="utf-8"))
    result = {"name": run.name, "seed": run.seed, "configs": [str(c) for c in run.configs], "split": split,
              "checkpoint": evaluated.get("checkpoint"), "fit_seconds": round(fit_s, 1),
              "eval_seconds": round(eval_s, 1), "metrics": evaluated["metrics"],
              "inputs": run_inputs(run, fit_args, split, probe), "code": code_identity()}
    tmp = run.result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, run.result_file)  # the run counts as finished only once the whole file is there
    return result


def run_all(runs: Sequence[AblationRun], fit_args: Sequence[str] = (), split: str = "test", probe: bool = True,
            mmemb: Sequence[str] = MMEMB, say: Callable[[str], None] = print, train: bool = True) -> list[dict]:
    """Every run in order, finished ones read back instead of rerun; one progress line per run, with the
    time left at the pace of the runs trained so far.

    Every finished run is checked first (:func:`run_inputs`): one made from other inputs raises
    :class:`StaleRunError` before anything is trained. A ``result.json`` written before inputs were
    recorded is read back as is, with a note. ``train=False`` trains nothing: the unfinished runs are
    reported as not run and left out."""
    results, taken = [], []  # taken: seconds of each run trained here
    width = len(str(len(runs)))
    finished = {}
    for run in runs:
        if run.finished:
            finished[run] = json.loads(run.result_file.read_text(encoding="utf-8"))
            recorded = finished[run].get("inputs")
            changes = _changes(recorded, run_inputs(run, fit_args, split, probe)) if recorded is not None else []
            if changes:
                raise StaleRunError(f"{run.result_file}: finished from other inputs ({'; '.join(changes)}); remove "
                                    f"{run.folder} to rerun it, or write to another --out")
    for i, run in enumerate(runs, 1):
        head = f"[{i:>{width}}/{len(runs)}] {run.label}"
        if run in finished:
            results.append(finished[run])
            note = "" if "inputs" in finished[run] else " (its inputs were not recorded: not checked)"
            say(f"{head} ... finished before, not rerun{note}")
            continue
        if not train:
            say(f"{head} ... not run (--finished-only)")
            continue
        t0 = time.perf_counter()
        results.append(run_one(run, fit_args, split, probe, mmemb))
        taken.append(time.perf_counter() - t0)
        left = sum(1 for r in runs[i:] if r not in finished)
        eta = f"; {left} to go, about {_duration(left * sum(taken) / len(taken))} at this pace" if left else ""
        say(f"{head} ... done in {taken[-1]:.0f} s{eta}")
    return results


def _duration(seconds: float) -> str:
    """``seconds`` in words: ``"40 s"``, ``"12 min"``, ``"3.2 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------- the table


@dataclass
class Cell:
    """One config x metric: the values of its seeds, their mean and sample std, the difference to the full
    model and whether it exceeds the seed spread."""

    values: list[float]
    mean: float
    std: float  # sample std (ddof=1); nan with one value
    diff: float | None = None  # mean - the full model's mean (None for the full model)
    exceeds_spread: bool | None = None  # |diff| > max(std_full, std); None: full model or no spread (1 seed)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values``; NaN where undefined (no value, one value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std


def exceeds_spread(diff: float, std_a: float, std_b: float) -> bool | None:
    """The seed-spread rule of every comparison table: ``|diff| > max(std_a, std_b)``; None (no verdict) when
    either side has no spread (one seed: its own spread is unknown, so the other side's alone is not enough)."""
    if math.isnan(std_a) or math.isnan(std_b):
        return None
    return abs(diff) > max(std_a, std_b)


def summarize(results: Sequence[dict], metrics: Sequence[str] | None = None) -> dict:
    """``{"configs": [...], "metrics": [...], "cells": {config: {metric: Cell}}, "seeds": {config: [...]}}``
    from the runs' results (config order as given, the full model first). A metric enters the table when
    some run has a value for it; a run without one (null) is left out of that cell."""
    names: list[str] = []
    for r in results:
        if r["name"] not in names:
            names.append(r["name"])
    if FULL in names:
        names.remove(FULL)
        names.insert(0, FULL)
    wanted = list(metrics) if metrics else list(DEFAULT_METRICS)
    present = [m for m in wanted if any(r["metrics"].get(m) is not None for r in results)]
    cells: dict[str, dict[str, Cell]] = {}
    for name in names:
        runs = [r for r in results if r["name"] == name]
        cells[name] = {}
        for m in present:
            values = [float(r["metrics"][m]) for r in runs if r["metrics"].get(m) is not None]
            cells[name][m] = Cell(values, *mean_std(values))
    if FULL in cells:
        for name in names[1:]:
            for m in present:
                if m in REFERENCE_METRICS:
                    continue  # a baseline of the run's labels: equal unless the task changed
                full, cell = cells[FULL][m], cells[name][m]
                if not cell.values or not full.values:
                    continue
                cell.diff = cell.mean - full.mean
                cell.exceeds_spread = exceeds_spread(cell.diff, full.std, cell.std)
    seeds = {name: sorted({int(r["seed"]) for r in results if r["name"] == name}) for name in names}
    return {"configs": names, "metrics": present, "cells": cells, "seeds": seeds, "code": code_counts(results)}


def code_counts(results: Sequence[dict]) -> dict[str, int]:
    """``{"commit 1a2b3c4d": runs, ...}`` in first-seen order (``+ changes`` where ``mmemb/`` was modified;
    ``not recorded`` for results written before :func:`code_identity`)."""
    counts: dict[str, int] = {}
    for r in results:
        code = r.get("code") or {}
        commit = code.get("git_commit")
        if not code:
            name = "not recorded"
        else:
            name = f"commit {commit[:8]}" if commit else f"mmemb {code.get('mmemb_version')}"
        if code.get("git_dirty"):
            name += " + changes"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _fmt(x: float, digits: int = 3) -> str:
    return "nan" if math.isnan(x) else f"{x:.{digits}f}"


def markdown_table(summary: dict) -> str:
    """One row per config, one column per metric: ``mean ± std`` and, for an ablation, ``(diff)`` with
    ``*`` when the difference exceeds the seed spread."""
    metrics = summary["metrics"]
    lines = ["| config | seeds | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for name in summary["configs"]:
        row = []
        for m in metrics:
            cell = summary["cells"][name][m]
            if not cell.values:
                row.append("")
                continue
            # a baseline's "spread" is rounding noise unless the label set moved with the seed
            spread = not math.isnan(cell.std) and not (m in REFERENCE_METRICS and _fmt(cell.std) == "0.000")
            text = f"{_fmt(cell.mean)} ± {_fmt(cell.std)}" if spread else _fmt(cell.mean)
            if cell.diff is not None:
                text += f" ({cell.diff:+.3f}{'*' if cell.exceeds_spread else ''})"
            row.append(text)
        lines.append(f"| {name} | {len(summary['seeds'][name])} | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("mean ± sample std over the seeds (no std with one seed); (difference to `full`), `*`: "
                 "|difference| > max(std of full, std of the ablation), i.e. larger than the seed spread (no "
                 "verdict where a side has one seed)")
    references = [m for m in metrics if m in REFERENCE_METRICS]
    if references:
        lines.append("")
        lines.append(f"{', '.join(f'`{m}`' for m in references)}: the label-popularity baseline on the run's own test "
                     "labels, not the model (no difference shown); it differs from `full` only where the ablation "
                     "changes the task (another label set)")
    if summary.get("code"):
        lines.append("")
        parts = [f"{n} not recorded (result.json files older than the record)" if name == "not recorded"
                 else f"{n} from {name}" for name, n in summary["code"].items()]
        lines.append("Code of the runs: " + "; ".join(parts) + ".")
    if summary.get("not_run"):
        lines.append("")
        lines.append(f"Not run yet ({len(summary['not_run'])}): " + ", ".join(summary["not_run"]) + ".")
    return "\n".join(lines)


def _json_float(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def write_tables(summary: dict, results: Sequence[dict], out: str | Path) -> list[Path]:
    """``ablation.md`` (the table) and ``ablation.json`` (the table's numbers and every run's metrics)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = {name: {m: {"values": c.values, "mean": _json_float(c.mean), "std": _json_float(c.std),
                        "diff": _json_float(c.diff), "exceeds_spread": c.exceeds_spread}
                    for m, c in summary["cells"][name].items()} for name in summary["configs"]}
    doc = {"rule": "exceeds_spread: |mean - mean_full| > max(std_full, std) (sample std over seeds); null where a "
                   "side has one seed",
           "not_run": summary.get("not_run", []),
           "configs": summary["configs"], "metrics": summary["metrics"], "seeds": summary["seeds"],
           "code": summary.get("code", {}), "table": table,
           "runs": list(results)}
    md, js = out / "ablation.md", out / "ablation.json"
    md.write_text(markdown_table(summary) + "\n", encoding="utf-8")
    js.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    return [md, js]


def ablate(config: str | Path, ablations: Sequence[str | Path], seeds: int, out: str | Path,
           fit_args: Sequence[str] = (), split: str = "test", probe: bool = True, metrics: Sequence[str] | None = None,
           mmemb: Sequence[str] = MMEMB, say: Callable[[str], None] = print, train: bool = True) -> dict:
    """Plan, run (resumably), summarise and write the tables; returns ``summary``, ``results``, ``files``.
    ``train=False``: the tables of the runs finished so far, nothing trained (``summary["not_run"]`` lists
    the others, and the table says so)."""
    runs = plan_runs(config, ablations, seeds, out)
    say(f"{len(runs)} runs ({len(runs) // seeds} configs x {seeds} seeds) in {out}")
    results = run_all(runs, fit_args, split, probe, mmemb, say, train)
    summary = summarize(results, metrics)
    done = {(r["name"], int(r["seed"])) for r in results}
    summary["not_run"] = [run.label for run in runs if (run.name, run.seed) not in done]
    files = write_tables(summary, results, out)
    return {"summary": summary, "results": results, "files": [str(f) for f in files]}
