import json

import pytest

from mmemb.data.manifest import ManifestError, Query, VideoRecord, check_manifest, read_manifest, write_manifest


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_jsonl_and_parquet(tmp_path):
    (tmp_path / "clips").mkdir()
    records = [
        VideoRecord(id="a", video=str(tmp_path / "clips" / "a.mp4"), caption="猫咪 cat", cover_text="封面",
                    asr="hello", hashtags=["萌宠", "cat"], queries=[Query("猫", 3.0)], comments=["好可爱"],
                    category="宠物", publish_time=1_600_000_000.0),
        VideoRecord(id="b"),
    ]
    for name in ("m.jsonl", "m.parquet"):
        path = write_manifest(records, tmp_path / name)
        back = read_manifest(path)
        assert back == records
    first = json.loads((tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["video"] == "clips/a.mp4"  # stored relative to the manifest


def test_missing_fields_are_none_not_invented(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", ['{"id": 7}', '{"id": "x", "title": "t", "caption": ""}'])
    a, b = read_manifest(path)
    assert a == VideoRecord(id="7")
    assert b.caption == "t"  # title is the alias of caption; empty caption counts as missing
    assert a.video is None and a.hashtags == [] and a.queries == []


def test_every_bad_record_reported_with_line_and_field(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", [
        '{"id": "ok", "queries": ["plain string query"]}',
        '{"caption": "no id"}',
        '{"id": "h", "hashtags": "notalist"}',
        '{this is not json',
        '{"id": "q", "queries": [{"text": "x", "clicks": -1}]}',
        '{"id": "ok"}',
        '{"id": "t", "publish_time": "yesterday"}',
        '{"id": "u", "colour": "red"}',
    ])
    records, issues = check_manifest(path)
    by_line = {i.line: i for i in issues}
    assert by_line[2].field == "id"
    assert by_line[3].field == "hashtags"
    assert by_line[4].field == "<line>" and "JSON" in by_line[4].message
    assert by_line[5].field == "queries[0].clicks"
    assert by_line[6].field == "id" and "duplicate" in by_line[6].message
    assert by_line[7].field == "publish_time"
    assert by_line[8].field == "colour" and "unknown field" in by_line[8].message
    assert [r.id for r in records] == ["ok", "u"]
    assert records[0].queries == [Query("plain string query", 1.0)]
    assert str(by_line[3]).startswith(f"{path}:3: field 'hashtags'")
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: field 'id'"):
        read_manifest(path)
    assert [r.id for r in read_manifest(path, strict=False)] == ["ok", "u"]


def test_iso_publish_time(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", ['{"id": "a", "publish_time": "2020-09-13T12:26:40Z"}'])
    assert read_manifest(path)[0].publish_time == 1_600_000_000.0


def test_missing_manifest_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_manifest(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", str(10**400)])
def test_non_finite_publish_time_is_an_error(tmp_path, value):
    path = _write_lines(tmp_path / "m.jsonl", ['{"id": "ok", "publish_time": 1600000000}',
                                               f'{{"id": "a", "publish_time": {value}}}'])
    records, issues = check_manifest(path)
    assert [r.id for r in records] == ["ok"]
    assert len(issues) == 1 and issues[0].line == 2 and issues[0].field == "publish_time"
    assert "finite" in issues[0].message
    with pytest.raises(ManifestError, match=rf"m\.jsonl:2: field 'publish_time'"):
        read_manifest(path)


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_non_finite_clicks_are_an_error(tmp_path, value):
    path = _write_lines(tmp_path / "m.jsonl", [f'{{"id": "a", "queries": [{{"text": "x", "clicks": {value}}}]}}'])
    _, issues = check_manifest(path)
    assert [(i.line, i.field) for i in issues] == [(1, "queries[0].clicks")]
    assert str(issues[0]).startswith(f"{path}:1: field 'queries[0].clicks': expected a finite number")


def test_non_finite_publish_time_in_parquet_is_an_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "publish_time": [1.6e9, float("nan"), None]}), path)
    records, issues = check_manifest(path)
    assert [r.id for r in records] == ["a", "c"]  # a Parquet null is a missing value, NaN is not
    assert records[1].publish_time is None
    assert [(i.line, i.field) for i in issues] == [(2, "publish_time")]


def test_manifest_error_names_the_first_bad_record_counts_the_rest_and_the_command(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", [
        '{"id": "ok"}',
        '{"id": "a", "publish_time": NaN}',
        '{"id": "u", "colour": "red"}',  # a warning, not a bad record
        '{"caption": "no id"}',
        '{broken',
    ])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert message == (f"{path}:2: field 'publish_time': expected a finite number of unix seconds, got nan "
                       f"(2 more bad records; run `mmemb data check {path}` to see them)")
    assert "\n" not in message
    assert info.value.issue.line == 2 and [i.line for i in info.value.issues] == [2, 4, 5]
    one = _write_lines(tmp_path / "one.jsonl", ['{"caption": "no id"}'])
    with pytest.raises(ManifestError, match=r"one\.jsonl:1: field 'id'.*\(no other bad record; run `mmemb data check"):
        read_manifest(one)
