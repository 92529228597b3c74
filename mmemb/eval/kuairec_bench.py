"""KuaiRec real-data benchmarks: hashtag tagging and category probe, each with a classical baseline.

Every row (baseline or mmemb) is computed by the same code on the same split.

Data (:func:`prepare_kuairec_tagging` -> :class:`KuaiRecTaggingTask`)
---------------------------------------------------------------------
* Input text = the caption with its ``#hashtag`` words and ``@account(O..)`` mentions removed
  (:func:`mmemb.data.kuairec.clean_caption`, applied by :func:`read_kuairec`) + ``" "`` + the cover
  text. Videos with neither get the empty string (they stay in the split).
* Split: the data module's split (:func:`mmemb.data.split.split_of`: a seeded CRC32 hash of the video
  id, 80/10/10 by default), so a model trained with ``mmemb fit`` on the KuaiRec manifest (whose ids are
  the CSV's ``video_id``) and the baselines are scored on the same test videos, and the model's
  training never saw a test video's labels. The baselines fit on the train split; the validation split
  is left out of every row (the model chooses its checkpoint on it). A hash, not a permutation: the
  split of a video does not depend on which other rows are loaded, and it is the same on every machine.
* Labels: hashtags normalised and cleaned with :func:`mmemb.data.labels.clean_hashtags`, **fitted on
  the training videos only** (with their level-1 KuaiRec categories, as :mod:`mmemb.data.vocab`
  does); the tags it removes are removed from test videos too. The label set is the cleaned tags used
  by ``>= min_label_count`` (5) **training** videos, so every label has positives to learn from and
  the test side plays no part in choosing labels.
* Videos whose label set ends up empty stay in train (all-negative rows for the classifiers, and
  text for the text model); in test they are excluded from the tagging metrics by
  :func:`mmemb.eval.tagging.tagging_metrics` (``n_excluded``). Both counts are in the task.

Baselines and the mmemb hook
----------------------------
* ``label_popularity``: every test video gets the training share of each label.
* ``tfidf_char13_lr``: ``TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2,
  sublinear_tf=True)`` fitted on the training texts + one-vs-rest ``LogisticRegression(liblinear)``.
* :func:`evaluate_embeddings`: the *same* one-vs-rest logistic regression (:func:`ovr_tagging`) on
  frozen embeddings given by the caller (rows L2-normalised, like TF-IDF rows).
* Category probe (level-2 KuaiRec category, UNKNOWN -> -1 and dropped by the probe):
  :func:`mmemb.eval.probe.linear_probe` (standardised multinomial LR) on embeddings; for the
  TF-IDF baseline the sparse features are first reduced with ``TruncatedSVD(256)`` fitted on train,
  since standardising and fitting lbfgs on ~10^5 sparse dims is slow and densifies the matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from ..data.kuairec import CategoryLevel, kuairec_categories, read_kuairec
from ..data.labels import CleaningConfig, clean_hashtags, normalize_label
from ..data.manifest import VideoRecord
from ..data.split import SplitConfig, split_records
from .probe import linear_probe
from .tagging import label_popularity_scores, tagging_metrics

__all__ = [
    "KuaiRecTaggingTask",
    "prepare_kuairec_tagging",
    "ovr_tagging",
    "tfidf_features",
    "popularity_baseline",
    "tfidf_baseline",
    "evaluate_embeddings",
    "align_label_scores",
    "evaluate_head_scores",
    "category_probe_tfidf",
    "category_probe_embeddings",
    "run_kuairec_benchmark",
    "markdown_table",
]

EmbedFn = Callable[[Sequence[str]], np.ndarray]  # texts -> (N, D) embeddings


@dataclass
class KuaiRecTaggingTask:
    """Train/test texts, multi-hot targets and label names of the KuaiRec tagging benchmark."""

    train_ids: list[str]
    test_ids: list[str]
    train_texts: list[str]
    test_texts: list[str]
    train_targets: np.ndarray  # (N_train, L) uint8 multi-hot
    test_targets: np.ndarray  # (N_test, L) uint8 multi-hot
    labels: list[str]  # column -> normalised hashtag
    train_categories: list[str | None]  # level-2 category name per training video (None = UNKNOWN)
    test_categories: list[str | None]
    split: SplitConfig = field(default_factory=SplitConfig)  # the data module's split of the ids
    test_records: list[VideoRecord] = field(default_factory=list)  # the test videos (a model's own inputs)
    n_val_held_out: int = 0  # validation videos: in no row (a trained model selects its checkpoint on them)
    min_label_count: int = 5
    n_train_unlabeled: int = 0  # training videos without any kept label (kept as negatives)
    n_test_unlabeled: int = 0  # test videos without any kept label (excluded from tagging metrics)
    cleaning_removed: dict[str, str] = field(default_factory=dict)  # tag -> reason, fitted on train

    def summary(self) -> dict[str, float]:
        return {
            "n_train": float(len(self.train_ids)),
            "n_test": float(len(self.test_ids)),
            "n_val_held_out": float(self.n_val_held_out),
            "n_labels": float(len(self.labels)),
            "n_train_unlabeled": float(self.n_train_unlabeled),
            "n_test_unlabeled": float(self.n_test_unlabeled),
            "n_tags_removed_by_cleaning": float(len(self.cleaning_removed)),
        }


def _text(caption: str | None, cover: str | None) -> str:
    return " ".join(t for t in (caption, cover) if t)


def prepare_kuairec_tagging(
    csv_path: str | Path,
    max_rows: int | None = None,
    min_label_count: int = 5,
    split: SplitConfig | None = None,
    cleaning: CleaningConfig | None = None,
    eval_split: Literal["test", "val"] = "test",
    category_level: CategoryLevel = 1,
    removed_hashtags: Mapping[str, str] | None = None,
) -> KuaiRecTaggingTask:
    """Build the tagging task from the KuaiRec CSV (``max_rows``: only the first rows, for tests) on
    ``split`` (default ``SplitConfig()``: the data module's default, that of ``configs/kuairec_text.yaml``).

    ``eval_split="val"`` puts the validation videos on the task's test side (``test_*`` fields), for choices
    made on validation (``benchmarks/kuairec_linear.py``); the labels, their cleaning and the training side
    are the same as with ``"test"``, and ``n_val_held_out`` then counts the test videos, held out instead.

    ``category_level``: the KuaiRec categories the hashtag cleaning's spread detector reads (1, the
    protocol's; a model trained on a manifest imported with ``--category-level 2`` cleaned its labels with
    level 2, which keeps and removes other tags: ``benchmarks/kuairec_label_sets.py``).

    ``removed_hashtags``: the tags to remove, instead of cleaning the train split here (``category_level``
    and ``cleaning`` then unused): a run's ``Vocabularies.removed_hashtags``, so that the task's labels are
    those the run learned (:func:`mmemb.eval.real_data.run_kuairec`)."""
    if eval_split not in ("test", "val"):
        raise ValueError(f"prepare_kuairec_tagging: eval_split must be 'test' or 'val', got {eval_split!r}")
    split = split or SplitConfig()
    records = read_kuairec(csv_path, category_level=category_level)
    cats = kuairec_categories(csv_path)
    if max_rows is not None:
        records = records[:max_rows]
    parts = split_records(records, split)
    held_out = "test" if eval_split == "val" else "val"  # the split in no row
    train, test = parts["train"], parts[eval_split]
    if not train or not test:
        raise ValueError(f"prepare_kuairec_tagging: empty split ({len(train)} train, {len(test)} {eval_split}) "
                         f"with {split}")

    if removed_hashtags is None:
        train_tags, report = clean_hashtags([r.hashtags for r in train], [r.category for r in train], cleaning)
        removed = dict(report.removed)
    else:
        removed = dict(removed_hashtags)

    def _kept(tags: Sequence[str]) -> list[str]:  # normalized, deduplicated, without the removed tags
        normed = dict.fromkeys(t for t in (normalize_label(x) for x in tags) if t)
        return [t for t in normed if t not in removed]

    if removed_hashtags is not None:
        train_tags = [_kept(r.hashtags) for r in train]
    test_tags = [_kept(r.hashtags) for r in test]
    counts: dict[str, int] = {}
    for tags in train_tags:
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
    labels = sorted(t for t, c in counts.items() if c >= min_label_count)
    col = {t: i for i, t in enumerate(labels)}

    def _multi_hot(lists: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(lists), len(labels)), dtype=np.uint8)
        for i, tags in enumerate(lists):
            for t in tags:
                if t in col:
                    out[i, col[t]] = 1
        return out

    ytr, yte = _multi_hot(train_tags), _multi_hot(test_tags)
    return KuaiRecTaggingTask(
        train_ids=[r.id for r in train],
        test_ids=[r.id for r in test],
        train_texts=[_text(r.caption, r.cover_text) for r in train],
        test_texts=[_text(r.caption, r.cover_text) for r in test],
        train_targets=ytr,
        test_targets=yte,
        labels=labels,
        train_categories=[cats.get(r.id, (None, None, None))[1] for r in train],
        test_categories=[cats.get(r.id, (None, None, None))[1] for r in test],
        split=split,
        test_records=test,
        n_val_held_out=len(parts[held_out]),
        min_label_count=min_label_count,
        n_train_unlabeled=int((ytr.sum(axis=1) == 0).sum()),
        n_test_unlabeled=int((yte.sum(axis=1) == 0).sum()),
        cleaning_removed=removed,
    )


# ----------------------------------------------------------------------------- shared classifier


def ovr_tagging(train_x, test_x, task: KuaiRecTaggingTask, C: float = 4.0, n_jobs: int = 1) -> dict[str, float]:
    """One-vs-rest ``LogisticRegression(solver="liblinear", C=4)`` per label on ``train_x``; tagging
    metrics of its decision scores on ``test_x``. The single classifier every tagging row uses.

    liblinear solves the dual when there are more features than samples (TF-IDF: ~36k features for
    ~8.6k documents; 4x faster there, same optimum up to tolerance: 30 s vs 127 s and mAP 0.251 vs 0.250
    on the full KuaiRec split, 2 shared cores) and the primal otherwise (dense embeddings).
    ``n_jobs=1``: joblib process start-up cost more than it saved on 2 shared cores.

    ``train_x``/``test_x``: scipy sparse or dense ``(N, D)``. Every label has >= ``min_label_count``
    training positives by construction.
    """
    t0 = time.perf_counter()
    out = tagging_metrics(ovr_scores(train_x, test_x, task, C=C, n_jobs=n_jobs), task.test_targets, ks=(1, 5))
    out["seconds"] = time.perf_counter() - t0
    return out


def ovr_scores(train_x, test_x, task: KuaiRecTaggingTask, C: float = 4.0, n_jobs: int = 1) -> np.ndarray:
    """``(N_test, L)`` decision scores of :func:`ovr_tagging`'s classifier over ``task.labels``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    dual = bool(train_x.shape[1] > train_x.shape[0])
    clf = OneVsRestClassifier(LogisticRegression(C=C, solver="liblinear", dual=dual, max_iter=200), n_jobs=n_jobs)
    clf.fit(train_x, task.train_targets)
    return np.asarray(clf.decision_function(test_x), dtype=np.float64).reshape(len(task.test_ids), -1)


