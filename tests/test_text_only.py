"""Training on a manifest without clips: the best checkpoint is chosen by a metric that exists.

The configs keep the best checkpoint by ``val/t2v_r1_category``, which is NaN when no validation video
has a clip. ``fit`` switches such a monitor to ``val/hashtag_map`` when the validation videos carry
hashtags, and otherwise stops before training with a one-line error naming the options
(:mod:`mmemb.lit.monitor`).
"""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
from conftest import REPO
from pytorch_lightning.callbacks import ModelCheckpoint

from mmemb.data.manifest import read_manifest, write_manifest
from mmemb.errors import ConfigError
from mmemb.lit.monitor import ValidationContent, adapt_checkpoint_monitors

CONFIGS = REPO / "configs"


def _checkpoint(monitor="val/t2v_r1_category"):
    return ModelCheckpoint(monitor=monitor, mode="max", save_top_k=1, auto_insert_metric_name=False,
                           filename="best-epoch{epoch:02d}-t2v_r1_category{val/t2v_r1_category:.3f}")


def test_a_retrieval_monitor_without_clips_switches_to_hashtag_map():
    cb, last = _checkpoint(), ModelCheckpoint(save_top_k=1, filename="last")
    changes = adapt_checkpoint_monitors([cb, last], ValidationContent(20, 0, 7), 12, "m.jsonl")
    assert cb.monitor == "val/hashtag_map" and cb.mode == "max"
    assert cb.filename == "best-epoch{epoch:02d}-hashtag_map{val/hashtag_map:.3f}"
    assert last.monitor is None and len(changes) == 1 and "7 carry hashtags" in changes[0]


def test_monitors_the_data_can_compute_are_left_alone():
    cb = _checkpoint()
    assert adapt_checkpoint_monitors([cb], ValidationContent(20, 1, 0), 0, "m.jsonl") == []
    assert cb.monitor == "val/t2v_r1_category"
    loss = ModelCheckpoint(monitor="val/loss", mode="min")
    assert adapt_checkpoint_monitors([loss], ValidationContent(20, 0, 0), 0, "m.jsonl") == []
    assert loss.monitor == "val/loss" and loss.mode == "min"


@pytest.mark.parametrize("monitor,content,num_hashtags", [
    ("val/t2v_r1_category", ValidationContent(20, 0, 0), 5),  # no clip, no labelled validation video
    ("val/t2v_r1_category", ValidationContent(20, 0, 3), 0),  # no hashtag vocabulary
    ("val/hashtag_map", ValidationContent(20, 20, 0), 5),  # a hashtag monitor without labelled videos
])
def test_a_monitor_that_cannot_be_computed_is_an_error_naming_the_options(monitor, content, num_hashtags):
    with pytest.raises(ConfigError, match=r"m\.jsonl.*monitor: val/loss.*monitor: null") as err:
        adapt_checkpoint_monitors([_checkpoint(monitor)], content, num_hashtags, "m.jsonl")
    assert "\n" not in str(err.value) and monitor in str(err.value)


def _train(args):
    spec = importlib.util.spec_from_file_location("_script_train", REPO / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    return train.main(["fit", "--config", str(CONFIGS / "tiny.yaml"), *args])


def _args(manifest, root):
    return ["--data.manifest", str(manifest), "--trainer.default_root_dir", str(root),
            "--trainer.logger.init_args.save_dir", str(root), "--data.num_workers=0", "--data.batch_size=16",
            "--data.labels.hashtag_min_freq=2", "--data.split.val_fraction=0.25", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2"]


def test_fit_on_a_text_only_manifest_keeps_the_best_checkpoint_by_hashtag_map(kuairec_text_only, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert not any(r.video for r in read_manifest(kuairec_text_only))
    cli = _train(_args(kuairec_text_only, tmp_path))
    best = next(cb for cb in cli.trainer.checkpoint_callbacks if cb.monitor)
    assert best.monitor == "val/hashtag_map"
    assert best.best_model_score is not None and math.isfinite(float(best.best_model_score))
    assert best.best_model_path.endswith(f"hashtag_map{float(best.best_model_score):.3f}.ckpt")
    assert math.isnan(float(cli.trainer.callback_metrics["val/t2v_r1_category"]))  # what it replaced


def test_fit_on_text_only_data_without_hashtags_stops_before_training(kuairec_text_only, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    records = read_manifest(kuairec_text_only)
    for r in records:
        r.hashtags = []
    write_manifest(records, tmp_path / "no_tags.jsonl")
    with pytest.raises(ConfigError, match="val/t2v_r1_category.*no_tags.jsonl.*tiny.yaml"):
        _train(_args(tmp_path / "no_tags.jsonl", tmp_path / "run"))
    assert not list((tmp_path / "run").glob("version_*/checkpoints/*.ckpt"))
