"""Pre-training on the whole KuaiRec corpus, then fine-tuning, against the config trained from scratch.

    python benchmarks/kuairec_pretrain.py              # 3 seeds, README block kuairec_pretrain rewritten
    python benchmarks/kuairec_pretrain.py --dry-run    # the same, the table printed only

For every seed ``s`` (``--seeds``, default 3), each step skipped when its output exists (an interrupted
seed resumes at the step it was in; a step cut during training is trained again from the start):

1. stage 1, ``mmemb fit --config configs/kuairec_text.yaml --config configs/stages/kuairec_pretrain.yaml
   --seed_everything s`` into ``<runs>/stage1/seed<s>``: keyword-mask prediction and the caption-vs-cover
   views on the texts of all 10,728 videos, no label term, the validation and test videos' labels removed
   (``data.train_on_all_texts``); its vocabularies from the train split alone;
2. stage 2, ``mmemb fit --config configs/kuairec_text.yaml --seed_everything s --model.init_from
   <stage 1 last.ckpt> --data.vocab_dir <stage 1 vocab>`` into ``<runs>/finetuned/seed<s>``: every term on the
   train split, from the stage-1 weights, then ``mmemb eval`` (test split, best checkpoint);
3. ``mmemb eval real-data --run <stage 2> --skip-av``: the baselines and the model on the run's split
   (``real_data/results.json``), as ``benchmarks/kuairec_table.py`` scores the config itself.

A seed whose ``<runs>/finetuned/seed<s>/real_data/results.json`` exists is not trained again (those files and
``result.json``, the timings, are what ``results/`` keeps; see ``results/README.md``). The table compares the
fine-tuned runs with the config trained from scratch, the ``full`` runs of the KuaiRec ablation
(``--baseline``, scored by ``benchmarks/kuairec_table.py``): the head, its two parts and the fused probe, mean
± std over the seeds, and whether each gap exceeds the seed spread.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kuairec_table import _row, ensure_manifest, ensure_real_data, same_baselines  # noqa: E402
from readme_tables import (REPO, _mmemb, _run, ensure_trained_and_evaluated, fmt, gap_verdict,  # noqa: E402
                           publish_table)

CONFIG = "configs/kuairec_text.yaml"
STAGE1 = "configs/stages/kuairec_pretrain.yaml"
ROWS = (("hashtag head", "mmemb_head", "tagging", "map"), ("its wide part alone", "mmemb_head_wide", "tagging", "map"),
        ("its deep part alone", "mmemb_head_deep", "tagging", "map"),
        ("fused embedding, category probe", "mmemb_fused", "category_l2", "accuracy"))


def stage1_command(root: Path, seed: int) -> list[str]:
    """``mmemb fit`` of stage 1 (pre-training) for ``seed`` into ``root``."""
    return _mmemb("fit", "--config", CONFIG, "--config", STAGE1, "--seed_everything", str(seed),
                  "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar=false")


def stage2_fit_args(stage1: Path, seed: int) -> list[str]:
    """The ``mmemb fit`` arguments of stage 2 (fine-tuning from stage 1's last checkpoint and vocabularies)."""
    return ["--config", CONFIG, "--seed_everything", str(seed), "--model.init_from", str(last_checkpoint(stage1)),
            "--data.vocab_dir", str(stage1 / "vocab"), "--trainer.enable_progress_bar=false"]


def last_checkpoint(root: Path) -> Path:
    """``last.ckpt`` of the newest ``version_N`` of a run folder."""
    versions = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions or not (versions[-1] / "checkpoints" / "last.ckpt").exists():
        raise FileNotFoundError(f"{root}: no version_*/checkpoints/last.ckpt (stage 1 did not finish)")
    return versions[-1] / "checkpoints" / "last.ckpt"


def _relative(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (a committed result names no machine's paths)."""
    try:
        return str(path.resolve().relative_to(REPO.resolve()))
    except ValueError:
        return str(path)


def ensure_seed(runs: Path, seed: int) -> tuple[list[dict], dict]:
    """Stage 1, stage 2 and the real-data scoring of ``seed`` (each skipped when done); the real-data rows and
    the timings (``result.json``)."""
    stage1, stage2 = runs / "stage1" / f"seed{seed}", runs / "finetuned" / f"seed{seed}"
    result_file = stage2 / "result.json"
    if (stage2 / "real_data" / "results.json").exists() and result_file.exists():
        return ensure_real_data(stage2), json.loads(result_file.read_text(encoding="utf-8"))
    timings = {}
    done = stage1 / "fit.done"
    if not done.exists():
        if stage1.exists():
            shutil.rmtree(stage1)  # cut during training: again from the start
        t0 = time.perf_counter()
        _run(stage1_command(stage1, seed))
        done.write_text("ok\n")
        timings["stage1_seconds"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    ensure_trained_and_evaluated(stage2, stage2_fit_args(stage1, seed))
    timings["stage2_seconds"] = round(time.perf_counter() - t0, 1)
    rows = ensure_real_data(stage2)
    result = {"seed": seed, "stage1": _relative(stage1), "stage1_checkpoint": _relative(last_checkpoint(stage1)),
              **timings}
    result_file.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return rows, result


def pretrain_table(finetuned: Sequence[Sequence[dict]], scratch: Sequence[Sequence[dict]]) -> str:
    """Fine-tuned after pre-training against trained from scratch, per row: mean ± std and the gap's verdict."""
    same_baselines([*finetuned, *scratch])
    lines = ["| model | from scratch (`full`) | pre-trained, fine-tuned | difference |", "|---|---:|---:|---|"]
    for label, method, task, key in ROWS:
        a = [r[key] for rows in finetuned if (r := _row(rows, method, task)) is not None]
        b = [r[key] for rows in scratch if (r := _row(rows, method, task)) is not None]
        if not a and not b:
            continue
        lines.append(f"| {label} (`{method}`) | {fmt(b)} | {fmt(a)} | {gap_verdict(a, b)} |")
    tfidf = _row(scratch[0], "tfidf_char13_lr", "tagging")["map"]
    probe = _row(scratch[0], "tfidf_char13_svd256_lr", "category_l2")["accuracy"]
    lines += ["", f"{len(finetuned)} fine-tuned seeds, {len(scratch)} from scratch; the same split and labels (TF-IDF + LR "
              f"{tfidf:.3f} mAP, TF-IDF probe {probe:.3f}). difference: fine-tuned - from scratch, and whether it "
              "exceeds the larger of the two seed spreads."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--runs", default="results/kuairec_pretrain", help="folder of the two stages' runs")
    p.add_argument("--baseline", default="results/ablate_kuairec/full",
                   help="the config's runs from scratch, scored by benchmarks/kuairec_table.py (seed<s>/real_data)")
    p.add_argument("--manifest", default="data/kuairec.jsonl", help="the config's data.manifest")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--block", default="kuairec_pretrain")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    ensure_manifest(REPO / args.manifest)
    scratch = []
    for seed in range(args.seeds):
        found = REPO / args.baseline / f"seed{seed}" / "real_data" / "results.json"
        if not found.exists():
            p.error(f"{found} is missing: score the config's runs first (python benchmarks/kuairec_table.py --runs "
                    f"{args.baseline})")
        scratch.append(json.loads(found.read_text(encoding="utf-8")))
    finetuned, minutes = [], []
    for seed in range(args.seeds):
        rows, result = ensure_seed(REPO / args.runs, seed)
        finetuned.append(rows)
        if "stage1_seconds" in result:
            minutes.append((result["stage1_seconds"] + result["stage2_seconds"]) / 60)
    table = pretrain_table(finetuned, scratch)
    if minutes:
        table += f" Time: {fmt(minutes, 1)} min per seed (both stages' `mmemb fit` + `mmemb eval`, 2 cores)."
    publish_table(table, args.readme, args.block, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
