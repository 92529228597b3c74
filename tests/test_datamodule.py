import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmemb.data.batch import FIELDS, Batch, check_batch
from mmemb.data.datamodule import SplitConfig, VideoDataModule, split_records
from mmemb.data.dataset import collate
from mmemb.data.decode import DecodeConfig
from mmemb.data.manifest import read_manifest, write_manifest
from mmemb.data.shards import ShardedVideoDataset, read_shard_index, write_shards
from mmemb.data.text import hash_field_ngrams
from mmemb.data.vocab import LabelConfig, TextConfig, Vocabularies, record_texts
from mmemb.lit.callbacks import DecodeFailureSummary

DECODE = DecodeConfig(num_frames=2, frame_size=32, audio_seconds=1.0)
TEXT = TextConfig(max_length=24, vocab_size=500, ngram_buckets=1024, ngram_max_length=32)


def _dm(manifest, **kw):
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 8)
    return VideoDataModule(manifest=str(manifest), decode=DECODE, text=TEXT,
                           labels=LabelConfig(hashtag_min_freq=2), **kw)


def test_split_is_deterministic_and_disjoint(small_demo):
    records = read_manifest(small_demo)
    a = split_records(records, SplitConfig(val_fraction=0.2, test_fraction=0.2))
    b = split_records(list(reversed(records)), SplitConfig(val_fraction=0.2, test_fraction=0.2))
    ids = {k: {r.id for r in v} for k, v in a.items()}
    assert ids == {k: {r.id for r in v} for k, v in b.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(map(len, ids.values())) == len(records)
    assert 0.1 < len(ids["val"]) / len(records) < 0.3


def test_batch_follows_the_contract(small_demo, tmp_path):
    dm = _dm(small_demo, num_workers=2, vocab_dir=str(tmp_path / "vocab"))
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    b, t, s, L = 8, DECODE.num_frames, DECODE.frame_size, TEXT.max_length
    assert batch["frames"].shape == (b, t, 3, s, s) and batch["frames"].dtype == torch.uint8
    assert batch["video_mask"].dtype == torch.bool and batch["video_mask"].all()
    assert batch["audio_mask"].all()
    assert batch["mel"].shape[:2] == (b, DECODE.n_mels)
    assert batch["text_ids"].shape == (b, L) and batch["text_ids"].dtype == torch.long
    assert (batch["text_ids"][:, 0] == dm.vocabs.tokenizer.cls_id).all()
    assert ((batch["text_attention"] == 1) == (batch["text_ids"] != 0)).all()
    assert set(batch["text_field_ids"].unique().tolist()) <= {0, 1, 2, 3, 4}
    # hashed char-3-grams of the same record's text fields: bucket + 1, 0-padded
    grams = batch["text_ngrams"]
    assert grams.shape == (b, TEXT.ngram_max_length) and grams.dtype == torch.long
    assert grams.min() >= 0 and grams.max() <= TEXT.ngram_buckets and (grams[:, 0] > 0).all()
    record = next(r for r in dm.splits["train"] if r.id == batch["ids"][0])
    expected = hash_field_ngrams(record_texts(record), TEXT.ngram_max_length, 3, TEXT.ngram_buckets)
    assert grams[0, : len(expected)].tolist() == [i + 1 for i in expected] and not grams[0, len(expected):].any()
    assert batch["hashtag_targets"].shape == (b, dm.num_hashtags)
    assert ((batch["hashtag_weights"] > 0) == (batch["hashtag_targets"] > 0)).all()
    assert (batch["category"] >= 0).all() and (batch["category"] < len(dm.category_names)).all()
    assert len(batch["ids"]) == b and batch["video_error"] == [None] * b
    # frames are real pictures (uint8 RGB; the model normalises them)
    assert batch["frames"].float().std() > 5
    # the saved vocabulary reloads with identical ids
    again = Vocabularies.load(tmp_path / "vocab")
    text = "今天 cooking 美食"
    assert again.tokenizer.encode(text, 16) == dm.vocabs.tokenizer.encode(text, 16)
    assert again.hashtags.labels == dm.vocabs.hashtags.labels


def test_bad_clips_are_masked_and_counted(small_demo, tmp_path):
    records = read_manifest(small_demo)[:6]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    records[0].video = str(tmp_path / "empty.mp4")
    records[1].video = str(tmp_path / "text.mp4")
    records[2].video = str(tmp_path / "missing.mp4")
    records[3].video = None  # no clip at all: masked, not a failure
    manifest = write_manifest(records, tmp_path / "m.jsonl")
    dm = _dm(manifest, split=SplitConfig(val_fraction=0.0, test_fraction=0.0))
    batch = next(iter(dm.train_dataloader()))
    by_id = dict(zip(batch["ids"], zip(batch["video_mask"].tolist(), batch["video_error"])))
    assert by_id[records[0].id] == (False, "empty")
    assert by_id[records[1].id] == (False, "not_media")
    assert by_id[records[2].id] == (False, "missing")
    assert by_id[records[3].id][0] is False
    assert by_id[records[4].id] == (True, None)
    # masked frames are zeros, and the callback counts the reasons
    masked = ~batch["video_mask"]
    assert batch["frames"][masked].abs().sum() == 0
    callback = DecodeFailureSummary()
    callback._record("train", batch)
    counts = callback.logs["train"].as_dict()
    assert counts["video/empty"] == 1 and counts["video/not_media"] == 1 and counts["video/missing"] == 1


def test_batch_type_and_fields_agree():
    assert list(Batch.__annotations__) == list(FIELDS)
    assert Batch.__optional_keys__ == {k for k, f in FIELDS.items() if f.optional}


def test_demo_batch_has_exactly_the_documented_keys_dtypes_and_shapes(small_demo):
    dm = _dm(small_demo)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    collated = {k for k, f in FIELDS.items() if f.collated}  # text_ngrams too: TEXT has n-gram buckets
    collated.discard("keyword_positions")  # only after set_keywords (test_loader_workers_choose_the_keywords...)
    assert set(batch) == collated
    dims = check_batch(batch)
    assert dims == {"B": 8, "T": DECODE.num_frames, "S": DECODE.frame_size, "M": DECODE.n_mels,
                    "F": DECODE.mel_frames, "L": TEXT.max_length, "G": TEXT.ngram_max_length,
                    "H": dm.num_hashtags, "Q": dm.num_queries}
    assert batch["video_partial"] == [None] * 8 and batch["audio_partial"] == [None] * 8
    # the check fails on what differs from the definition, naming the key
    with pytest.raises(ValueError, match=r"\['frames'\] is torch.float32"):
        check_batch({**batch, "frames": batch["frames"].float()})
    with pytest.raises(ValueError, match=r"\['hashtag_weights'\] has H=1"):  # H differs from hashtag_targets'
        check_batch({**batch, "hashtag_weights": batch["hashtag_weights"][:, :1]})
    with pytest.raises(ValueError, match=r"\['mel'\] has M=3"):  # M differs from the given size
        check_batch({**batch, "mel": batch["mel"][:, :3]}, M=DECODE.n_mels)
    with pytest.raises(ValueError, match=r"does not define: \['extra'\]"):
        check_batch({**batch, "extra": batch["category"]})
    with pytest.raises(ValueError, match="lacks keys .*'video_partial'"):
        check_batch({k: v for k, v in batch.items() if k != "video_partial"})
    with pytest.raises(ValueError, match=r"\['video_error'\] holds 'exploded'"):
        check_batch({**batch, "video_error": ["exploded"] + batch["video_error"][1:]})
    with pytest.raises(ValueError, match="B=8"):
        check_batch(batch, B=4)


def test_partial_clip_trains_on_what_decodes_and_is_counted(small_demo, tmp_path):
    """A clip cut in half is kept (mask True, real frames) and reported in the batch and by the callback."""
    from test_decode import write_clip

    whole = write_clip(tmp_path / "whole.mkv", size=(32, 32), n=96, audio="aac")  # 4 s
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    records = read_manifest(small_demo)[:4]
    records[0].video = str(cut)
    manifest = write_manifest(records, tmp_path / "m.jsonl")
    dm = _dm(manifest, split=SplitConfig(val_fraction=0.0, test_fraction=0.0))
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch)
    i = batch["ids"].index(records[0].id)
    assert batch["video_mask"][i] and batch["audio_mask"][i] and batch["video_error"][i] is None
    assert batch["frames"][i].float().mean() > 0, "real frames, not the zeros of a masked clip"
    assert 0.4 < batch["video_partial"][i] < 0.6 and 0.4 < batch["audio_partial"][i] < 0.6
    assert [p for j, p in enumerate(batch["video_partial"]) if j != i] == [None] * 3
    callback = DecodeFailureSummary()
    callback._record("train", batch)
    assert callback.logs["train"].as_dict() == {"audio/partial": 1, "video/partial": 1}


