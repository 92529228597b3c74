"""evaluate.py's building blocks: module choice, task metrics, ensembles of outputs, progress, parsing.

The end-to-end commands on tiny checkpoints are in test_evaluate_cli.py.
"""

import importlib.util
import io
import math

import numpy as np
import pytest
import torch

from conftest import REPO

from mmemb.eval.report import LineProgress, progress
from mmemb.eval.tagging import tagging_metrics
from mmemb.eval.tasks import (
    SplitOutputs,
    call_hashtag_scores,
    ensemble_outputs,
    hashtag_task,
    probe_task,
    task_metrics,
)


def _evaluate_script():
    spec = importlib.util.spec_from_file_location("_evaluate_script", REPO / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- hashtags


def test_hashtag_metrics_skip_unlabelled_videos_and_report_popularity():
    targets = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], np.float32)  # the third video has no hashtag
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.3], [0.0, 0.0, 1.0]])
    train = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)  # popularity 2/3, 1/3, 0
    m = hashtag_task(scores, targets, train)
    # AP 1 (label at rank 1) and 1/3 (rank 3); counting the unlabelled video as AP 0 would give 4/9
    assert m["hashtag_map"] == pytest.approx(2 / 3)
    assert m["hashtag_p1"] == pytest.approx(0.5) and m["hashtag_r5"] == pytest.approx(1.0)
    assert m["hashtag_n_samples"] == 2 and m["hashtag_n_excluded"] == 1
    # popularity ranks label 0, 1, 2 for every video: ranks 1 and 3 again, but P@1 only for video 0
    assert m["hashtag_map_popularity"] == pytest.approx(2 / 3)
    assert m["hashtag_p1_popularity"] == pytest.approx(0.5)
    # without scores (a model with no hashtag head and no zero-shot scorer): the baseline alone
    base = hashtag_task(None, targets, train)
    assert "hashtag_map" not in base and base["hashtag_map_popularity"] == pytest.approx(2 / 3)
    assert hashtag_task(scores, np.zeros((3, 0)), None) == {}  # no hashtag vocabulary


class _Module:
    def __init__(self, method):
        if method is not None:
            self.hashtag_scores = method


def test_hashtag_scores_prefer_the_module_method_and_fall_back_to_logits():
    logits = torch.tensor([[1.0, 2.0]])
    out, batch = {"hashtag_logits": logits, "video": torch.ones(1, 3)}, {"ids": ["a"]}
    assert call_hashtag_scores(_Module(None), out, batch) is logits
    assert call_hashtag_scores(_Module(lambda o: None), out, batch) is logits  # the method knows no hashtags
    assert torch.equal(call_hashtag_scores(_Module(lambda o: o["video"][:, :2] * 3), out, batch), torch.full((1, 2), 3.0))
    seen = {}
    call_hashtag_scores(_Module(lambda o, batch=None: seen.setdefault("batch", batch)), out, batch)
    assert seen["batch"] is batch  # passed when the method takes it
    assert call_hashtag_scores(_Module(None), {"video": torch.ones(1, 3)}, batch) is None


# ----------------------------------------------------------------------------- probe


def test_probe_uses_only_the_rows_that_have_the_embedding():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]  # separable classes
    mask = np.ones(60, bool)
    mask[::3] = False
    x_bad = x.copy()
    x_bad[~mask] = 0.0  # missing modality: zero rows, which must not be trained or scored on
    m = probe_task("video", x_bad, mask, y, x_bad, mask, y)
    assert m["probe_video_n_train"] == mask.sum() == m["probe_video_n_test"]
    assert m["probe_video_accuracy"] > 0.95
    assert m["probe_video_chance_majority"] == pytest.approx(1 / 3, abs=0.05)
    assert probe_task("video", x, mask, np.zeros(60, int), x, mask, y) == {}  # one class: skipped, no crash


# ----------------------------------------------------------------------------- ensembles


def _outputs(n=30, d=8, labels=5, seed=0, order=None) -> SplitOutputs:
    rng = np.random.default_rng(seed)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    targets = (rng.random((n, labels)) < 0.3).astype(np.float32)
    out = SplitOutputs(ids=[f"v{i}" for i in range(n)], video=unit(rng.normal(size=(n, d))),
                       text=unit(rng.normal(size=(n, d))), video_mask=np.ones(n, bool), text_mask=np.ones(n, bool),
                       category=np.arange(n) % 3, multimodal=unit(rng.normal(size=(n, d))),
                       multimodal_mask=np.ones(n, bool), hashtag_scores=rng.normal(size=(n, labels)) * 5,
                       hashtag_targets=targets)
    out.video[3] = 0.0  # one video failed to decode
    out.video_mask[3] = False
    return out if order is None else out.take(np.asarray(order))


