"""Linear models of KuaiRec's hashed char n-grams: which pooling and which loss let a wide label head reach
TF-IDF + logistic regression? The study behind the KuaiRec text model's wide heads (README, "The KuaiRec
text model"): chosen on the validation split, the test split reported at the best validation epoch.

    python benchmarks/kuairec_linear.py                  # 6 settings x 2 learning rates x 3 seeds, README block
    python benchmarks/kuairec_linear.py --seeds 1 --dry-run

The data are the real-data benchmark's (:func:`mmemb.eval.kuairec_bench.prepare_kuairec_tagging`: cleaned
captions + cover texts, the hashtags used by >= 5 train videos, the data module's id split); the validation
videos get the same labels (cleaned as the train split's). Every linear model is the model's own wide part,
alone: an :class:`~mmemb.models.ngram.NgramBag` of width = the number of labels over the hashed char 1-3-grams
of the text (:func:`mmemb.data.text.hash_ngrams`, 32,768 buckets, as ``configs/kuairec_text.yaml``), zero at
the start, trained with ``torch.optim.SparseAdam`` at a constant learning rate, batch 64, 10 epochs. The
settings cross the pooling (``mean`` over the n-gram occurrences, or ``l2_sublinear``: 1 + ln(count) per
distinct n-gram, unit L2 norm) with the loss (``softmax``: cross-entropy against each labelled video's
uniform label distribution; ``bce``: one-vs-rest binary cross-entropy over every label and video, as
logistic regression's); the BCE rows also with and without a per-label intercept (``NgramBag(bias=True)``,
the model's ``wide_bias``; Adam, dense). Each setting's learning rate (0.03 or 0.1) is chosen on validation (mean over the
seeds of the best epoch's mAP). Reference rows: TF-IDF + one-vs-rest logistic regression
(:func:`~mmemb.eval.kuairec_bench.tfidf_baseline`) on the validation and the test split.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import REPO, fmt, kuairec_split_note, publish_table  # noqa: E402

from mmemb.data.text import hash_ngrams  # noqa: E402
from mmemb.eval.kuairec_bench import prepare_kuairec_tagging, tfidf_baseline  # noqa: E402
from mmemb.eval.tagging import tagging_metrics  # noqa: E402
from mmemb.losses import soft_target_cross_entropy  # noqa: E402
from mmemb.models.ngram import NgramBag  # noqa: E402

CSV = "assets/kuairec/kuairec_caption_category.csv"
BUCKETS = 32768
SETTINGS = (("mean", "softmax", False), ("mean", "bce", False), ("l2_sublinear", "softmax", False),
            ("l2_sublinear", "bce", False), ("mean", "bce", True), ("l2_sublinear", "bce", True))
LRS = (0.03, 0.1)


def ngram_ids(texts, max_length: int = 256, buckets: int = BUCKETS) -> torch.Tensor:
    """``(N, G)`` bucket + 1 ids of the char 1-3-grams of each text hashed into ``buckets``, at most ``max_length``
    per text, 0-padded (the data set's layout)."""
    rows = [[b + 1 for b in hash_ngrams(t, 3, buckets, 0, min_n=1)[:max_length]] for t in texts]
    out = torch.zeros(len(rows), max(1, max(map(len, rows))), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out  # (N, G)


def train_linear(pooling: str, loss: str, bias: bool, lr: float, seed: int, data: dict,
                 epochs: int) -> tuple[list[float], float]:
    """Validation mAP per epoch and the test mAP at the best validation epoch of one linear model."""
    torch.manual_seed(seed)
    targets = torch.tensor(data["train_y"], dtype=torch.float32)  # (N, L)
    bag = NgramBag(BUCKETS, targets.shape[1], sparse_grad=True, pooling=pooling, bias=bias)
    torch.nn.init.zeros_(bag.bag.weight)
    opts = [torch.optim.SparseAdam([bag.bag.weight], lr=lr)]  # the table, as the model's optimizer does
    if bias:
        opts.append(torch.optim.Adam([bag.bias], lr=lr))  # dense, as the model's wide intercept
    n, history, best, best_test = len(targets), [], -1.0, float("nan")
    for _ in range(epochs):
        for idx in torch.randperm(n).split(64):
            logits, _ = bag(data["train_x"][idx])  # (B, L)
            y = targets[idx]
            if loss == "softmax":
                term = soft_target_cross_entropy(logits, y, y.sum(1) > 0)["hashtag_ce"]
            else:
                term = F.binary_cross_entropy_with_logits(logits, y)
            for opt in opts:
                opt.zero_grad()
            term.backward()
            for opt in opts:
                opt.step()
        with torch.no_grad():
            val = tagging_metrics(bag(data["val_x"])[0].numpy(), data["val_y"])["map"]
            if val > best:
                best, best_test = val, tagging_metrics(bag(data["test_x"])[0].numpy(), data["test_y"])["map"]
        history.append(val)
    return history, best_test


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--readme", default="README.md")
    p.add_argument("--block", default="kuairec_linear")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    p.add_argument("--max-rows", type=int, default=None, help="only the CSV's first rows (a smoke run)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows)
    val_task = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows, eval_split="val")  # val on the test side
    data = {"train_x": ngram_ids(task.train_texts), "val_x": ngram_ids(val_task.test_texts),
            "test_x": ngram_ids(task.test_texts), "train_y": task.train_targets, "val_y": val_task.test_targets,
            "test_y": task.test_targets}
    lr_val, lr_test = tfidf_baseline(val_task)["map"], tfidf_baseline(task)["map"]
    lines = ["| linear model (pooling, loss) | lr | validation mAP, best epoch | epoch | test mAP at it |",
             "|---|---:|---:|---:|---:|",
             f"| TF-IDF char 1-3-grams + one-vs-rest logistic regression (the baseline) | | {lr_val:.3f} | | {lr_test:.3f} |"]
    for pooling, loss, bias in SETTINGS:
        runs = {}
        for lr in LRS:
            runs[lr] = [train_linear(pooling, loss, bias, lr, s, data, args.epochs) for s in range(args.seeds)]
            print(f"{pooling} {loss} bias {bias} lr {lr}: " + "; ".join(" ".join(f"{v:.3f}" for v in h) for h, _ in runs[lr]),
                  flush=True)
        lr = max(LRS, key=lambda x: np.mean([max(h) for h, _ in runs[x]]))
        best = [max(h) for h, _ in runs[lr]]
        epoch = [int(np.argmax(h)) + 1 for h, _ in runs[lr]]
        lines.append(f"| `{pooling}`, `{loss}`{', + label bias' if bias else ''} | {lr} | {fmt(best)} | {', '.join(map(str, epoch))} | "
                     f"{fmt([t for _, t in runs[lr]])} |")
    lines.append("")
    lines.append(kuairec_split_note(task, val_task, f"; {args.seeds} seeds (batch order), {args.epochs} epochs",
                                    time.perf_counter() - t0))
    table = "\n".join(lines)
    publish_table(table, args.readme, args.block, args.dry_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
