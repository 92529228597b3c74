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
