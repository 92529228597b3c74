"""Label vocabularies, hashtag cleaning on real KuaiRec tags, TF-IDF/freshness weights, tag graph."""

import math

import numpy as np
import pytest
import torch

from mmemb.data.kuairec import read_kuairec
from mmemb.data.labels import (
    CleaningConfig,
    LabelVocab,
    TagGraph,
    build_label_vocab,
    build_tag_graph,
    clean_hashtags,
    freshness,
    label_idf,
    label_weights,
    mean_positive_mass,
    normalize_label,
    normalize_weights,
)

BOILERPLATE = ("感谢快手我要上热门", "作品推广", "快手创作者服务中心", "感谢快手官大大送上热门", "主播中心",
               "快手创作者中心", "热门", "支持快手传播正能量", "同城热点", "推广小助手")
CONTENT = ("搞笑", "美食", "明星", "健康养生", "健身", "萌宠", "街拍", "篮球", "情感", "时尚穿搭",
           "跟着快手去旅行", "快手宠物天团", "快手厨房", "宝宝成长记", "正能量", "感恩父母", "热门歌曲")


# ----------------------------------------------------------------------------- normalization and vocab


@pytest.mark.parametrize(
    "raw, expected",
    [(" #Python！ ", "python"), ("#情感视频#", "情感视频"), ("＃ＡＢＣ", "abc"), ("中医·中药", "中医·中药"),
     ("川崎H2", "川崎h2"), ("  a   b ", "a b"), ("【搞笑】", "搞笑"), ("#", ""), ("0️⃣0️⃣后创业", "0️⃣0️⃣后创业")],
)
def test_normalize_label(raw, expected):
    assert normalize_label(raw) == expected
    assert normalize_label(normalize_label(raw)) == normalize_label(raw)  # idempotent


def test_build_label_vocab_min_freq_order_and_io(tmp_path):
    lists = [["b", "a", "a"], ["a", "c"], ["b", "a"], ["c"], ["b"], ["d"], [""]]
    vocab = build_label_vocab(lists, min_freq=2)
    # a: 3 samples (repeats in a sample count once), b: 3, c: 2, d: 1 (dropped); ties by label
    assert vocab.labels == ["a", "b", "c"] and vocab.counts == [3, 3, 2] and vocab.min_freq == 2
    assert len(vocab) == 3 and vocab.index("c") == 2 and vocab.index("d") is None and "a" in vocab
    assert vocab.encode(["c", "zzz", "a", "c"]) == [2, 0]
    assert build_label_vocab(lists, min_freq=2, max_size=2).labels == ["a", "b"]
    assert build_label_vocab(lists, min_freq=1).labels == ["a", "b", "c", "d"]
    again = LabelVocab.load(vocab.save(tmp_path / "v.json"))
    assert again == vocab and again.index("b") == 1
    (tmp_path / "bad.json").write_text('{"labels": ["a"]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json"):
        LabelVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="duplicate label 'a'"):
        LabelVocab(["a", "a"], [1, 1], 1)


# ----------------------------------------------------------------------------- cleaning on KuaiRec


@pytest.fixture(scope="module")
def kuairec(assets_dir):
    records = read_kuairec(assets_dir / "kuairec" / "kuairec_caption_category.csv")
    return [r.hashtags for r in records], [r.category for r in records]


@pytest.fixture(scope="module")
def cleaned(kuairec):
    return clean_hashtags(*kuairec)


def test_cleaning_removes_boilerplate_and_keeps_content(cleaned):
    lists, report = cleaned
    for tag in BOILERPLATE:
        assert tag in report.removed, tag
    assert report.removed["感谢快手我要上热门"].startswith("rule: ")
    kept = {t for tags in lists for t in tags}
    for tag in CONTENT:
        assert tag in kept and tag not in report.removed, tag
    assert not kept & set(report.removed)


def test_cleaning_report_numbers(cleaned, kuairec):
    lists, report = cleaned
    assert len(lists) == len(kuairec[0]) == 10728
    assert report.total_uses == 18570  # distinct (video, normalized tag) pairs
    assert report.removed_uses == report.total_uses - sum(len(t) for t in lists)
    assert 0.35 < report.removed_share < 0.55
    assert report.uses["感谢快手我要上热门"] == 975
    assert report.kept + len(report.removed) == 6041  # distinct normalized tags
    assert report.tags_min5_before == 437 and 280 < report.tags_min5_after < 360
    markdown = report.to_markdown(top=5)
    assert "| 感谢快手我要上热门 | 975 | rule: 上热 |" in markdown
    assert markdown.count("\n| ") == 1 + 5  # header + 5 rows
    assert f"{100 * report.removed_share:.1f}%" in markdown