def tfidf_features(task: KuaiRecTaggingTask):
    """Char 1-3-gram TF-IDF fitted on the training texts: ``(train_x, test_x, vectorizer)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True, dtype=np.float32)
    train_x = vec.fit_transform(task.train_texts)
    return train_x, vec.transform(task.test_texts), vec


def popularity_baseline(task: KuaiRecTaggingTask) -> dict[str, float]:
    t0 = time.perf_counter()
    scores = label_popularity_scores(task.train_targets, len(task.test_ids))
    out = tagging_metrics(scores, task.test_targets, ks=(1, 5))
    out["seconds"] = time.perf_counter() - t0
    return out


def tfidf_baseline(task: KuaiRecTaggingTask, features=None, C: float = 4.0) -> dict[str, float]:
    """TF-IDF char 1-3-grams + one-vs-rest LR; ``seconds`` covers vectorising and fitting."""
    t0 = time.perf_counter()
    train_x, test_x, vec = features or tfidf_features(task)
    out = ovr_tagging(train_x, test_x, task, C=C)
    out["n_features"] = float(train_x.shape[1])
    out["seconds"] = time.perf_counter() - t0
    return out


def _l2(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate_embeddings(train_emb, test_emb, task: KuaiRecTaggingTask, C: float = 4.0) -> dict[str, float]:
    """Tagging metrics of the shared one-vs-rest LR (:func:`ovr_tagging`) on frozen embeddings.

    ``train_emb`` ``(N_train, D)`` and ``test_emb`` ``(N_test, D)`` are aligned with
    ``task.train_ids``/``task.test_ids`` (text-path or fused-path embeddings; the caller chooses).
    Rows are L2-normalised first, as TF-IDF rows are.
    """
    if hasattr(train_emb, "detach"):
        train_emb, test_emb = train_emb.detach().float().cpu().numpy(), test_emb.detach().float().cpu().numpy()
    tr, te = _l2(train_emb), _l2(test_emb)
    if tr.shape[0] != len(task.train_ids) or te.shape[0] != len(task.test_ids) or tr.shape[1] != te.shape[1]:
        raise ValueError(f"embeddings {tr.shape}/{te.shape} do not match the task "
                         f"({len(task.train_ids)} train, {len(task.test_ids)} test)")
    return ovr_tagging(tr, te, task, C=C)


def align_label_scores(scores, names: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, int]:
    """A model's ``(N, H)`` label scores over its own label ``names`` as ``(N, L)`` scores over the
    task's ``labels`` (matched after :func:`~mmemb.data.labels.normalize_label`). A task label the model
    does not know scores below every known label of the row (the model cannot predict it; never a
    favour). Returns the scores and how many task labels were unknown."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(f"scores of shape {scores.shape} do not match the {len(names)} label names")
    if not np.isfinite(scores).all():
        raise ValueError("the model's label scores contain NaN or infinity")
    col = {normalize_label(n): i for i, n in enumerate(names)}
    floor = (scores.min(axis=1, keepdims=True) if scores.size else np.zeros((len(scores), 1))) - 1.0  # (N, 1)
    out = np.repeat(floor, len(labels), axis=1)  # (N, L)
    known = [(j, col[t]) for j, t in enumerate(labels) if t in col]
    if known:
        dst, src = (np.array(x) for x in zip(*known))
        out[:, dst] = scores[:, src]
    return out, len(labels) - len(known)


