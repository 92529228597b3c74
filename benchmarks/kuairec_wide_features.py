"""Why the converged wide part scores below TF-IDF + LR on the same labels: its features, one change at a time.

    python benchmarks/kuairec_wide_features.py              # README block kuairec_wide_features rewritten
    python benchmarks/kuairec_wide_features.py --dry-run    # the table printed only

Fitted to convergence (``--model.wide_fit liblinear``), the model's wide part is a one-vs-rest L2 logistic
regression (liblinear, ``C`` 16) over its own pooled n-grams, and scores below TF-IDF + LR on the same test
labels (README, "A converged wide part"). This script fits that same classifier (every row: the same
``LogisticRegression(solver="liblinear")`` per label, fitted once on the train split, scored on the validation
and the test split) on feature sets that go from the wide part's to TF-IDF's one change at a time:

1. the wide part's own features: the char 1-3-grams of :func:`mmemb.data.text.hash_ngrams` hashed into 32,768
   buckets (``configs/kuairec_text.yaml``'s ``ngram_buckets``), at most 256 per text, pooled as the bag pools
   them (:func:`mmemb.models.wide_fit.pooled_features` of an ``l2_sublinear`` :class:`NgramBag`: 1 + ln(count)
   per bucket, unit L2 norm over every n-gram of the text);
2. the same, with the buckets no train text has left out before pooling (the norm of a validation or test text
   then counts only what the classifier has weights for);
3. and 4. the same two with 262,144 buckets (fewer collisions);
5. the n-grams themselves, not hashed (the train texts' vocabulary: unseen ones are out of the norm as in 2.);
6. 5. with inverse document frequency weights (scikit-learn's smoothed IDF of the train texts);
7. the baseline's features (:func:`mmemb.eval.kuairec_bench.tfidf_features`: scikit-learn's ``char_wb`` 1-3-grams
   of the whole text, n-grams of at least 2 train texts, sublinear TF-IDF) at ``C`` 1, 4 (the protocol's: the
   baseline itself), 16, 64 and 256: whether the protocol's ``C``, fixed before the model existed, is its best.

The labels are those of the model trained on the manifest imported with ``--category-level 2`` (its hashtags
cleaned with the level-2 categories, used by >= 5 train videos; ``--category-level 1``: the protocol's), on the
data module's id split. The model hashes its text fields separately (caption, cover text; the 256 shared
between them); here the two are joined by a space first, which changes no n-gram (a space separates segments)
and only where 256 is reached which ones are kept. Choices are for validation; the test column is reported.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kuairec_linear import ngram_ids  # noqa: E402
from readme_tables import REPO, kuairec_split_note, publish_table  # noqa: E402

from mmemb.data.text import char_ngrams  # noqa: E402
from mmemb.eval.kuairec_bench import prepare_kuairec_tagging, tfidf_features  # noqa: E402
from mmemb.eval.tagging import tagging_metrics  # noqa: E402
from mmemb.models.ngram import PAD, NgramBag  # noqa: E402
from mmemb.models.wide_fit import pooled_features  # noqa: E402

CSV = "assets/kuairec/kuairec_caption_category.csv"
MAX_NGRAMS = 256  # configs/kuairec_text.yaml's ngram_max_length
PROTOCOL_C = 4.0  # the real-data protocol's C (mmemb.eval.kuairec_bench.tfidf_baseline)
BASELINE_CS = (1.0, 4.0, 16.0, 64.0, 256.0)  # the baseline's features at each: is its C the best on validation?


def hashed_features(train_texts, eval_texts: dict, buckets: int, train_only: bool) -> tuple:
    """The wide part's pooled features (``l2_sublinear`` bag of ``buckets``) of the train texts and of each of
    ``eval_texts`` (``{split: texts}``); ``train_only``: ids of buckets no train text has become padding first."""
    bag = NgramBag(buckets, 1, pooling="l2_sublinear")
    train_ids = ngram_ids(train_texts, MAX_NGRAMS, buckets)  # (N, G)
    seen = torch.zeros(buckets + 1, dtype=torch.bool)
    seen[train_ids.flatten()] = True
    seen[PAD] = False

    def pooled(ids: torch.Tensor) -> sp.csr_matrix:
        if train_only:
            ids = torch.where(seen[ids], ids, torch.full_like(ids, PAD))  # (N, G)
        return pooled_features(bag, ids)

    return pooled(train_ids), {k: pooled(ngram_ids(v, MAX_NGRAMS, buckets)) for k, v in eval_texts.items()}


def exact_features(train_texts, eval_texts: dict, idf: bool) -> tuple:
    """The same n-grams, not hashed: sublinear TF (+ IDF), unit L2 norm, over the train texts' vocabulary."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer=lambda t: char_ngrams(t, 3, min_n=1)[:MAX_NGRAMS], sublinear_tf=True,
                          use_idf=idf, dtype=np.float32)
    return vec.fit_transform(train_texts), {k: vec.transform(v) for k, v in eval_texts.items()}


