"""Regenerate the README's result tables from runs anyone can redo (CPU, a few minutes per run).

    python benchmarks/readme_tables.py                    # trains what is missing, evaluates, rewrites README.md
    python benchmarks/readme_tables.py --seeds 1 --dry-run  # one seed each, print the tables only

For every seed ``s`` (``--seeds``, default 3) it runs, each step skipped when its output exists (so an
interrupted run resumes):

1. ``mmemb fit --config configs/quickstart.yaml --seed_everything s --trainer.default_root_dir
   runs/readme/quickstart/seed<s>`` and the same for ``configs/first_model.yaml`` (the baseline);
2. ``mmemb eval --run <that folder>`` (every task on the test split, ``metrics.json`` beside the
   best checkpoint);
3. once, for seed 0: ``mmemb eval real-data --run runs/readme/quickstart/seed0``.

Then it writes the tables between the marker lines ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``
of the README: ``quickstart`` (every metric of the quickstart model, mean ± std over the seeds, with
chance), ``first_model`` (the quickstart model against the first model: validation at the best
checkpoint and at the last epoch, and test, mean ± std, and whether the gap exceeds the seeds' spread)
and ``real_data`` (the real-data benchmarks of seed 0, as ``results.md`` holds them). ``--fit-args``
passes extra options to every ``mmemb fit`` (e.g. a smaller corpus for a smoke run).

Which numbers reproduce exactly: a run is bit-identical when repeated on the same machine with the same
thread count (``tests/test_train.py`` checks two tiny runs give identical weights); on another CPU or
thread count the float reductions round differently and the numbers move within the seeds' spread that
these tables report.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from mmemb.eval import ablate
from mmemb.eval.report import replace_block, write_readme_block

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_ROWS = ("t2v_r1_category", "t2v_r5_category", "t2v_r10_category", "v2t_r1_category", "v2t_r5_category",
                   "v2t_r10_category", "t2v_r1_instance", "t2v_r10_instance", "t2v_medr_category",
                   "v2t_medr_category", "hashtag_p1", "hashtag_r5", "hashtag_map", "probe_video_accuracy",
                   "probe_multimodal_accuracy")
CHANCE = {"hashtag_p1": "hashtag_p1_popularity", "hashtag_r5": "hashtag_r5_popularity",
          "hashtag_map": "hashtag_map_popularity", "probe_video_accuracy": "probe_video_chance_majority",
          "probe_multimodal_accuracy": "probe_multimodal_chance_majority"}
COMPARE = (("t2v R@1", "t2v_r1_category"), ("v2t R@1", "v2t_r1_category"), ("t2v R@10", "t2v_r10_category"),
           ("hashtag mAP", "hashtag_map"))


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def _mmemb(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmemb.cli", *args]


def _best_metrics(root: Path) -> Path | None:
    found = sorted(root.glob("version_*/checkpoints/metrics.json"))
    return found[-1] if found else None


def ensure_trained_and_evaluated(root: Path, fit: Sequence[str], eval_args: Sequence[str] = ()) -> dict:
    """Train ``root`` with ``mmemb fit <fit> --trainer.default_root_dir root`` unless the run finished
    (``fit.done`` or a metrics.json), evaluate it unless it has a metrics.json; its test metrics. A run
    folder with neither (training was cut, perhaps after a checkpoint) is removed and trained again."""
    done = root / "fit.done"  # written after `mmemb fit` returned 0: a run with checkpoints but no marker was cut
    if not done.exists() and _best_metrics(root) is None:
        if root.exists():
            print(f"{root}: an interrupted run (no fit.done); training it again from the start", flush=True)
            shutil.rmtree(root)
        _run(_mmemb("fit", *fit, "--trainer.default_root_dir", str(root)))
        done.write_text("ok\n")
    if _best_metrics(root) is None:
        _run(_mmemb("eval", "--run", str(root), "--no-progress", *eval_args))
    return json.loads(_best_metrics(root).read_text())["metrics"]


def ensure_run(config: str, root: Path, seed: int, fit_args: Sequence[str]) -> dict:
    """One seeded run of ``config`` (see :func:`ensure_trained_and_evaluated`); its test metrics."""
    return ensure_trained_and_evaluated(root, ["--config", config, "--seed_everything", str(seed), *fit_args])


def validation_best_last(root: Path, key: str = "val/t2v_r1_category") -> dict[str, dict[str, float]]:
    """``{"best": row, "last": row}`` of the validation rows of the newest version's metrics.csv
    (``best``: the epoch with the highest ``key``, as the checkpoint monitor picks it)."""
    version = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    with open(version / "metrics.csv", newline="") as fh:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)]
    rows = [r for r in rows if key in r]
    if not rows:
        raise ValueError(f"{version / 'metrics.csv'} has no {key} rows")
    return {"best": max(rows, key=lambda r: r[key]), "last": rows[-1]}


def publish_table(table: str, readme: str, block: str, dry_run: bool) -> None:
    """Print ``table`` and, unless ``dry_run``, write it into the block ``block`` of ``readme`` (relative to the
    repository)."""
    print(table)
    if not dry_run:
        print(f"wrote the {block} table into {write_readme_block(REPO / readme, block, table)}")


def kuairec_split_note(task, val_task, detail: str, seconds: float) -> str:
    """The line under a KuaiRec linear table: the split's sizes (``task``: train and test; ``val_task``: the
    validation videos on its test side), the labels, ``detail`` and the minutes taken."""
    return (f"{len(task.train_ids)} train / {len(val_task.test_ids)} validation / {len(task.test_ids)} test videos, "
            f"{len(task.labels)} hashtags{detail}; {seconds / 60:.0f} min on 2 cores.")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std of the values that exist (None and NaN left out); std 0.0 for one value."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    mean, std = ablate.mean_std(vals)
    return mean, (0.0 if len(vals) == 1 else std)


def fmt(values: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"


def quickstart_table(test: list[dict]) -> str:
    lines = [f"| metric | value ({len(test)} seed{'s' if len(test) > 1 else ''}) | chance |", "|---|---:|---:|"]
    for key in QUICKSTART_ROWS:
        chance = CHANCE.get(key, f"{key}_chance")
        digits = 1 if "medr" in key else 3
        lines.append(f"| {key} | {fmt([m.get(key) for m in test], digits)} | "
                     f"{fmt([m.get(chance) for m in test], digits) if chance in test[0] else '–'} |")
    first = test[0]
    lines.append(f"| queries (text) / gallery (video) | {int(first['n_text'])} / {int(first['n_video'])} | |")
    return "\n".join(lines)


def gap_verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """Whether mean(a) - mean(b) exceeds the larger of the two standard deviations (one seed: unknown)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if math.isnan(ma) or math.isnan(mb):
        return "–"
    if len(a) < 2 or len(b) < 2:
        return "one seed: unknown"
    gap = ma - mb
    return f"{gap:+.3f}, {'exceeds' if ablate.exceeds_spread(gap, sa, sb) else 'within'} the spread"


