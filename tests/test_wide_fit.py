"""Fitting a label head's wide part to convergence (mmemb.models.wide_fit): the features are the bag's own
pooled n-grams, the fitted bag ranks held-out rows by their labels' n-grams, and the out-of-fold scores of
cross-fitting come from models that did not see the row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.eval.tagging import tagging_metrics
from mmemb.models.ngram import NgramBag
from mmemb.models.wide_fit import fit_wide_part, pooled_features

BUCKETS, LABELS = 60, 4


@pytest.mark.parametrize("pooling", ["mean", "l2_sublinear"])
def test_pooled_features_are_the_vectors_the_bag_sums(pooling):
    """``X @ table + bias`` is the bag's forward, with repeated ids, an empty row and padding."""
    torch.manual_seed(0)
    bag = NgramBag(BUCKETS, LABELS, pooling=pooling, bias=True)
    with torch.no_grad():
        bag.bias.normal_()
    ids = torch.randint(0, BUCKETS + 1, (40, 9))
    ids[3] = 0  # no n-gram at all
    ids[5, :6] = 7  # one id six times
    x = pooled_features(bag, ids, chunk=16)  # several chunks
    assert x.shape == (40, BUCKETS + 1) and x[:, 0].nnz == 0 and x[3].nnz == 0
    expected, _ = bag(ids)
    got = torch.from_numpy(x @ bag.bag.weight.detach().numpy()) + bag.bias
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)


def _task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of 8 random n-grams; label j is present when the row holds one of the ids 1 + 5j .. 5 + 5j
    (label 3 never): a linear model of the n-grams can learn every present label."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, BUCKETS + 1, (n, 8), generator=g)
    targets = torch.zeros(n, LABELS)
    for j in range(LABELS - 1):
        targets[:, j] = ((ids >= 1 + 5 * j) & (ids <= 5 + 5 * j)).any(dim=1).float()
    return ids, targets


def test_the_fitted_bag_ranks_held_out_rows_by_their_labels():
    ids, targets = _task(400, seed=0)
    test_ids, test_targets = _task(200, seed=1)
    bag = NgramBag(BUCKETS, LABELS, pooling="l2_sublinear", bias=True)
    before = tagging_metrics(bag(test_ids)[0].detach().numpy(), test_targets.numpy())["map"]
    report, oof = fit_wide_part(bag, ids, targets, C=16.0)
    assert oof is None and report.rows == 400 and report.labels == LABELS
    assert report.fitted == LABELS - 1 and report.constant == 1  # label 3 never occurs
    scores = bag(test_ids)[0].detach()
    after = tagging_metrics(scores.numpy(), test_targets.numpy())["map"]
    assert after > 0.95 and after > before + 0.3, (before, after)
    assert bool((scores[:, 3] < -10).all())  # the constant label: its intercept alone, "never"
    assert float(bag.bag.weight[0].detach().abs().sum()) == 0.0  # padding row
    assert report.train_log_loss < 0.2


def test_without_a_bias_the_fit_has_no_intercept():
    ids, targets = _task(300, seed=0)
    bag = NgramBag(BUCKETS, LABELS, pooling="mean")
    fit_wide_part(bag, ids, targets, C=4.0)
    empty = torch.zeros(1, 8, dtype=torch.long)
    assert float(bag(empty)[0].detach().abs().sum()) == 0.0  # no n-gram, no bias: zero scores
    assert float(bag.bag.weight[1:].detach().abs().sum()) > 0


def test_out_of_fold_scores_come_from_models_that_did_not_see_the_row():
    """Each row's out-of-fold score is the score of a model fitted on the other folds: on a row whose
    labels are noise (flipped), the in-sample model is pulled toward the noise, the out-of-fold one is not."""
    ids, targets = _task(300, seed=0)
    noisy = targets.clone()
    noisy[:30, 0] = 1 - noisy[:30, 0]  # 30 rows with a wrong label 0
    bag = NgramBag(BUCKETS, LABELS, pooling="l2_sublinear", bias=True)
    report, oof = fit_wide_part(bag, ids, noisy, C=256.0, folds=5, seed=0)
    assert oof.shape == (300, LABELS) and oof.dtype == np.float32
    in_sample = bag(ids)[0].detach().numpy()
    wrong = noisy[:30, 0].numpy() > 0
    agree_in = np.mean((in_sample[:30, 0] > 0) == wrong)  # the in-sample model follows the flipped labels more
    agree_oof = np.mean((oof[:30, 0] > 0) == wrong)
    assert agree_oof < agree_in, (agree_oof, agree_in)
    _, again = fit_wide_part(NgramBag(BUCKETS, LABELS, pooling="l2_sublinear", bias=True), ids, noisy, C=256.0,
                             folds=5, seed=0)
    np.testing.assert_array_equal(again, oof)  # deterministic (a resumed run refits the same)


@pytest.mark.parametrize("kwargs, match", [({"C": 0.0}, "C must be > 0"), ({"folds": 1}, "folds must be 0"),
                                           ({"folds": 1000}, "1000 folds need")])
def test_bad_arguments_are_refused(kwargs, match):
    ids, targets = _task(50, seed=0)
    with pytest.raises(ValueError, match=match):
        fit_wide_part(NgramBag(BUCKETS, LABELS, bias=True), ids, targets, **kwargs)
    with pytest.raises(ValueError, match="targets must be"):
        fit_wide_part(NgramBag(BUCKETS, LABELS, bias=True), ids, targets[:, :2])
