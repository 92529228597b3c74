"""KuaiRec importer on the real caption/category file (assets/kuairec)."""

import csv
import re

import pytest

from mmemb.data.kuairec import (
    clean_caption,
    import_kuairec,
    kuairec_categories,
    parse_topic_tag,
    read_kuairec,
    strip_hashtags,
    strip_mentions,
)
from mmemb.data.manifest import read_manifest


@pytest.fixture(scope="module")
def csv_path(assets_dir):
    return assets_dir / "kuairec" / "kuairec_caption_category.csv"


@pytest.fixture(scope="module")
def records(csv_path):
    return {r.id: r for r in read_kuairec(csv_path)}


def test_assets_ship_license_and_attribution(assets_dir):
    folder = assets_dir / "kuairec"
    assert "Attribution-ShareAlike 4.0" in (folder / "LICENSE_CC-BY-SA-4.0.txt").read_text(encoding="utf-8")
    attribution = (folder / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for fact in ("KuaiRec", "Gao", "CIKM 2022", "https://kuairec.com", "CC BY-SA 4.0", "unmodified"):
        assert fact in attribution


def test_naive_csv_parse_splits_rows_on_bare_carriage_returns(csv_path):
    # The trap the importer handles: Python's csv module ends a row at a bare '\r'.
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) - 1 == 10732
    assert sum(1 for r in rows if len(r) != 10) == 8


def test_reads_every_video_exactly_once(records, csv_path):
    assert len(records) == 10728
    assert set(records) == {str(i) for i in range(10728)}
    assert all(r.video is None and r.asr is None and r.publish_time is None for r in records.values())
    assert len(kuairec_categories(csv_path)) == 10728


@pytest.mark.parametrize("vid", ["1378", "1613", "5910", "6331"])
def test_rows_with_bare_carriage_return_are_complete(records, vid):
    expected = {
        "1378": dict(caption="张凯教练：“我希望我们能开启一段王朝 ！”", hashtags=[], category="明星娱乐"),
        "1613": dict(caption="的双男主 的微妙关系，你绕明白了吗？~", hashtags=["井柏然", "宋威龙", "张公案"],
                     category="明星娱乐", cover_text="宋威龙井柏然的关系"),
        "5910": dict(caption="我不会离开你 就像数学题一样 说不会就是不会", hashtags=[], category="其他"),
        "6331": dict(caption="这才是每个小女生心中的豪车！", hashtags=[], category=None),
    }[vid]
    record = records[vid]
    for name, value in expected.items():
        assert getattr(record, name) == value, name
    assert "\r" not in record.caption
    # the row after each one is a row of its own, not a fragment
    nxt = records[str(int(vid) + 1)]
    assert nxt.caption and not nxt.caption.startswith(("UNKNOWN", ","))


def test_hashtags_parsed_from_topic_tag(records):
    assert records["4"].hashtags == ["五爱市场", "感谢快手我要上热门", "搞笑"]
    assert records["0"].hashtags == []
    assert sum(1 for r in records.values() if r.hashtags) == 6117
    assert len({t for r in records.values() for t in r.hashtags}) == 6059
    assert parse_topic_tag("[a, b,a,]") == ["a", "b"]
    with pytest.raises(ValueError, match="topic_tag"):
        parse_topic_tag("a,b")


def test_captions_have_no_hashtags_left(records):
    captions = [r.caption for r in records.values() if r.caption]
    assert not [c for c in captions if "#" in c or "＃" in c]
    assert records["4"].caption == "这真是完美搭配啊！"  # '#搞笑 #感谢快手我要上热门 #五爱市场 这真是完美搭配啊！'
    assert records["12"].caption == "更新了 喜欢的关注更精彩❤️❤️ 爱你们"  # '#情感视频# ... #官方 #'
    assert records["10522"].caption.startswith("你拼尽全力的样子真帅")  # full-width '＃' hashtag
    assert records["2"].caption == "晚饭后，运动一下！"  # untouched when there is no hashtag
    assert not any(re.search(r"\(O\d+\)", c) for c in captions)  # account mentions removed too
    assert records["145"].caption == "一字马脱衣"


@pytest.mark.parametrize(
    "caption, tags, expected",
    [
        ("#搞笑，真好笑", ["搞笑"], "，真好笑"),  # ends at punctuation
        ("#张公案\xa0的双男主#宋威龙\xa0", ["张公案", "宋威龙"], "的双男主"),  # ends at NBSP
        ("#快递小哥#容易吗？还要帮忙", ["快递小哥"], "容易吗？还要帮忙"),  # closing '#', then content
        ("我说#猴子#可爱#萌宠#吃货 #动物园", ["猴子", "萌宠", "动物园"], "我说"),  # glued tags
        ("#美队替身在《复联2》片场", ["美队"], "替身在《复联2》片场"),  # known tag glued to content
        ("##lisa#感谢 好看", ["lisa"], "好看"),  # '##' and a trailing '#'
        ("#川崎h2 真快", ["川崎H2"], "真快"),
        ("#官方 # @温馨", [], "@温馨"),  # stray '#'
    ],
)
def test_strip_hashtags_cases(caption, tags, expected):
    assert strip_hashtags(caption, tags) == expected


