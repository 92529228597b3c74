"""Fit a label head's wide part to convergence: one-vs-rest logistic regression over its pooled n-grams.

A wide part (:class:`~mmemb.models.ngram.NgramBag` whose rows are label scores, ``ModelConfig.wide_ngram_heads``)
is a linear model of the text's hashed char n-grams. Trained by SGD inside the model, for the few epochs the
deep part needs, it stays well below the same linear model fitted to convergence (README, "The KuaiRec text
model"). :func:`fit_wide_part` fits it the way TF-IDF + logistic regression is fitted: the bag's own pooled
features (:func:`pooled_features`, the exact vectors its forward sums) as a sparse matrix, and per label a
``LogisticRegression(solver="liblinear")`` (L2, inverse strength ``C``, with the label's intercept in the bag's
``bias``); its weights are then written into the bag's table. The model then treats the part as fixed
(``EmbeddingModule(wide_fit="liblinear")``): the deep head learns on top of its scores, in training
the out-of-fold scores of the train rows (cross-fitting, ``folds``), which a model that did not see the row
gave, as at test time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .ngram import PAD, NgramBag, sublinear_l2_weights

__all__ = ["WideFit", "pooled_features", "fit_wide_part"]

# labels whose train column is constant get no classifier: the intercept alone says "always" or "never"
_CONSTANT_LOGIT = 20.0


@dataclass(frozen=True)
class WideFit:
    """What :func:`fit_wide_part` did: the rows and labels it saw, the labels fitted by a classifier (the
    others are constant in the train rows: all negative, or all positive) and the mean train log-loss."""

    rows: int
    labels: int
    fitted: int
    constant: int
    train_log_loss: float

    def summary(self) -> str:
        return (f"{self.labels} labels over {self.rows} train rows: {self.fitted} fitted, {self.constant} constant; "
                f"train log-loss {self.train_log_loss:.4f}")


def pooled_features(bag: NgramBag, ids: torch.Tensor, chunk: int = 512) -> sp.csr_matrix:
    """``(N, num_buckets + 1)`` sparse float32 matrix of ``ids`` ``(N, G)`` (bucket + 1, 0 = padding): row ``i``
    holds the weight the bag's pooling gives each id of row ``i`` (``mean``: ``1 / count`` per occurrence;
    ``l2_sublinear``: :func:`~mmemb.models.ngram.sublinear_l2_weights`), summed over repeats, so that
    ``X @ table`` is the bag's pooled output without the bias. Column 0 (padding) stays empty."""
    if ids.dim() != 2:
        raise ValueError(f"pooled_features: ids must be (N, G), got shape {tuple(ids.shape)}")
    n, width = ids.shape[0], bag.num_buckets + 1
    blocks = []
    for start in range(0, n, chunk):
        part = ids[start:start + chunk].long()  # (b, G)
        keep = part != PAD  # (b, G)
        if bag.pooling == "l2_sublinear":
            weights = sublinear_l2_weights(part).double()  # (b, G)
        else:
            weights = keep.double() / keep.sum(dim=1, keepdim=True).clamp(min=1)  # (b, G)
        rows = torch.arange(part.shape[0]).unsqueeze(1).expand_as(part)[keep]  # (nnz,)
        block = sp.coo_matrix((weights[keep].float().numpy(), (rows.numpy(), part[keep].numpy())),
                              shape=(part.shape[0], width))
        blocks.append(block.tocsr())  # duplicates (repeated ids) are summed
    # float32: liblinear fitted it 2.7 times faster than float64 (8 KuaiRec labels, 0.54 s against 1.45 s each)
    return sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, width), dtype=np.float32)