def evaluate_head_scores(scores, names: Sequence[str], task: KuaiRecTaggingTask) -> dict[str, float]:
    """Tagging metrics of a model's own label head: ``scores`` ``(N_test, H)`` aligned with
    ``task.test_ids``, over the model's label ``names`` (:func:`align_label_scores`; the count of task
    labels the head does not know is ``n_labels_unknown``)."""
    t0 = time.perf_counter()
    if len(scores) != len(task.test_ids):
        raise ValueError(f"{len(scores)} rows of head scores for {len(task.test_ids)} test videos")
    aligned, unknown = align_label_scores(scores, names, task.labels)
    out = tagging_metrics(aligned, task.test_targets, ks=(1, 5))
    out["n_labels_unknown"] = float(unknown)
    out["seconds"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- category probe


def _category_ids(task: KuaiRecTaggingTask) -> tuple[np.ndarray, np.ndarray]:
    names = sorted({c for c in task.train_categories + task.test_categories if c})
    col = {c: i for i, c in enumerate(names)}
    enc = lambda cs: np.array([col[c] if c else -1 for c in cs], dtype=np.int64)  # noqa: E731
    return enc(task.train_categories), enc(task.test_categories)


def category_probe_tfidf(task: KuaiRecTaggingTask, features=None, svd_dims: int = 256, seed: int = 0) -> dict[str, float]:
    """Level-2 category probe on TF-IDF reduced by ``TruncatedSVD(svd_dims)`` (fitted on train)."""
    from sklearn.decomposition import TruncatedSVD

    t0 = time.perf_counter()
    train_x, test_x, _ = features or tfidf_features(task)
    svd = TruncatedSVD(n_components=min(svd_dims, train_x.shape[1] - 1), random_state=seed)
    ztr = svd.fit_transform(train_x)
    zte = svd.transform(test_x)
    ytr, yte = _category_ids(task)
    out = linear_probe(ztr, ytr, zte, yte, seed=seed)
    out["seconds"] = time.perf_counter() - t0
    return out


def category_probe_embeddings(train_emb, test_emb, task: KuaiRecTaggingTask, seed: int = 0) -> dict[str, float]:
    """Level-2 category probe (:func:`mmemb.eval.probe.linear_probe`) on frozen embeddings."""
    t0 = time.perf_counter()
    ytr, yte = _category_ids(task)
    out = linear_probe(train_emb, ytr, test_emb, yte, seed=seed)
    out["seconds"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- runner


def run_kuairec_benchmark(
    csv_path: str | Path,
    embed_fn: EmbedFn | None = None,
    progress: bool = True,
    max_rows: int | None = None,
    embed_name: str = "mmemb",
    split: SplitConfig | None = None,
) -> list[dict]:
    """All KuaiRec rows: baselines, and ``embed_fn`` (texts -> ``(N, D)``) rows when given.

    Each row: ``method``, ``task`` (``tagging`` or ``category_l2``), the metrics and ``seconds``.
    """
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    task = prepare_kuairec_tagging(csv_path, max_rows=max_rows, split=split)
    info = task.summary()
    say(f"[kuairec] data prepared in {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k}={int(v)}" for k, v in info.items()))
    rows: list[dict] = []

    def add(method: str, name: str, metrics: dict) -> None:
        row = {"method": method, "task": name, **metrics}
        rows.append(row)
        say(f"[kuairec] {method} / {name}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    add("label_popularity", "tagging", popularity_baseline(task))
    tv = time.perf_counter()
    feats = tfidf_features(task)
    vec_seconds = time.perf_counter() - tv
    tag = tfidf_baseline(task, features=feats)
    tag["seconds"] += vec_seconds
    add("tfidf_char13_lr", "tagging", tag)
    add("tfidf_char13_svd256_lr", "category_l2", category_probe_tfidf(task, features=feats))
    if embed_fn is not None:
        te = time.perf_counter()
        tr_emb = np.asarray(embed_fn(task.train_texts), dtype=np.float32)
        te_emb = np.asarray(embed_fn(task.test_texts), dtype=np.float32)
        embed_seconds = time.perf_counter() - te
        say(f"[kuairec] {embed_name}: embedded {len(tr_emb) + len(te_emb)} texts in {embed_seconds:.1f}s")
        add(embed_name, "tagging", {**evaluate_embeddings(tr_emb, te_emb, task), "embed_seconds": embed_seconds})
        add(embed_name, "category_l2", category_probe_embeddings(tr_emb, te_emb, task))
    for row in rows:
        row.update({f"data_{k}": v for k, v in info.items()})
    return rows


_TAG_COLS = ("p1", "r5", "map", "n_samples", "n_excluded", "n_labels_unknown", "seconds")
_PROBE_COLS = ("accuracy", "macro_f1", "chance_majority", "chance_uniform", "num_classes", "n_test", "seconds")


def _fmt(v) -> str:
    if isinstance(v, float):
        if np.isnan(v):
            return "nan"
        return str(int(v)) if v.is_integer() and abs(v) >= 1 else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: Sequence[dict]) -> str:
    """Markdown tables, one per task (tagging, category probe, or any other task found)."""
    out = []
    for name in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == name]
        cols = _TAG_COLS if name == "tagging" else _PROBE_COLS if name.startswith("category") else tuple(
            k for k in sub[0] if k not in ("method", "task") and not k.startswith("data_"))
        cols = tuple(c for c in cols if any(c in r for r in sub))
        out.append(f"### {name}\n")
        out.append("| method | " + " | ".join(cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        for r in sub:
            out.append(f"| {r['method']} | " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
        out.append("")
    return "\n".join(out)