def test_clean_caption_removes_mentions_and_returns_none_when_empty():
    assert strip_mentions("看 @快手舞蹈(O40300097) 跳舞 @Young heben(O580319244)") == "看 跳舞"
    assert clean_caption("#作品推广 @推广小助手(O40300047) ", ["作品推广"]) is None


def test_cover_text_unknown_becomes_none(records):
    assert records["0"].cover_text is None
    assert records["4"].cover_text == "五爱街最美美女 一天1q"
    assert records["4463"].cover_text is None  # a blank cover
    assert sum(1 for r in records.values() if r.cover_text) == 4033


def test_category_levels(csv_path, records):
    assert records["3"].category == "摄影"
    by_level = {level: read_kuairec(csv_path, category_level=level) for level in (2, 3)}
    level2 = {r.id: r.category for r in by_level[2]}
    level3 = {r.id: r.category for r in by_level[3]}
    assert (level2["3"], level3["3"]) == ("主题摄影", "景物摄影")
    assert level3["0"] is None  # -124 / UNKNOWN
    level1 = {r.id: r.category for r in records.values()}
    counts = {
        level: (len({c for c in cats.values() if c}), sum(c is None for c in cats.values()))
        for level, cats in ((1, level1), (2, level2), (3, level3))
    }
    assert counts == {1: (38, 40), 2: (137, 3583), 3: (220, 6832)}
    cats = kuairec_categories(csv_path)
    assert cats["3"] == ("摄影", "主题摄影", "景物摄影")
    assert cats["0"] == ("颜值", "颜值随拍", None)
    with pytest.raises(ValueError, match="category_level"):
        read_kuairec(csv_path, category_level=4)


def test_import_writes_a_manifest(csv_path, records, tmp_path):
    out = tmp_path / "kuairec.jsonl"
    report = import_kuairec(csv_path, out, category_level=1)
    assert (report.rows_read, report.records, report.skipped) == (10728, 10728, [])
    assert (report.videos_with_hashtags, report.distinct_hashtags) == (6117, 6059)
    assert report.distinct_categories == 38
    assert "records written: 10728" in str(report)
    back = {r.id: r for r in read_manifest(out)}
    assert len(back) == 10728
    for vid in ("4", "12", "1613", "6331"):
        assert back[vid] == records[vid]


def _write_csv(path, rows):
    header = ("video_id,manual_cover_text,caption,topic_tag,first_level_category_id,first_level_category_name,"
              "second_level_category_id,second_level_category_name,third_level_category_id,third_level_category_name")
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_reported_with_their_line(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [
        "0,UNKNOWN,#美食 好吃,[美食],12,美食,-124,UNKNOWN,-124,UNKNOWN",
        "1,UNKNOWN,short row,[]",
        "x,UNKNOWN,bad id,[],12,美食,-124,UNKNOWN,-124,UNKNOWN",
        "0,UNKNOWN,again,[],12,美食,-124,UNKNOWN,-124,UNKNOWN",
        '3,封面,"two\nlines #a",[a],12,美食,-124,UNKNOWN,-124,UNKNOWN',
        "4,UNKNOWN,no brackets,a,12,美食,-124,UNKNOWN,-124,UNKNOWN",
    ])
    with pytest.raises(ValueError, match=r"bad\.csv:3: expected 10 columns"):
        read_kuairec(path)
    lenient = read_kuairec(path, strict=False)
    assert [(r.id, r.caption, r.hashtags) for r in lenient] == [("0", "好吃", ["美食"]), ("3", "two lines", ["a"])]
    report = import_kuairec(path, tmp_path / "out.parquet")
    assert report.rows_read == 6 and report.records == 2
    assert [line for line, _ in report.skipped] == [3, 4, 5, 8]
    reasons = " | ".join(why for _, why in report.skipped)
    for part in ("expected 10 columns", "video_id", "duplicate id 0 (first on line 2)", "topic_tag"):
        assert part in reasons
    assert len(read_manifest(tmp_path / "out.parquet")) == 2


def test_missing_column_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("video_id,caption\n0,hi\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cols\.csv:1: header lacks column\(s\) manual_cover_text"):
        read_kuairec(path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_kuairec(tmp_path / "nope.csv")