def fit_and_score(train_x, train_y: np.ndarray, eval_x: dict, eval_y: dict, C: float) -> dict[str, float]:
    """One liblinear L2 logistic regression per label (as the wide fit and the baseline), fitted on the train
    rows; each split's hashtag mAP over its videos with a label, and ``unconverged``: the labels whose fit
    stopped at ``max_iter`` (scikit-learn's ConvergenceWarning; counted, not printed)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    dual = bool(train_x.shape[1] > train_x.shape[0])
    clf = OneVsRestClassifier(LogisticRegression(C=C, solver="liblinear", dual=dual, max_iter=200))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_x, train_y)
    out = {k: tagging_metrics(clf.decision_function(x).reshape(x.shape[0], -1), eval_y[k])["map"]
           for k, x in eval_x.items()}
    out["unconverged"] = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return out


def _row(name: str, C: float, m: dict) -> str:
    note = f" ({m['unconverged']} labels' fits stopped at 200 iterations)" if m["unconverged"] else ""
    return f"| {name}{note} | {C:g} | {m['val']:.3f} | {m['test']:.3f} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--C", type=float, default=16.0, help="liblinear's C for rows 1-6 (the wide fit's, default 16)")
    p.add_argument("--category-level", type=int, choices=(1, 2), default=2,
                   help="the categories the hashtag cleaning reads (2: configs/kuairec_text.yaml's labels)")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--block", default="kuairec_wide_features")
    p.add_argument("--dry-run", action="store_true", help="print the table, do not write the README")
    p.add_argument("--max-rows", type=int, default=None, help="only the CSV's first rows (a smoke run)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    task = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows, category_level=args.category_level)
    val = prepare_kuairec_tagging(REPO / CSV, max_rows=args.max_rows, category_level=args.category_level,
                                  eval_split="val")  # the validation videos on the test side, the same labels
    texts = {"val": val.test_texts, "test": task.test_texts}
    targets = {"val": val.test_targets, "test": task.test_targets}
    settings = [  # (row, the features of the train texts and of each evaluated split)
        ("the wide part's: hashed into 32,768 buckets, every n-gram in the norm",
         partial(hashed_features, buckets=32768, train_only=False)),
        ("hashed into 32,768, only the train texts' buckets in the norm",
         partial(hashed_features, buckets=32768, train_only=True)),
        ("hashed into 262,144, every n-gram in the norm", partial(hashed_features, buckets=262144, train_only=False)),
        ("hashed into 262,144, only the train texts' buckets in the norm",
         partial(hashed_features, buckets=262144, train_only=True)),
        ("not hashed (the train texts' n-grams)", partial(exact_features, idf=False)),
        ("not hashed, + IDF", partial(exact_features, idf=True)),
    ]
    lines = ["| features (one-vs-rest liblinear) | C | validation mAP | test mAP |", "|---|---:|---:|---:|"]
    for name, features in settings:
        train_x, eval_x = features(task.train_texts, texts)
        m = fit_and_score(train_x, task.train_targets, eval_x, targets, args.C)
        lines.append(_row(name, args.C, m))
        print(lines[-1], flush=True)
    train_x, test_x, vec = tfidf_features(task)
    eval_x = {"val": vec.transform(val.test_texts), "test": test_x}
    for C in sorted({*BASELINE_CS, args.C}):
        name = ("the baseline (TF-IDF + LR at the protocol's C)" if C == PROTOCOL_C else
                "the baseline's TF-IDF (`char_wb` 1-3-grams, min_df 2)")
        m = fit_and_score(train_x, task.train_targets, eval_x, targets, C)
        lines.append(_row(name, C, m))
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(kuairec_split_note(task, val, f" (cleaned with the level-{args.category_level} categories)",
                                    time.perf_counter() - t0))
    publish_table("\n".join(lines), args.readme, args.block, args.dry_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
