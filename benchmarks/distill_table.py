"""The README's distillation table: the student against its teacher and against itself undistilled.

    python benchmarks/distill_table.py                  # seeds 0, 1, 2, README rewritten (2 idle cores: ~35 min
                                                        # with the teachers of readme_tables.py, ~1 h without)
    python benchmarks/distill_table.py --dry-run        # the same, the table printed only
    python benchmarks/distill_table.py --smoke          # tiny models, a few steps, a small corpus: checks the script

For every seed ``s`` (``--seeds``, default 3), each step skipped when its output exists (an interrupted
run resumes):

1. the teacher ``runs/readme/quickstart/seed<s>``: trained by ``benchmarks/readme_tables.py``, or here by
   the same command when missing (``mmemb fit --config configs/quickstart.yaml --seed_everything s
   --trainer.default_root_dir runs/readme/quickstart/seed<s>``);
2. the distilled student ``runs/readme/distill/seed<s>``: ``mmemb fit --config configs/distill.yaml
   --seed_everything s --model.teacher_ckpt <teacher run> --data.vocab_dir <teacher run>/vocab``;
3. the same student without distillation ``runs/readme/student_plain/seed<s>``: the same command with
   the three distillation weights at 0 and ``--model.teacher_init false`` (no teacher: neither its outputs
   nor its weights);
4. ``mmemb eval --run`` of each (the test split; ``metrics.json`` beside the best checkpoint).

Then, in one process and side by side (teacher and student alternating, so that a change of load
hits both): parameters, FLOPs (``torch.utils.flop_counter.FlopCounterMode``) and CPU latency at batch
1 on one thread (median of ``--latency-rounds`` rounds of the median of ``--latency-n`` calls) of a
clip (``encode_video``: frames and log-mel in, decode excluded) and of a text (``encode_text``: token
and n-gram ids in, tokenisation excluded), on the first test video. The table (mean ± std over the
seeds) and the verdict on each target (``met`` / ``missed``, with the numbers) go between
``<!-- table:distill -->`` and ``<!-- /table:distill -->`` of the README.

Targets: the distilled student keeps >= 95% of the teacher's R@10 (both directions) and hashtag mAP,
runs a clip >= 5x faster on the CPU, and beats the undistilled student (higher mean on every quality
column).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import REPO, _mmemb, _run, ensure_trained_and_evaluated, fmt, mean_std  # noqa: E402

from mmemb.eval.report import write_readme_block  # noqa: E402

QUALITY = (("t2v R@1", "t2v_r1_category"), ("v2t R@1", "v2t_r1_category"), ("t2v R@10", "t2v_r10_category"),
           ("v2t R@10", "v2t_r10_category"), ("hashtag mAP", "hashtag_map"))
KEPT = ("t2v_r10_category", "v2t_r10_category", "hashtag_map")  # the student keeps >= 95% of the teacher's
MODELS = ("teacher", "distilled student", "student without distillation")
NO_DISTILL = ["--model.loss_weights.distill_embed", "0", "--model.loss_weights.distill_relation", "0",
              "--model.loss_weights.distill_label", "0", "--model.teacher_init", "false",
              "--model.teacher_text", "learn"]
# --smoke: teacher_tiny and student_tiny on a small corpus at 32 px, a few steps each
SMOKE_TEACHER = ["--trainer.max_steps", "4", "--trainer.limit_val_batches", "1", "--data.batch_size", "8",
                 "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]
SMOKE_STUDENT = SMOKE_TEACHER + ["--model.preset", "student_tiny", "--data.decode.frame_size", "32",
                                 "--data.decode.audio_seconds", "1.0", "--data.text.max_length", "48",
                                 "--data.text.ngram_buckets", "4096", "--data.text.ngram_max_length", "128",
                                 "--trainer.num_sanity_val_steps", "0"]


def ensure(root: Path, fit: list[str], eval_args: Sequence[str]) -> dict[str, float]:
    """Train ``root`` with ``mmemb fit <fit>`` unless that run finished, evaluate it unless it has a
    ``metrics.json``; its test metrics (:func:`readme_tables.ensure_trained_and_evaluated`)."""
    return ensure_trained_and_evaluated(root, fit, eval_args)


# ----------------------------------------------------------------------------- cost


def _first_test_batch(run) -> dict[str, Any]:
    """The first test video of ``run``'s data as a batch of one (evaluation-mode decode)."""
    from torch.utils.data import DataLoader

    from mmemb.data.dataset import VideoDataset
    from mmemb.eval.loading import split_records

    dm = run.datamodule
    records = split_records(dm, "test")[:1]
    dataset = VideoDataset(records, dm.vocabs, dm.decode, dm.text, train=False, half_life_days=dm.labels.half_life_days,
                           now=dm.now)
    return next(iter(DataLoader(dataset, batch_size=1, collate_fn=dm.collate_fn)))