def test_both_detectors_contribute(cleaned, kuairec):
    _, report = cleaned
    spread = {t for t, why in report.removed.items() if why.startswith("spread: ")}
    assert {"高清视频", "今天拍点啥", "快手全面屏"} <= spread  # no rule names them
    assert report.by_detector()["rule"] > 500 and report.by_detector()["spread"] >= 3
    # on its own, the data-driven detector finds the top boilerplate tags too (and no content tag)
    _, alone = clean_hashtags(*kuairec, CleaningConfig(rules=False))
    assert set(BOILERPLATE) <= set(alone.removed)
    assert not set(CONTENT) & set(alone.removed)
    assert "JS=" in alone.removed["作品推广"] and "categories" in alone.removed["作品推广"]
    # and the rules alone catch the commerce tags that are concentrated in one category
    _, rules = clean_hashtags(*kuairec, CleaningConfig(spread=False))
    assert {"智能推广", "快手创业用商家号", "短视频带货王"} <= set(rules.removed) - set(alone.removed)


def test_spread_detector_on_a_synthetic_case():
    # "generic" is spread exactly like the categories; "cats" only on category A
    categories = ["A", "B", "C", "D"] * 30
    lists = [["generic"] + (["cats"] if c == "A" else []) for c in categories]
    _, report = clean_hashtags(lists, categories, CleaningConfig(rules=False, min_count_for_spread=20))
    assert list(report.removed) == ["generic"]
    # without categories the spread detector cannot judge anything
    _, report = clean_hashtags(lists, [None] * len(lists), CleaningConfig(rules=False))
    assert report.removed == {}


def test_report_markdown_escapes_pipes():
    _, report = clean_hashtags([["a|b", "keep"], ["a|b"]], [None, None], CleaningConfig(patterns=(r"a\|b",)))
    assert report.removed == {"a|b": "rule: a|b"} and report.kept == 1
    assert "| a\\|b | 2 | rule: a\\|b |" in report.to_markdown()


def test_cleaning_config_checks():
    with pytest.raises(ValueError, match=r"patterns\[1\]"):
        CleaningConfig(patterns=("ok", "(unclosed"))
    with pytest.raises(ValueError, match="min_count_for_spread"):
        CleaningConfig(min_count_for_spread=1)
    with pytest.raises(ValueError, match="2 label lists but 1 categories"):
        clean_hashtags([["a"], ["b"]], ["x"])


# ----------------------------------------------------------------------------- TF-IDF and freshness


def test_label_idf_by_hand():
    idf = label_idf([[0, 1], [0], [0, 2, 2], []], num_labels=4)
    n = 4  # samples, the empty one included; df = [3, 1, 1, 0]
    expected = [math.log((1 + n) / (1 + df)) + 1 for df in (3, 1, 1, 0)]
    np.testing.assert_allclose(idf, expected)
    assert idf[1] > idf[0]  # rarer weighs more
    with pytest.raises(ValueError, match=r"label_id_lists\[0\].*5 out of range"):
        label_idf([[5]], num_labels=4)


def test_label_weights_are_unnormalised_masses_by_hand():
    idf = np.array([1.0, 2.0, 3.0])
    w = label_weights([0, 2], idf)
    np.testing.assert_allclose(w, [1.0, 3.0])  # idf alone (no per-sample normalisation)
    assert w.dtype == np.float32
    m = [1.0 * (1 + math.log1p(9)), 2.0 * (1 + math.log1p(0))]  # queries: clicks 9 and 0
    np.testing.assert_allclose(label_weights([0, 1], idf, clicks=[9, 0]), m, rtol=1e-6)
    assert label_weights([], idf).shape == (0,)
    with pytest.raises(ValueError, match="clicks"):
        label_weights([0, 1], idf, clicks=[1])