def _rank_ids(shards, vocabs, rank, world, workers, epoch=0):
    ds = ShardedVideoDataset(shards, vocabs, DECODE, TEXT, train=True, rank=rank, world_size=world, seed=3)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate)
    return [i for batch in loader for i in batch["ids"]], len(ds)


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_disjoint_across_ranks_and_workers(small_demo, tmp_path, workers):
    records = read_manifest(small_demo)[:46]
    infos = write_shards(records, tmp_path / "shards", samples_per_shard=6, progress=False)  # 8 shards, last has 4
    assert len(infos) == 8
    shards = read_shard_index(tmp_path / "shards")
    vocabs, _ = Vocabularies.build(records, TEXT, LabelConfig(hashtag_min_freq=2))
    ids0, n0 = _rank_ids(shards, vocabs, 0, 2, workers)
    ids1, n1 = _rank_ids(shards, vocabs, 1, 2, workers)
    assert len(ids0) == len(ids1) == n0 == n1  # every rank yields the same number (DDP never waits)
    assert len(set(ids0)) == len(ids0) and len(set(ids1)) == len(ids1)  # no repeats within a rank
    assert not set(ids0) & set(ids1)  # two ranks see disjoint samples
    assert len(ids0) + len(ids1) >= 46 - 4  # at most the uneven remainder is held back
    assert set(ids0) | set(ids1) <= {r.id for r in records}
    # the next epoch deals the shards differently but stays disjoint
    ids0_e1, _ = _rank_ids(shards, vocabs, 0, 2, workers, epoch=1)
    ids1_e1, _ = _rank_ids(shards, vocabs, 1, 2, workers, epoch=1)
    assert not set(ids0_e1) & set(ids1_e1)
    assert set(ids0_e1) != set(ids0)