def _flops(fn, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # forward FLOPs (its module hooks need autograd on)
        fn(batch)
    return int(counter.get_total_flops())


def _median_ms(fn, batch, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(batch)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def measure_cost(ckpts: dict[str, Path], n: int = 200, rounds: int = 5, warmup: int = 20) -> dict[str, dict]:
    """Parameters, FLOPs and CPU latency (batch 1, one thread) per clip and per text of each checkpoint,
    measured alternately on the first test video of the first checkpoint's run."""
    import torch

    from mmemb.eval.loading import load_run

    torch.set_num_threads(1)
    runs = {name: load_run(path, num_workers=0) for name, path in ckpts.items()}
    batch = _first_test_batch(next(iter(runs.values())))
    models = {name: run.module.model.eval() for name, run in runs.items()}
    cost: dict[str, dict] = {}
    for name, model in models.items():
        total = sum(p.numel() for p in model.parameters())
        bag = sum(p.numel() for p in model.ngram_bag.parameters()) if model.ngram_bag is not None else 0
        cost[name] = {"params": total, "params_ngram_table": bag,
                      "flops_clip": _flops(model.encode_video, batch), "flops_text": _flops(model.encode_text, batch),
                      "ms_clip": [], "ms_text": []}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model.encode_video(batch), model.encode_text(batch)
        for _ in range(rounds):  # alternate: a change of load hits every model
            for name, model in models.items():
                cost[name]["ms_clip"].append(_median_ms(model.encode_video, batch, n))
                cost[name]["ms_text"].append(_median_ms(model.encode_text, batch, n))
    for c in cost.values():
        c["ms_clip"], c["ms_text"] = statistics.median(c["ms_clip"]), statistics.median(c["ms_text"])
    return cost


# ----------------------------------------------------------------------------- table


def _cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), else the platform's machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def targets(test: dict[str, list[dict]], cost: dict[str, dict]) -> list[str]:
    """One line per target: met / missed, with the numbers."""
    mean = {m: {k: mean_std([t.get(k) for t in test[m]])[0] for _, k in QUALITY} for m in MODELS}
    teacher, student, plain = mean["teacher"], mean["distilled student"], mean["student without distillation"]
    lines = []
    for key in KEPT:
        share = student[key] / teacher[key] if teacher[key] else float("nan")
        lines.append(f"- student keeps >= 95% of the teacher's {key}: {student[key]:.3f} / {teacher[key]:.3f} = "
                     f"{share:.1%}: **{'met' if share >= 0.95 else 'missed'}**")
    speed = cost["teacher"]["ms_clip"] / cost["distilled student"]["ms_clip"]
    verdict = "met" if speed >= 5 else "missed"
    lines.append(f"- >= 5x lower CPU latency per clip: {cost['teacher']['ms_clip']:.2f} ms / "
                 f"{cost['distilled student']['ms_clip']:.2f} ms = {speed:.1f}x: **{verdict}**")
    better = [name for name, key in QUALITY if student[key] > plain[key]]
    lines.append(f"- beats the undistilled student (higher mean on every quality column): better on "
                 f"{len(better)} of {len(QUALITY)} ({', '.join(better) or 'none'}): "
                 f"**{'met' if len(better) == len(QUALITY) else 'missed'}**")
    return lines


def table(test: dict[str, list[dict]], cost: dict[str, dict], seeds: int, machine: str) -> str:
    head = [name for name, _ in QUALITY] + ["params (M)", "MFLOPs / clip", "MFLOPs / text", "CPU ms / clip",
                                           "CPU ms / text"]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for m in MODELS:
        c = cost["teacher" if m == "teacher" else "distilled student"]  # the same architecture undistilled
        cells = [fmt([t.get(k) for t in test[m]]) for _, k in QUALITY]
        cells += [f"{c['params'] / 1e6:.2f} ({c['params_ngram_table'] / 1e6:.2f} n-gram table)",
                  f"{c['flops_clip'] / 1e6:.1f}", f"{c['flops_text'] / 1e6:.2f}", f"{c['ms_clip']:.2f}",
                  f"{c['ms_text']:.2f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    note = (f"\n\n{seeds} seed{'s' if seeds > 1 else ''} (mean ± std), demo test split, category level; cost of the "
            f"seed-0 checkpoints at batch 1 on one thread ({machine}).\n\n")
    return "\n".join(lines) + note + "\n".join(targets(test, cost))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--runs", default="runs/readme", help="folder of the runs (default runs/readme)")
    p.add_argument("--teacher-config", default="configs/quickstart.yaml")
    p.add_argument("--student-config", default="configs/distill.yaml")
    p.add_argument("--fit-args", default="", help="extra options for every `mmemb fit`, one string")
    p.add_argument("--latency-n", type=int, default=200, help="calls per latency round")
    p.add_argument("--latency-rounds", type=int, default=5, help="alternating rounds (the median is reported)")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    p.add_argument("--smoke", action="store_true",
                   help="check the script: teacher_tiny / student_tiny, 4 steps each, a small corpus built under "
                        "--runs (default runs/smoke_distill), README untouched")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    fit_args = args.fit_args.split()
    teacher_extra, student_extra, eval_args = [], [], []
    if args.smoke:
        if args.runs == "runs/readme":
            args.runs = "runs/smoke_distill"
        args.teacher_config = "configs/teacher_tiny.yaml"
        args.dry_run = True
        args.latency_n, args.latency_rounds = min(args.latency_n, 20), min(args.latency_rounds, 2)
        manifest = REPO / args.runs / "corpus" / "manifest.jsonl"
        if not manifest.exists():
            _run(_mmemb("data", "build-demo", "--out", str(manifest.parent), "--categories", "4",
                        "--videos-per-category", "20", "--frame-size", "32", "--seconds", "1", "--quiet"))
        teacher_extra = ["--data.manifest", str(manifest), *SMOKE_TEACHER]
        student_extra = ["--data.manifest", str(manifest), *SMOKE_STUDENT]
        eval_args = ["--no-probe", "--num-workers", "0"]
    runs_dir = REPO / args.runs
    test: dict[str, list[dict]] = {m: [] for m in MODELS}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        seed_args = ["--seed_everything", str(seed)]
        teacher = runs_dir / "quickstart" / f"seed{seed}"
        test["teacher"].append(ensure(teacher, ["--config", args.teacher_config, *seed_args, *fit_args,
                                                *teacher_extra], eval_args))
        student = ["--config", args.student_config, *seed_args, "--data.vocab_dir", str(teacher / "vocab"), *fit_args,
                   *student_extra]
        test["distilled student"].append(ensure(runs_dir / "distill" / f"seed{seed}",
                                                [*student, "--model.teacher_ckpt", str(teacher)], eval_args))
        test["student without distillation"].append(ensure(runs_dir / "student_plain" / f"seed{seed}",
                                                           [*student, *NO_DISTILL], eval_args))
    from mmemb.eval.loading import resolve_checkpoint

    cost = measure_cost({"teacher": resolve_checkpoint(runs_dir / "quickstart" / "seed0"),
                         "distilled student": resolve_checkpoint(runs_dir / "distill" / "seed0")},
                        n=args.latency_n, rounds=args.latency_rounds)
    machine = f"{_cpu_name()}, {os.cpu_count()} cores, {datetime.date.today().isoformat()}"
    body = table(test, cost, args.seeds, machine)
    print(f"\n{body}\n\n(runs and measurement: {time.perf_counter() - t0:.0f} s)")
    if not args.dry_run:
        print(f"wrote the distill table into {write_readme_block(REPO / args.readme, 'distill', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