def test_freshness_halves_weight_at_one_half_life():
    idf = np.array([1.0, 2.0, 3.0])
    now, day = 1_700_000_000.0, 86400.0
    fresh = label_weights([0, 2], idf, publish_time=now, now=now, half_life_days=7)
    week = label_weights([0, 2], idf, publish_time=now - 7 * day, now=now, half_life_days=7)
    two = label_weights([0, 2], idf, publish_time=now - 14 * day, now=now, half_life_days=7)
    np.testing.assert_allclose(fresh, [1.0, 3.0])
    np.testing.assert_allclose(week, fresh / 2)
    np.testing.assert_allclose(two, fresh / 4)
    assert freshness(now - 7 * day, now, 7) == pytest.approx(0.5)
    future = label_weights([0, 2], idf, publish_time=now + day, now=now, half_life_days=7)
    np.testing.assert_allclose(future, fresh)  # no boost for a clock skew
    unknown = label_weights([0, 2], idf, publish_time=None, now=now, half_life_days=7)
    np.testing.assert_allclose(unknown, fresh)  # unknown age: no decay
    with pytest.raises(ValueError, match="now"):
        label_weights([0], idf, publish_time=now, half_life_days=7)


def test_mean_positive_mass_by_hand():
    assert mean_positive_mass([np.array([1.0, 3.0]), np.array([2.0]), np.zeros(0)]) == pytest.approx(2.0)
    assert mean_positive_mass([np.zeros(0)]) == 1.0  # no positive: nothing to normalise