def test_batches_given_follow_the_loaders_turns_over_workers():
    from mmemb.data.shards import batches_given

    # worker 0 has 3 batches (10 samples of 4), worker 1 one (3): turns 0, 1, 0, 0
    assert [batches_given([10, 3], 4, k)[0] for k in range(5)] == [[0, 0], [1, 0], [1, 1], [2, 1], [3, 1]]
    assert [batches_given([10, 3], 4, k)[1] for k in range(4)] == [0, 1, 0, 1]  # whose turn is next
    assert batches_given([10, 3], 4, 99) == ([3, 1], 1) and batches_given([7], 2, 3) == ([3], 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_pass_over_shards_continues_where_the_checkpoint_stopped(small_demo, tmp_path, workers):
    """The train loader resumed after k batches gives exactly the uninterrupted pass's batches from k on (the
    same samples, the same random draws), then whole passes again; past the epoch's end it starts anew."""
    from mmemb.data.datamodule import _EpochLoader

    records = read_manifest(small_demo)[:46]
    write_shards(records, tmp_path / "shards", samples_per_shard=6, progress=False)  # 8 shards, the last of 4
    vocabs, _ = Vocabularies.build(records, TEXT, LabelConfig(hashtag_min_freq=2))
    ds = ShardedVideoDataset(read_shard_index(tmp_path / "shards"), vocabs, DECODE, TEXT, train=True, rank=0,
                             world_size=1, seed=3)

    def passes(resume, n=1):
        positions = iter([resume])
        loader = _EpochLoader(ds, lambda: 1, resume_fn=lambda: next(positions, None), batch_size=4,
                              num_workers=workers, collate_fn=collate)
        return [[(b["ids"], b["frames"]) for b in loader] for _ in range(n)]

    (full,) = passes(None)
    assert len(full) >= 12 and sorted(i for ids, _ in full for i in ids) == sorted(r.id for r in records)
    for k in (1, 5, len(full) - 1):
        resumed, after = passes((1, k), n=2)
        assert [ids for ids, _ in resumed] == [ids for ids, _ in full[k:]], k
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, full[k:]))  # the same random crops
        assert [ids for ids, _ in after] == [ids for ids, _ in full]  # the resume is for one pass only
    assert [ids for ids, _ in passes((0, 3))[0]] == [ids for ids, _ in full]  # another epoch's position
    assert [ids for ids, _ in passes((1, len(full)))[0]] == [ids for ids, _ in full]  # at the end: anew


