"""The label-weighting switches the ablation configs turn: clicks off."""

from __future__ import annotations

import pytest

from mmemb.data.datamodule import SplitConfig, VideoDataModule
from mmemb.data.manifest import Query, VideoRecord, write_manifest
from mmemb.data.vocab import LabelConfig


def _manifest(tmp_path):
    records = [VideoRecord(id=str(i), caption=f"video {i}", queries=[Query("cats", 50.0), Query("dogs", 0.0)])
               for i in range(12)]
    return write_manifest(records, tmp_path / "m.jsonl")


@pytest.mark.parametrize("clicks", [True, False])
def test_clicks_off_counts_every_query_once(tmp_path, clicks):
    labels = LabelConfig(query_min_freq=1, clicks=clicks)
    dm = VideoDataModule(str(_manifest(tmp_path)), labels=labels, split=SplitConfig(0.0, 0.0), num_workers=0)
    train = dm.splits["train"]
    assert [q.clicks for q in train[0].queries] == ([50.0, 0.0] if clicks else [1.0, 1.0])
    weights = dm.collate_fn([dm._dataset("train")[0]])["query_weights"][0]  # (Q,)
    cats, dogs = (weights[dm.vocabs.queries.index(name)].item() for name in ("cats", "dogs"))
    assert (cats > dogs) if clicks else cats == pytest.approx(dogs)  # same idf: only clicks tell them apart


def test_clicks_off_needs_the_manifest_loader(tmp_path):
    with pytest.raises(ValueError, match="labels.clicks=false"):
        VideoDataModule(str(tmp_path / "m.jsonl"), shards=str(tmp_path), labels=LabelConfig(clicks=False))
