"""The label-weighting switches the ablation configs turn: clicks off, label IDF off."""

from __future__ import annotations

import pytest

from mmemb.data.datamodule import SplitConfig, VideoDataModule
from mmemb.data.manifest import Query, VideoRecord, write_manifest
from mmemb.data.vocab import LabelConfig, Vocabularies
from mmemb.errors import ConfigError


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


def _tag_manifest(tmp_path):
    """12 videos: "common" on all of them, "rare" on 3 (a higher IDF)."""
    records = [VideoRecord(id=str(i), caption=f"video {i}", hashtags=["common"] + (["rare"] if i < 3 else []))
               for i in range(12)]
    return write_manifest(records, tmp_path / "tags.jsonl")


@pytest.mark.parametrize("weighting", ["softmax", "bce_global"])
def test_label_idf_off_weighs_every_label_alike(tmp_path, weighting):
    weights = {}
    for idf in (True, False):
        labels = LabelConfig(hashtag_min_freq=1, clean=False, weighting=weighting, idf=idf)
        dm = VideoDataModule(str(_tag_manifest(tmp_path)), labels=labels, split=SplitConfig(0.0, 0.0), num_workers=0)
        batch = dm.collate_fn([dm._dataset("train")[0]])  # video 0: common and rare
        row = batch["hashtag_weights"][0]  # (H,)
        weights[idf] = [row[dm.vocabs.hashtags.index(t)].item() for t in ("common", "rare")]
        assert bool((dm.vocabs.hashtag_idf == 1).all()) is not idf  # "common" is on every video: IDF 1 either way
    assert weights[True][1] > weights[True][0]  # the rarer tag weighs more with the IDF
    assert weights[False][0] == pytest.approx(weights[False][1])  # and alike without it
    if weighting == "softmax":
        assert weights[False] == pytest.approx([0.5, 0.5])
    else:  # bce_global: the mean positive mass is 1 without the IDF
        assert weights[False] == pytest.approx([1.0, 1.0])


def test_a_vocab_folder_saved_without_label_idf_is_not_reused_with_it(tmp_path):
    manifest, folder = str(_tag_manifest(tmp_path)), str(tmp_path / "vocab")

    def module(idf):
        labels = LabelConfig(hashtag_min_freq=1, clean=False, idf=idf)
        return VideoDataModule(manifest, labels=labels, split=SplitConfig(0.0, 0.0), num_workers=0, vocab_dir=folder)

    module(False).vocabs.save(folder)  # as an `idf: false` run leaves its vocab/
    assert Vocabularies.load(folder).label_idf is False
    again = module(False).vocabs  # the same setting reuses it
    assert again.label_idf is False and bool((again.hashtag_idf == 1).all())
    with pytest.raises(ConfigError, match=r"vocab\.json: saved by a run with data\.labels\.idf: false"):
        module(True).vocabs  # would silently train with IDFs of 1
    fresh = tmp_path / "fresh"
    module_idf = VideoDataModule(manifest, labels=LabelConfig(hashtag_min_freq=1, clean=False), num_workers=0,
                                 split=SplitConfig(0.0, 0.0))
    module_idf.vocabs.save(fresh)
    assert Vocabularies.load(fresh).label_idf is True and float(Vocabularies.load(fresh).hashtag_idf.max()) > 1