def test_shards_keep_missing_clips_masked(small_demo, tmp_path):
    records = read_manifest(small_demo)[:4]
    shutil.copy(records[0].video, tmp_path / "a.mp4")
    records[0].video = str(tmp_path / "a.mp4")
    records[1].video = str(tmp_path / "gone.mp4")
    write_shards(records, tmp_path / "shards", samples_per_shard=2, progress=False)
    vocabs, _ = Vocabularies.build(records, TEXT, LabelConfig(hashtag_min_freq=1))
    ds = ShardedVideoDataset(read_shard_index(tmp_path / "shards"), vocabs, DECODE, TEXT, train=False,
                             rank=0, world_size=1)
    samples = {s["ids"]: s for s in ds}
    assert samples[records[0].id]["video_mask"] and samples[records[0].id]["video_error"] is None
    assert not samples[records[1].id]["video_mask"] and samples[records[1].id]["video_error"] == "missing"
    assert samples[records[2].id]["video_mask"]


def test_datamodule_streams_shards_for_training(small_demo, tmp_path):
    records = read_manifest(small_demo)
    write_shards(records, tmp_path / "shards", samples_per_shard=40, progress=False)
    dm = _dm(small_demo, shards=str(tmp_path / "shards"))
    loader = dm.train_dataloader()
    ids = [i for batch in loader for i in batch["ids"]]
    assert sorted(ids) == sorted(r.id for r in records)  # one rank streams the whole corpus once


# ----------------------------------------------------------------------------- label weighting

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402

from mmemb.data.manifest import ManifestError  # noqa: E402

DAY = 86400.0
NOW = 1_700_000_000.0


def _label_manifest(tmp_path, publish_first=None):
    """Four text-only videos; hashtags a (3 videos), b, c (1 each); query q on two videos (9 and 0 clicks).

    hashtag idf (N = 4): a = ln(5/4) + 1, b = c = ln(5/2) + 1; query idf: q = ln(5/3) + 1.
    """
    rows = [
        {"id": "v1", "caption": "one", "hashtags": ["a", "b"], "queries": [{"text": "q", "clicks": 9}]},
        {"id": "v2", "caption": "two", "hashtags": ["a"], "queries": [{"text": "q", "clicks": 0}]},
        {"id": "v3", "caption": "three", "hashtags": ["a", "c"]},
        {"id": "v4", "caption": "four"},
    ]
    if publish_first is not None:
        rows[0]["publish_time"] = publish_first
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _label_dm(manifest, weighting, **kw):
    labels = LabelConfig(hashtag_min_freq=1, query_min_freq=1, clean=False, weighting=weighting,
                         half_life_days=kw.pop("half_life_days", None))
    return VideoDataModule(manifest=str(manifest), decode=DECODE, text=TEXT, labels=labels, num_workers=0,
                           batch_size=8, split=SplitConfig(val_fraction=0.0, test_fraction=0.0), **kw)


def _weights_by_id(dm, kind="hashtag"):
    """{video id: {label: weight}} over the train loader's (only) batch."""
    batch = next(iter(dm.train_dataloader()))
    vocab = dm.vocabs.hashtags if kind == "hashtag" else dm.vocabs.queries
    out = {}
    for i, vid in enumerate(batch["ids"]):
        w, t = batch[f"{kind}_weights"][i], batch[f"{kind}_targets"][i]
        assert ((w > 0) == (t > 0)).all()
        out[vid] = {vocab.labels[j]: w[j].item() for j in t.nonzero().flatten().tolist()}
    return out