def compare_table(runs: dict[str, list[tuple[dict, dict]]]) -> str:
    """``runs[name] = [(validation best/last, test metrics) per seed]``."""
    header = "| model | " + " | ".join(f"val {n} (best / last) | test {n}" for n, _ in COMPARE) + " |"
    lines = [header, "|---|" + "---:|" * (2 * len(COMPARE))]
    for name, seeds in runs.items():
        cells = []
        for _, key in COMPARE:
            best = [v["best"].get(f"val/{key}") for v, _ in seeds]
            last = [v["last"].get(f"val/{key}") for v, _ in seeds]
            cells += [f"{fmt(best)} / {fmt(last)}", fmt([t.get(key) for _, t in seeds])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    names = list(runs)
    if len(names) == 2:
        a, b = runs[names[0]], runs[names[1]]
        verdicts = [gap_verdict([t.get(k) for _, t in a], [t.get(k) for _, t in b]) for _, k in COMPARE]
        lines.append(f"| test gap ({names[0]} − {names[1]}) | " + " | ".join(f" | {v}" for v in verdicts) + " |")
    return "\n".join(lines)


def real_data_block(results_md: str, seconds_note: str = "") -> str:
    """The tables of ``mmemb eval real-data``'s ``results.md`` for the README: its title and machine line
    dropped (the README says where they come from), each task's heading as a bold line."""
    lines = []
    for line in results_md.strip().splitlines():
        if line.startswith("## ") or "; checkpoint " in line:
            continue
        lines.append(f"**{line[4:].strip()}**" if line.startswith("### ") else line)
    return "\n".join(lines).strip() + seconds_note


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every run (default 3)")
    p.add_argument("--runs", default="runs/readme", help="folder of the runs (default runs/readme)")
    p.add_argument("--quickstart-config", default="configs/quickstart.yaml")
    p.add_argument("--baseline-config", default="configs/first_model.yaml")
    p.add_argument("--fit-args", default="", help="extra options for every `mmemb fit`, one string")
    p.add_argument("--no-real-data", action="store_true", help="skip the real-data benchmarks")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--dry-run", action="store_true", help="print the tables, do not write the README")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    runs_dir = REPO / args.runs
    fit_args = args.fit_args.split()
    runs: dict[str, list[tuple[dict, dict]]] = {"quickstart model": [], "first model": []}
    for seed in range(args.seeds):
        for name, config, folder in (("quickstart model", args.quickstart_config, "quickstart"),
                                     ("first model", args.baseline_config, "first_model")):
            root = runs_dir / folder / f"seed{seed}"
            test = ensure_run(config, root, seed, fit_args)
            runs[name].append((validation_best_last(root), test))
    tables = {"quickstart": quickstart_table([t for _, t in runs["quickstart model"]]),
              "first_model": compare_table(runs)}
    if not args.no_real_data:
        out = runs_dir / "real_data"
        if not (out / "results.md").exists():
            _run(_mmemb("eval", "real-data", "--run", str(runs_dir / "quickstart" / "seed0"), "--out", str(out),
                        "--no-progress"))
        tables["real_data"] = real_data_block((out / "results.md").read_text(encoding="utf-8"))
    for name, body in tables.items():
        print(f"\n## {name}\n\n{body}")
    if not args.dry_run:
        readme = REPO / args.readme
        text = readme.read_text(encoding="utf-8")
        for name, body in tables.items():
            text = replace_block(text, name, body)
        readme.write_text(text, encoding="utf-8")
        print(f"wrote {len(tables)} tables into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
