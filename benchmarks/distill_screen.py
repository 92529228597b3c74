"""Screen settings of ``configs/distill.yaml`` on the validation split: each variant x seeds, against the config.

    python benchmarks/distill_screen.py                          # every variant below, seeds 0, 1, 2; README rewritten
    python benchmarks/distill_screen.py --variants base vis1     # some of them
    python benchmarks/distill_screen.py --dry-run                # the table printed only

For every variant and seed ``s`` the student ``<runs>/<variant>/seed<s>`` is distilled by ``mmemb fit
--config configs/distill.yaml --seed_everything s --model.teacher_ckpt <teacher> --data.vocab_dir
<teacher>/vocab`` plus the variant's arguments (``base``: none, the config as it is), from the teacher
``runs/readme/quickstart/seed<s>`` of ``benchmarks/readme_tables.py`` (``--teachers``; trained by
``benchmarks/distill_table.py`` or that script when missing: this one does not train teachers), then
evaluated by ``mmemb eval --run`` (the test split). Finished runs are kept (an interrupted one is trained
again).

Choices are read on **validation**: the last epoch's validation row of each run's ``metrics.csv`` (the config
keeps its last epoch), mean ± std over the seeds; each variant's difference to ``base``, marked ``*`` where it
exceeds the seed spread (``|diff| > max(std_base, std_variant)``, the rule of ``mmemb eval ablate``). The test
split's means are printed beside them for the record, not for the choice. The table goes between
``<!-- table:distill_screen -->`` and ``<!-- /table:distill_screen -->`` of the README.

``--cost``: then the seed-0 checkpoints of the teacher, ``base`` and each variant are measured side by side in one
process (``distill_table.measure_cost``: parameters, FLOPs, CPU ms per clip and per text at batch 1 on one
thread), with each one's clip speed-up over the teacher; printed only (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import REPO, ensure_trained_and_evaluated, mean_std, validation_best_last  # noqa: E402

from mmemb.eval.ablate import exceeds_spread  # noqa: E402
from mmemb.eval.report import write_readme_block  # noqa: E402

METRICS = (("t2v R@1", "t2v_r1_category"), ("v2t R@1", "v2t_r1_category"), ("t2v R@10", "t2v_r10_category"),
           ("v2t R@10", "v2t_r10_category"), ("hashtag mAP", "hashtag_map"))
# name -> (what it changes, the fit arguments added to the config's)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("`configs/distill.yaml` as it is", []),
    "label3_T2": ("label distillation weight 3, label temperature 2",
                  ["--model.loss_weights.distill_label", "3", "--model.label_temperature", "2"]),
    "embrel3": ("embedding and relational distillation weights 3",
                ["--model.loss_weights.distill_embed", "3", "--model.loss_weights.distill_relation", "3"]),
    "vis1": ("a 1-block ViT (`vision.depth` 1)", ["--model.overrides", '{"vision": {"depth": 1}}']),
    "ep32": ("32 epochs instead of 16", ["--trainer.max_epochs", "32"]),
}


def last_validation(root: Path) -> dict[str, float]:
    """The last validation row of the newest version's ``metrics.csv`` under ``root`` (metric -> value)."""
    if not any(root.glob("version_*")):
        raise FileNotFoundError(f"{root}: no version_* folder (the run was not trained)")
    last = validation_best_last(root, key="val/hashtag_map")["last"]
    return {key: last[f"val/{key}"] for _, key in METRICS}


def table(val: dict[str, list[dict]], test: dict[str, list[dict]]) -> str:
    """Validation mean ± std per variant, the difference to ``base`` (``*`` beyond the seed spread), then the
    test means."""
    head = "| variant | " + " | ".join(f"val {name}" for name, _ in METRICS) + " | test " + \
        " / ".join(name for name, _ in METRICS) + " |"
    lines = [head, "|---|" + "---:|" * (len(METRICS) + 1)]
    base = {key: mean_std([r[key] for r in val["base"]]) for _, key in METRICS} if val.get("base") else None
    for name, rows in val.items():
        cells = []
        for _, key in METRICS:
            m, s = mean_std([r[key] for r in rows])
            cell = f"{m:.3f} ± {s:.3f}"
            if base is not None and name != "base":
                diff = m - base[key][0]
                cell += f" ({diff:+.3f}{'*' if exceeds_spread(diff, base[key][1], s) else ''})"
            cells.append(cell)
        tests = " / ".join(f"{mean_std([r[key] for r in test[name]])[0]:.3f}" for _, key in METRICS)
        lines.append(f"| {name}: {VARIANTS[name][0]} | " + " | ".join(cells) + f" | {tests} |")
    seeds = sorted({len(rows) for rows in val.values()})
    lines += ["", f"{'/'.join(map(str, seeds))} seeds per variant (mean ± std); validation: the last epoch's row; "
              "(difference to base, * where it exceeds the seed spread: |diff| > max(std_base, std)); test: means "
              "only, for the record (choices are made on validation)."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="which variants (default: all; base is always run, every row is compared with it)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--runs", default="runs/screen", help="folder of the students: <runs>/<variant>/seed<s>")
    p.add_argument("--teachers", default="runs/readme/quickstart", help="folder of the teachers: <teachers>/seed<s>")
    p.add_argument("--config", default="configs/distill.yaml")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    p.add_argument("--cost", action="store_true", help="then measure the seed-0 checkpoints' cost side by side")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    names = ["base", *[v for v in args.variants if v != "base"]]
    for seed in range(args.seeds):
        teacher = REPO / args.teachers / f"seed{seed}"
        if not teacher.is_dir():
            p.error(f"{teacher}: no teacher run (train it with python benchmarks/distill_table.py)")
    t0 = time.perf_counter()
    val: dict[str, list[dict]] = {}
    test: dict[str, list[dict]] = {}
    for name in names:
        for seed in range(args.seeds):
            teacher = REPO / args.teachers / f"seed{seed}"
            root = REPO / args.runs / name / f"seed{seed}"
            fit = ["--config", args.config, "--seed_everything", str(seed), "--data.vocab_dir", str(teacher / "vocab"),
                   "--model.teacher_ckpt", str(teacher), *VARIANTS[name][1]]
            test.setdefault(name, []).append(ensure_trained_and_evaluated(root, fit))
            val.setdefault(name, []).append(last_validation(root))
            print(f"[{name} seed {seed}] done ({time.perf_counter() - t0:.0f} s)", flush=True)
    body = table(val, test)
    print(f"\n{body}")
    if not args.dry_run:
        print(f"wrote the screening table into {write_readme_block(REPO / args.readme, 'distill_screen', body)}")
    if args.cost:
        print_cost(REPO / args.teachers / "seed0", {name: REPO / args.runs / name / "seed0" for name in names})
    return 0


def print_cost(teacher: Path, students: dict[str, Path]) -> None:
    """The cost of the teacher and each student checkpoint, measured side by side (batch 1, one thread)."""
    from distill_table import measure_cost

    from mmemb.eval.loading import resolve_checkpoint

    cost = measure_cost({"teacher": resolve_checkpoint(teacher),
                         **{name: resolve_checkpoint(root) for name, root in students.items()}})
    print("\n| model | params (M) | MFLOPs / clip | CPU ms / clip | clip speed-up | CPU ms / text |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c in cost.items():
        print(f"| {name} | {c['params'] / 1e6:.2f} | {c['flops_clip'] / 1e6:.1f} | {c['ms_clip']:.2f} | "
              f"{cost['teacher']['ms_clip'] / c['ms_clip']:.1f}x | {c['ms_text']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