def _flat(weights):
    return {(vid, label): x for vid, row in weights.items() for label, x in row.items()}


IA, IB = math.log(5 / 4) + 1, math.log(5 / 2) + 1


def test_softmax_weighting_batches_by_hand(tmp_path):
    w = _weights_by_id(_label_dm(_label_manifest(tmp_path), "softmax"))
    assert w["v1"] == pytest.approx({"a": IA / (IA + IB), "b": IB / (IA + IB)})
    assert w["v2"] == pytest.approx({"a": 1.0})  # one label: the whole distribution
    assert w["v4"] == {}
    q = _weights_by_id(_label_dm(_label_manifest(tmp_path), "softmax"), "query")
    assert q["v1"] == pytest.approx({"q": 1.0}) and q["v2"] == pytest.approx({"q": 1.0})


def test_bce_global_weighting_batches_by_hand(tmp_path):
    """Per-video normalisation gave every one-label video weight 1; over the train split the common
    label a weighs less than the rare b and c, and 9 clicks weigh more than 0."""
    dm = _label_dm(_label_manifest(tmp_path), "bce_global")
    w = _weights_by_id(dm)
    m = (3 * IA + 2 * IB) / 5  # mean mass over the 5 (video, hashtag) positives
    assert dm.vocabs.mass_means.hashtag == pytest.approx(m)
    assert w["v2"] == pytest.approx({"a": IA / m})
    assert w["v1"] == pytest.approx({"a": IA / m, "b": IB / m})
    assert w["v3"] == pytest.approx({"a": IA / m, "c": IB / m})
    assert w["v2"]["a"] < 1 < w["v1"]["b"]
    q = _weights_by_id(dm, "query")
    c9, c0 = 1 + math.log(10), 1.0  # click factors 1 + ln(1 + clicks)
    assert q["v1"] == pytest.approx({"q": 2 * c9 / (c9 + c0)}) and q["v2"] == pytest.approx({"q": 2 * c0 / (c9 + c0)})


def test_uniform_weighting_batches(tmp_path):
    w = _weights_by_id(_label_dm(_label_manifest(tmp_path), "uniform"))
    assert w["v1"] == {"a": 1.0, "b": 1.0} and w["v2"] == {"a": 1.0}


def test_bce_global_freshness_and_the_vocabulary_reload(tmp_path):
    """v1 is one half-life old: its masses halve, and the train mean with them; a module reloading the
    saved vocabularies later measures ages from the same reference time, so the weights are equal."""
    manifest = _label_manifest(tmp_path, publish_first=NOW - 7 * DAY)
    dm = _label_dm(manifest, "bce_global", half_life_days=7.0, vocab_dir=str(tmp_path / "vocab"))
    dm.now = NOW
    dm.setup("fit")  # builds and saves the vocabularies
    m = (IA / 2 + IB / 2 + 2 * IA + IB) / 5
    w = _weights_by_id(dm)
    assert w["v1"] == pytest.approx({"a": IA / 2 / m, "b": IB / 2 / m})
    assert w["v2"] == pytest.approx({"a": IA / m})
    later = _label_dm(manifest, "bce_global", half_life_days=7.0, vocab_dir=str(tmp_path / "vocab"))
    later.now = NOW + 30 * DAY
    assert _flat(_weights_by_id(later)) == pytest.approx(_flat(w))
    assert later.now == NOW
    # another half-life than the saved means: recomputed from the train split, with this module's now
    other = _label_dm(manifest, "bce_global", half_life_days=14.0, vocab_dir=str(tmp_path / "vocab"))
    other.now = NOW
    m14 = (IA / math.sqrt(2) + IB / math.sqrt(2) + 2 * IA + IB) / 5
    assert _weights_by_id(other)["v2"] == pytest.approx({"a": IA / m14})
    # a vocabulary saved before the means existed: recomputed too
    (tmp_path / "vocab" / "label_masses.json").unlink()
    old = _label_dm(manifest, "bce_global", half_life_days=7.0, vocab_dir=str(tmp_path / "vocab"))
    old.now = NOW
    assert _flat(_weights_by_id(old)) == pytest.approx(_flat(w))