# batch masses: video 0 has labels 0 (mass 1) and 2 (mass 3), video 1 label 1 (mass 2), video 2 none
MASSES = torch.tensor([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
TARGETS = (MASSES > 0).float()


def test_softmax_weighting_is_a_distribution_per_video_by_hand():
    w = normalize_weights(MASSES, TARGETS, "softmax")
    torch.testing.assert_close(w, torch.tensor([[0.25, 0.0, 0.75], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))


def test_bce_global_weighting_divides_by_the_train_mean_by_hand():
    w = normalize_weights(MASSES, TARGETS, "bce_global", mean_mass=2.0)  # M = mean(1, 3, 2)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.0, 1.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="mean_mass"):
        normalize_weights(MASSES, TARGETS, "bce_global", mean_mass=0.0)


def test_uniform_weighting_is_one_per_positive():
    torch.testing.assert_close(normalize_weights(MASSES, TARGETS, "uniform"), TARGETS)
    with pytest.raises(ValueError, match="weighting must be one of"):
        normalize_weights(MASSES, TARGETS, "per_sample")  # type: ignore[arg-type]


def test_bce_global_weighs_a_rare_label_more_across_videos():
    """Two one-label videos: a rare label (idf 3) and a common one (idf 1). Normalised per video both
    weighed 1; over the train split the rare one weighs three times the common one."""
    idf = np.array([1.0, 2.0, 3.0])
    masses = [label_weights([2], idf), label_weights([0], idf)]
    batch = torch.zeros(2, 3)
    batch[0, 2], batch[1, 0] = float(masses[0][0]), float(masses[1][0])
    w = normalize_weights(batch, (batch > 0).float(), "bce_global", mean_positive_mass(masses))
    assert w[0, 2].item() == pytest.approx(1.5) and w[1, 0].item() == pytest.approx(0.5)
    # more clicks weigh more across videos too: 9 clicks vs 0 on the same query
    many, none = label_weights([1], idf, clicks=[9]), label_weights([1], idf, clicks=[0])
    assert many[0] / none[0] == pytest.approx(1 + math.log(10))


# ----------------------------------------------------------------------------- tag graph

# samples: {0,1} {0,1} {0,1,2} {2,3} {2,3} {0}  -> N = 6, c = [4, 3, 3, 2], c01 = 3, c02 = c12 = 1, c23 = 2
GRAPH_SAMPLES = [[0, 1], [1, 0, 0], [0, 1, 2], [2, 3], [3, 2], [0], []]


def _edges(graph):
    return {(int(s), int(d)): float(w) for (s, d), w in zip(graph.edge_index.T, graph.edge_weight)}


def test_tag_graph_npmi_by_hand():
    g = build_tag_graph(GRAPH_SAMPLES, 4, measure="npmi", threshold=0.1, min_cooccurrence=2, labels=list("abcd"))
    npmi01 = math.log(3 * 6 / (4 * 3)) / -math.log(3 / 6)  # 0.585
    npmi23 = math.log(2 * 6 / (3 * 2)) / -math.log(2 / 6)  # 0.631
    expected = {(0, 1): npmi01, (1, 0): npmi01, (2, 3): npmi23, (3, 2): npmi23}
    assert _edges(g).keys() == expected.keys()  # (0,2), (1,2) co-occur once: below min_cooccurrence
    for edge, w in expected.items():
        assert _edges(g)[edge] == pytest.approx(w, rel=1e-6)
    assert g.edge_index.dtype == np.int64 and g.edge_index.shape == (2, 4) and g.edge_weight.dtype == np.float32
    assert g.num_nodes == 4 and g.labels == list("abcd") and g.measure == "npmi"
    assert [tuple(e) for e in g.edge_index.T] == sorted(expected)  # sorted by (source, target)
    # threshold: only the stronger pair survives
    assert _edges(build_tag_graph(GRAPH_SAMPLES, 4, threshold=0.6)).keys() == {(2, 3), (3, 2)}
    # min_cooccurrence=1 lets the single co-occurrences in; npmi(0,2) = ln(6/12)/ln(6) < 0
    loose = _edges(build_tag_graph(GRAPH_SAMPLES, 4, threshold=-1.0, min_cooccurrence=1))
    assert loose[(0, 2)] == pytest.approx(math.log(0.5) / math.log(6), rel=1e-6)
    assert len(loose) == 8


def test_tag_graph_pmi_and_cond_prob_by_hand():
    pmi = _edges(build_tag_graph(GRAPH_SAMPLES, 4, measure="pmi", threshold=0.0))
    ln15, ln2 = math.log(1.5), math.log(2)
    assert pmi == pytest.approx({(0, 1): ln15, (1, 0): ln15, (2, 3): ln2, (3, 2): ln2})
    for (s, d), w in pmi.items():  # symmetric
        assert pmi[(d, s)] == w
    cond = _edges(build_tag_graph(GRAPH_SAMPLES, 4, measure="cond_prob", threshold=0.7))
    # P(1|0) = 3/4, P(0|1) = 3/3, P(3|2) = 2/3 (< 0.7, dropped), P(2|3) = 2/2
    assert cond == pytest.approx({(0, 1): 0.75, (1, 0): 1.0, (3, 2): 1.0})


def test_tag_graph_edge_cases_and_io(tmp_path):
    g = build_tag_graph([[0, 1], [0, 1]], 2, threshold=0.0)
    assert _edges(g) == {(0, 1): 1.0, (1, 0): 1.0}  # always together: npmi 1
    assert all(s != d for s, d in g.edge_index.T)  # no self-loops
    empty = build_tag_graph([[0], [1], []], 3)
    assert empty.edge_index.shape == (2, 0) and empty.num_nodes == 3
    big = build_tag_graph(GRAPH_SAMPLES, 4, labels=["感谢", "b", "c", "d"])
    again = TagGraph.load(big.save(tmp_path / "g.npz"))
    assert again.labels == big.labels and again.measure == "npmi" and again.num_nodes == 4
    np.testing.assert_array_equal(again.edge_index, big.edge_index)
    np.testing.assert_array_equal(again.edge_weight, big.edge_weight)
    with pytest.raises(FileNotFoundError, match="none.npz"):
        TagGraph.load(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="measure"):
        build_tag_graph(GRAPH_SAMPLES, 4, measure="jaccard")
    with pytest.raises(ValueError, match=r"label_id_lists\[0\]"):
        build_tag_graph([[0, 9]], 4)


def test_tag_graph_on_cleaned_kuairec(cleaned):
    lists, _ = cleaned
    vocab = build_label_vocab(lists, min_freq=5)
    ids = [vocab.encode(t) for t in lists]
    g = build_tag_graph(ids, len(vocab), labels=vocab.labels)
    edges = _edges(g)
    assert len(edges) > 100 and all(edges[(d, s)] == w for (s, d), w in edges.items())
    assert all(0.1 <= w <= 1.0 for w in edges.values())
    for a, b in (("美食", "吃播"), ("书法", "毛笔书法"), ("猫", "吸猫")):  # related tags are strongly linked
        assert edges.get((vocab.index(a), vocab.index(b)), 0) > 0.5, (a, b)
    assert (vocab.index("美食"), vocab.index("篮球")) not in edges