def test_self_ensemble_has_the_model_metrics_and_members_are_aligned_by_id():
    a = _outputs()
    train = _outputs(seed=1)
    alone = task_metrics(a, train, train.hashtag_targets)
    shuffled = _outputs(order=np.random.default_rng(2).permutation(30))
    both = task_metrics(ensemble_outputs([a, shuffled], [1.0, 1.0]), ensemble_outputs([train, train], [1, 1]),
                        train.hashtag_targets)
    for key in alone:
        if key.startswith(("t2v", "v2t", "hashtag", "n_", "chance")):
            assert both[key] == pytest.approx(alone[key], nan_ok=True), key
    assert both["n_video"] == 29
    assert "probe_video_accuracy" in both and "probe_multimodal_accuracy" in both
    mixed = task_metrics(ensemble_outputs([a, _outputs(seed=5)], [1.0, 1.0]))
    assert mixed["t2v_r1_category"] != alone["t2v_r1_category"] or mixed["t2v_medr_category"] != alone[
        "t2v_medr_category"]
    with pytest.raises(ValueError, match="other samples"):
        ensemble_outputs([a, _outputs(n=29)], [1.0, 1.0])
    bad = _outputs()
    bad.category = bad.category[::-1].copy()
    with pytest.raises(ValueError, match="categories"):
        ensemble_outputs([a, bad], [1.0, 1.0])


# ----------------------------------------------------------------------------- reporting and parsing


def test_progress_in_logs_writes_whole_lines():
    stream = io.StringIO()
    assert list(progress(range(3), desc="embedding test", unit="batch", stream=stream, interval=0)) == [0, 1, 2]
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert "embedding test: start (3 batches)" in lines[0]
    assert "embedding test: 2/3 batches (67%)" in text and "left" in text
    assert "embedding test: done, 3/3 batches (100%)" in lines[-1]
    quiet = io.StringIO()
    assert list(progress([1, 2], enabled=False, stream=quiet)) == [1, 2] and quiet.getvalue() == ""
    throttled = io.StringIO()
    bar = LineProgress(total=1000, desc="x", stream=throttled, interval=3600)
    for _ in range(1000):
        bar.update()
    bar.close()
    bar.close()
    assert len(throttled.getvalue().splitlines()) == 2  # start and done only


def test_markdown_table_shows_baselines_and_counts():
    evaluate = _evaluate_script()
    metrics = {"t2v_r1_category": 0.5, "t2v_r1_category_chance": 0.25, "t2v_medr_category": 2.0,
               "hashtag_map": 0.4, "hashtag_map_popularity": 0.2, "hashtag_p1_popularity": 0.1,
               "hashtag_n_samples": 7.0, "hashtag_n_excluded": 3.0, "probe_video_accuracy": 0.9,
               "probe_video_chance_majority": 0.3, "probe_video_n_train": 50.0, "probe_video_n_test": 10.0,
               "n_text": 10.0, "n_video": 9.0}
    table = evaluate.markdown_table(metrics)
    assert table.splitlines()[0] == "| metric | value | chance |"
    assert "| t2v_r1_category | 0.5000 | 0.2500 |" in table
    assert "| hashtag_map | 0.4000 | 0.2000 (label popularity) |" in table
    assert "| hashtag_p1 | – | 0.1000 (label popularity) |" in table
    assert "| probe_video_accuracy | 0.9000 | 0.3000 (majority class) |" in table
    assert "| videos with / without hashtags | 7 / 3 | |" in table and "| probe train / test videos | 50 / 10 | |" in table


def test_ensemble_specs_and_the_default_command():
    evaluate = _evaluate_script()
    labels, sources = ["a", "b"], ["runs/a", "runs/b"]
    assert evaluate.parse_ensemble("1,2", labels, sources) == [(0, 1.0), (1, 1.0)]
    assert evaluate.parse_ensemble("a:0.7, b:0.3", labels, sources) == [(0, 0.7), (1, 0.3)]
    assert evaluate.parse_ensemble("runs/b:2,1", labels, sources) == [(1, 2.0), (0, 1.0)]
    from mmemb.errors import InputError

    for bad in ("3", "c", "1:-1", "1:0"):
        with pytest.raises(InputError):  # printed as one line by the command
            evaluate.parse_ensemble(bad, labels, sources)
    assert evaluate._with_command(["--run", "runs/x"]) == ["tasks", "--run", "runs/x"]
    assert evaluate._with_command(["sweep", "--quick"]) == ["sweep", "--quick"]


def test_default_sweep_grid_fits_the_data():
    evaluate = _evaluate_script()
    big = evaluate.default_grid(1_000_000, 128)
    assert big["nlist"] == (1024, 4096) and big["pq_bytes"] == (16, 32, 64) and big["nbits"] == 8
    assert big["opq"] == (False, True)
    small = evaluate.default_grid(200, 64)
    assert max(small["nlist"]) <= 200 // 39 and 2 ** small["nbits"] <= 200 and small["opq"] == (False, True)
    assert evaluate.default_grid(40, 64)["opq"] == (False,)  # faiss's OPQ cannot train on fewer rows than dims
    quick = evaluate.default_grid(10_000, 64, quick=True)
    assert len(quick["nlist"]) == 1 and quick["pq_bytes"] == (16,) and math.log2(quick["nlist"][0]).is_integer()
    assert quick["opq"] == (False,)