def test_mass_means_match_the_dataset_masses(small_demo):
    """The stored normaliser is the mean of what the dataset writes for the train split's positives."""
    from mmemb.data.dataset import encode_labels

    dm = VideoDataModule(manifest=str(small_demo), decode=DECODE, text=TEXT, num_workers=0,
                         labels=LabelConfig(hashtag_min_freq=2, weighting="bce_global"))
    masses = [encode_labels(r, dm.vocabs, None, None)["hashtag_weights"] for r in dm.splits["train"]]
    positives = torch.cat([m[m > 0] for m in masses])
    assert positives.numel() > 10
    assert dm.vocabs.mass_means.hashtag == pytest.approx(positives.double().mean().item(), rel=1e-5)


# ----------------------------------------------------------------------------- hashtags in the text fields


def test_hashtag_words_are_stripped_from_every_text_field(tmp_path):
    rows = [{"id": "v1", "caption": "今天 #美食 做饭", "cover_text": "封面 #美食", "asr": "大家好 #做饭教程 开始",
             "comments": ["好吃 #美食", "#美食"], "hashtags": ["美食", "做饭教程"]}]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (record,) = read_manifest(path)
    assert record_texts(record) == ["今天 做饭", "封面", "大家好 开始", "好吃"]
    # and nothing of them reaches the token ids (the tokenizer has the characters: they are in the captions)
    vocabs, _ = Vocabularies.build([record] * 3, TEXT, LabelConfig(hashtag_min_freq=1, clean=False))
    from mmemb.data.dataset import tokenize_text

    ids = tokenize_text(record, vocabs, TEXT)["text_ids"]
    text = vocabs.tokenizer.decode([i for i in ids.tolist() if i])
    assert "美" not in text and "教" not in text and "#" not in text
    plain = type(record)(id="p", asr="no tags here  at all", comments=["x"])
    assert record_texts(plain) == [None, None, "no tags here  at all", "x"]  # unchanged without '#'


def test_token_table_gives_the_tokens_of_per_record_encoding(small_demo):
    """The dataset encodes its texts once (one tokenizer call) instead of per sample; the samples'
    text tensors are those of encoding each record on its own, empty texts included."""
    from mmemb.data.dataset import TokenTable, tokenize_text
    from mmemb.data.manifest import VideoRecord

    dm = _dm(small_demo)
    records = dm.splits["train"][:40] + [VideoRecord("empty"), VideoRecord("tags", caption="#a", hashtags=["a"])]
    table = TokenTable(records, dm.vocabs, TEXT)
    assert len(table) == len(records)
    for i, record in enumerate(records):
        alone = tokenize_text(record, dm.vocabs, TEXT)
        cached = tokenize_text(record, dm.vocabs, TEXT, table[i])
        assert alone.keys() == cached.keys()
        for key in alone:
            assert torch.equal(alone[key], cached[key]) and alone[key].dtype == cached[key].dtype, (i, key)
    assert table[len(records) - 2][0].size == 0 and table[len(records) - 1][0].size == 0
    dataset = dm.train_dataloader().dataset
    assert isinstance(dataset.tokens, TokenTable) and len(dataset.tokens) == len(dataset)


def test_collate_in_a_worker_stacks_into_shared_memory(small_demo):
    """Inside a DataLoader worker the batch's tensors are stacked straight into shared memory (so
    that sending it copies nothing); the values are those of a plain stack."""
    dm = _dm(small_demo)
    dataset = dm.train_dataloader().dataset
    samples = [dataset[i] for i in range(4)]
    plain, shared = collate(samples), collate(samples, shared=True)
    assert plain.keys() == shared.keys()
    for key, value in plain.items():
        if torch.is_tensor(value):
            assert torch.equal(value, shared[key]) and value.dtype == shared[key].dtype, key
            assert shared[key].is_shared() and not value.is_shared(), key
        else:
            assert value == shared[key], key
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate)
    batch = next(iter(loader))  # collated in the worker: received without a copy, values unchanged
    assert torch.equal(batch["frames"], plain["frames"]) and torch.equal(batch["text_ids"], plain["text_ids"])


