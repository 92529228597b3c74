"""Which hashtags does the KuaiRec protocol score, and which did the model learn? The label sets of the
baselines' protocol and of a model trained on the README's manifest, and what their difference costs.

    python benchmarks/kuairec_label_sets.py               # README block kuairec_label_sets
    python benchmarks/kuairec_label_sets.py --dry-run     # the table printed only

The protocol (:func:`mmemb.eval.kuairec_bench.prepare_kuairec_tagging`, what ``mmemb eval real-data``
scores) cleans the hashtags on the train split with the **level-1** categories (its spread detector asks
whether a tag is spread over the categories like random videos are). A model trained on the manifest of
``mmemb data import-kuairec ... --category-level 2`` (``configs/kuairec_text.yaml``) cleaned its labels with
the manifest's **level-2** categories, which removes some other tags. The same split, the same minimum count
(5 train videos) and the same TF-IDF + logistic regression (:func:`~mmemb.eval.kuairec_bench.ovr_scores`)
on both:

1. the labels of each set that the other lacks, and the test videos that carry one;
2. TF-IDF + LR on the protocol (the README's reference, 0.276);
3. the same scores with the protocol labels that a level-2 model lacks scored below every other label of the
   video (:func:`~mmemb.eval.kuairec_bench.align_label_scores`, what the protocol does to the model's head):
   the handicap the model's rows carry in the README's KuaiRec table;
4. TF-IDF + LR on the level-2 label set (the protocol as the model's data cleans).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_tables import REPO  # noqa: E402

from mmemb.eval.kuairec_bench import align_label_scores, ovr_scores, prepare_kuairec_tagging, tfidf_features  # noqa: E402
from mmemb.eval.report import write_readme_block  # noqa: E402
from mmemb.eval.tagging import tagging_metrics  # noqa: E402

CSV = "assets/kuairec/kuairec_caption_category.csv"


def _map(scores: np.ndarray, targets: np.ndarray) -> float:
    return float(tagging_metrics(scores, targets, ks=(1, 5))["map"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default="README.md")
    p.add_argument("--block", default="kuairec_label_sets")
    p.add_argument("--max-rows", type=int, default=None, help="only the CSV's first rows (a smoke run)")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    protocol = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows)  # level-1 cleaning
    level2 = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows, category_level=2)
    if protocol.train_ids != level2.train_ids or protocol.test_ids != level2.test_ids:
        raise SystemExit("the two tasks split the videos differently: the comparison would mean nothing")
    only_protocol = [t for t in protocol.labels if t not in set(level2.labels)]
    only_level2 = [t for t in level2.labels if t not in set(protocol.labels)]
    targets = np.asarray(protocol.test_targets)
    cols = [protocol.labels.index(t) for t in only_protocol]
    hit = targets[:, cols].sum(axis=1) > 0 if cols else np.zeros(len(targets), dtype=bool)
    labelled = targets.sum(axis=1) > 0
    scores = ovr_scores(*tfidf_features(protocol)[:2], protocol)  # (N_test, L) over the protocol's labels
    known = [j for j, t in enumerate(protocol.labels) if t in set(level2.labels)]
    handicapped, unknown = align_label_scores(scores[:, known], [protocol.labels[j] for j in known], protocol.labels)
    full, masked = _map(scores, targets), _map(handicapped, targets)
    own = _map(ovr_scores(*tfidf_features(level2)[:2], level2), np.asarray(level2.test_targets))
    lines = [
        "| label set | labels | labelled test videos | TF-IDF + LR hashtag mAP |",
        "|---|---:|---:|---:|",
        f"| the protocol (cleaned with level-1 categories) | {len(protocol.labels)} | {int(labelled.sum())} | {full:.3f} |",
        f"| the protocol, its {unknown} labels a level-2 model lacks never predicted (the model's handicap) "
        f"| {len(protocol.labels)} | {int(labelled.sum())} | {masked:.3f} |",
        f"| cleaned with level-2 categories (the model's own labels) | {len(level2.labels)} | "
        f"{int((np.asarray(level2.test_targets).sum(axis=1) > 0).sum())} | {own:.3f} |",
        "",
        f"Protocol labels a level-2 model lacks: {', '.join(only_protocol) or 'none'} ({int(hit.sum())} of the "
        f"{int(labelled.sum())} labelled test videos carry one); labels only the level-2 set has: "
        f"{', '.join(only_level2) or 'none'}. The same split and TF-IDF + LR (C=4) on each; "
        f"{time.perf_counter() - t0:.0f} s on 2 cores.",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.dry_run:
        write_readme_block(REPO / args.readme, args.block, table)
        print(f"wrote the block {args.block} of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