def _fit_labels(x: sp.csr_matrix, y: np.ndarray, C: float, with_bias: bool, n_jobs: int,
                desc: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(coef (D, L), intercept (L,), labels fitted)`` of one L2 logistic regression (liblinear) per column of
    ``y`` ``(N, L)`` on ``x`` ``(N, D)``; a constant column gets zero weights and an intercept of +-20 (0 without
    a bias). The labels are spread over ``n_jobs`` threads (liblinear releases the GIL)."""
    from joblib import Parallel, delayed
    from sklearn.linear_model import LogisticRegression

    def one(j: int) -> tuple[np.ndarray, float, bool]:
        positives = int(y[:, j].sum())
        if positives in (0, len(y)):
            return np.zeros(x.shape[1]), (_CONSTANT_LOGIT if positives else -_CONSTANT_LOGIT) * with_bias, False
        clf = LogisticRegression(C=C, solver="liblinear", fit_intercept=with_bias, max_iter=200)
        clf.fit(x, y[:, j])
        return clf.coef_[0], float(clf.intercept_[0]) if with_bias else 0.0, True

    labels = range(y.shape[1])
    if desc is not None:
        from tqdm.auto import tqdm

        labels = tqdm(labels, desc=desc, unit="label")
    results = Parallel(n_jobs=n_jobs, backend="threading")(delayed(one)(j) for j in labels)
    coef = np.stack([c for c, _, _ in results], axis=1) if results else np.zeros((x.shape[1], 0))  # (D, L)
    intercept = np.array([b for _, b, _ in results], dtype=np.float64)  # (L,)
    coef[PAD] = 0.0
    return coef, intercept, sum(f for _, _, f in results)


def fit_wide_part(bag: NgramBag, ids: torch.Tensor, targets: torch.Tensor, C: float = 16.0, folds: int = 0,
                  seed: int = 0, n_jobs: int = 2, progress: bool = False) -> tuple[WideFit, np.ndarray | None]:
    """Fit ``bag`` (width = the number of labels) to ``targets`` ``(N, L)`` (multi-hot) from the n-gram
    ``ids`` ``(N, G)`` of the same rows: per label an L2 logistic regression (liblinear, inverse regularisation
    strength ``C``, as :func:`mmemb.eval.kuairec_bench.tfidf_baseline`); the coefficients replace the bag's
    table (padding row 0 stays zero) and the intercepts its ``bias`` (a bag without one is fitted without an
    intercept). A label constant over the rows gets zero weights and an intercept of +-20 (without a bias:
    zeros). Runs without gradient; the bag's parameters keep their dtype and device.

    With ``folds`` >= 2 it also returns the out-of-fold scores ``(N, L)``: the rows split into ``folds`` random
    parts (``seed``), each part scored by a model fitted on the others, so that a row's score comes from a
    model that did not see it, as a validation or test row's does (what a model stacked on the bag's scores
    must train on: the bag's scores of its own train rows are over-confident). Else ``None``.
    """
    if C <= 0:
        raise ValueError(f"fit_wide_part: C must be > 0, got {C}")
    if folds == 1 or folds < 0:
        raise ValueError(f"fit_wide_part: folds must be 0 (no out-of-fold scores) or >= 2, got {folds}")
    if targets.dim() != 2 or targets.shape[1] != bag.bag.embedding_dim or targets.shape[0] != ids.shape[0]:
        raise ValueError(f"fit_wide_part: targets must be (N, {bag.bag.embedding_dim}) for ids of {ids.shape[0]} "
                         f"rows, got shape {tuple(targets.shape)}")
    if folds > ids.shape[0]:
        raise ValueError(f"fit_wide_part: {folds} folds need at least as many rows, got {ids.shape[0]}")
    x = pooled_features(bag, ids.cpu())  # (N, buckets + 1)
    y = (targets.cpu().numpy() > 0).astype(np.int64)  # (N, L)
    with_bias = bag.bias is not None
    desc = "fitting the wide part (liblinear)" if progress else None
    coef, intercept, fitted = _fit_labels(x, y, C, with_bias, n_jobs, desc)
    logits = np.asarray(x @ coef) + intercept  # (N, L)
    loss = float(np.mean(np.logaddexp(0.0, logits) - y * logits))  # mean one-vs-rest log-loss
    with torch.no_grad():
        bag.bag.weight.copy_(torch.from_numpy(coef).to(bag.bag.weight))
        if with_bias:
            bag.bias.copy_(torch.from_numpy(intercept).to(bag.bias))
    report = WideFit(rows=int(x.shape[0]), labels=int(y.shape[1]), fitted=fitted,
                     constant=int(y.shape[1]) - fitted, train_log_loss=loss)
    if not folds:
        return report, None
    fold = np.random.default_rng(seed).permutation(len(y)) % folds  # (N,) each row's part
    oof = np.zeros(y.shape, dtype=np.float32)  # (N, L)
    for k in range(folds):
        held = fold == k
        desc_k = f"out-of-fold scores, fold {k + 1}/{folds}" if progress else None
        coef_k, intercept_k, _ = _fit_labels(x[~held], y[~held], C, with_bias, n_jobs, desc_k)
        oof[held] = np.asarray(x[held] @ coef_k) + intercept_k  # (n_k, L)
    return report, oof