# ----------------------------------------------------------------------------- bad manifest records


def _bad_manifest(tmp_path):
    rows = [json.dumps({"id": f"ok{i}", "caption": f"text {i}", "hashtags": ["a"]}) for i in range(5)]
    rows.insert(2, '{"id": "bad", "publish_time": NaN}')
    rows.append('{"caption": "no id"}')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_bad_manifest_raises_one_error_naming_the_first_record(tmp_path):
    path = _bad_manifest(tmp_path)
    dm = _label_dm(path, "bce_global")
    with pytest.raises(ManifestError) as info:
        dm.setup("fit")
    assert str(info.value) == (f"{path}:3: field 'publish_time': expected a finite number of unix seconds, got nan "
                               f"(1 more bad record; run `mmemb data check {path}` to see them)")


def test_skip_bad_records_trains_on_the_good_ones_and_reports(tmp_path, caplog):
    path = _bad_manifest(tmp_path)
    dm = _label_dm(path, "bce_global", skip_bad_records=True)
    with caplog.at_level(logging.WARNING, logger="mmemb.data.datamodule"):
        dm.setup("fit")
    assert dm.skipped_records == 2
    assert sorted(r.id for r in dm.splits["train"]) == [f"ok{i}" for i in range(5)]
    assert any("skipped 2 bad record(s)" in r.getMessage() and "mmemb data check" in r.getMessage()
               for r in caplog.records)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["ids"]) == 5


def test_cli_options_of_the_data_module():
    """``--data.skip_bad_records true`` and ``--data.labels.weighting`` parse as LightningCLI parses them."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VideoDataModule, "data")
    cfg = parser.parse_args(["--data.skip_bad_records", "true", "--data.labels.weighting", "softmax"])
    assert cfg.data.skip_bad_records is True and cfg.data.labels.weighting == "softmax"
    with pytest.raises(Exception, match="weighting"):
        parser.parse_args(["--data.labels.weighting", "per_sample"])


def test_loader_workers_choose_the_keywords_with_the_train_idf(small_demo, tmp_path):
    """With set_keywords, every loader's collate adds keyword_positions: what select_keywords chooses
    with the vocabulary's keyword IDF (learned from the train texts, saved and reloaded with the
    vocabulary)."""
    from mmemb.data.vocab import text_token_idf
    from mmemb.models.keywords import KeywordConfig, select_keywords

    dm = _dm(small_demo, num_workers=2, vocab_dir=str(tmp_path / "vocab"))
    dm.prepare_data()
    dm.setup("fit")
    idf = dm.vocabs.keyword_idf
    assert idf is not None and idf.shape == (dm.vocab_size,)
    assert np.allclose(idf, text_token_idf(dm.splits["train"], dm.vocabs.tokenizer, TEXT.max_length))
    assert np.array_equal(Vocabularies.load(tmp_path / "vocab").keyword_idf, idf)
    assert "keyword_positions" not in next(iter(dm.train_dataloader()))  # off until asked
    cfg = KeywordConfig(max_keywords=2, cjk="pairs")
    dm.set_keywords(cfg)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        check_batch(batch)
        positions = batch["keyword_positions"]
        assert positions.dtype == torch.bool and positions.shape == batch["text_ids"].shape and positions.any()
        expected, _, _ = select_keywords(batch["text_ids"], batch["text_attention"], torch.from_numpy(idf),
                                         dm.vocabs.tokenizer, cfg)
        assert torch.equal(positions, expected)


def test_bench_datamodule_profile_runs(small_demo, capsys):
    """benchmarks/bench_datamodule.py --profile on the small corpus (one pass): every part is listed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_datamodule.py"
    spec = importlib.util.spec_from_file_location("_bench_datamodule", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.profile(_dm(small_demo), repeat=1)
    out = capsys.readouterr().out
    for part in ("decode (load_clip)", "__getitem__ without decoding", "collate", "pickle + unpickle",
                 "loader's own work"):
        assert part in out, part
