"""The demo corpus: real KuaiRec text, synthetic category-styled clips with learnable signal."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from mmemb.data.demo import (
    DemoConfig,
    build_demo,
    category_style,
    default_demo_dir,
    ensure_demo,
    select_records,
    synth_audio,
    synth_frames,
)
from mmemb.data.decode import DecodeConfig, decode_audio, decode_frames
from mmemb.data.manifest import VideoRecord, read_manifest

CSV = Path(__file__).resolve().parents[1] / "assets" / "kuairec" / "kuairec_caption_category.csv"


def _tiny_cfg(**kw) -> DemoConfig:
    base = dict(csv_path=str(CSV), num_categories=3, videos_per_category=4, frame_size=32, fps=8,
                seconds=1.0, workers=2)
    base.update(kw)
    return DemoConfig(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 categories x 4 videos, built with two worker processes."""
    cfg = _tiny_cfg()
    report = build_demo(tmp_path_factory.mktemp("demo_tiny"), cfg, progress=False)
    return cfg, report


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """6 categories x 6 videos, built in-process, for the learnability checks."""
    cfg = _tiny_cfg(num_categories=6, videos_per_category=6, workers=0, seed=3)
    report = build_demo(tmp_path_factory.mktemp("demo_small"), cfg, progress=False)
    return cfg, report


def _csv_rows() -> dict[str, dict]:
    """The raw CSV rows by video id (bare carriage returns inside fields turned into spaces)."""
    text = re.sub(r"\r(?!\n)", " ", CSV.read_text(encoding="utf-8"))
    return {row["video_id"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}


def _stream_facts(path: str) -> tuple[dict, int, int]:
    """Codec facts of a clip read with PyAV, the number of video frames and of audio samples in it."""
    with av.open(path) as container:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        info = dict(vcodec=vstream.codec_context.name, acodec=astream.codec_context.name,
                    pix_fmt=vstream.codec_context.pix_fmt, rate=astream.codec_context.sample_rate,
                    channels=astream.codec_context.channels, size=(vstream.width, vstream.height))
        num_frames = sum(1 for _ in container.decode(video=0))
    with av.open(path) as container:
        num_samples = sum(f.samples for f in container.decode(audio=0))
    return info, num_frames, num_samples


def _decode(path: str, cfg: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, S, S, 3)`` uint8 and audio ``(N,)`` float32 as the data pipeline decodes them."""
    dcfg = DecodeConfig(num_frames=cfg.num_frames, frame_size=cfg.frame_size, sample_rate=cfg.sample_rate)
    frames = decode_frames(path, dcfg).permute(0, 2, 3, 1).numpy()  # (T, 3, S, S) -> (T, S, S, 3)
    return frames, decode_audio(path, dcfg).numpy()


# ----------------------------------------------------------------------------- styles and config


def test_category_styles_share_hues_but_stay_distinct():
    styles = [category_style(k) for k in range(12)]
    looks = {(s.bg_hue, s.shape, s.motion, s.num_objects) for s in styles}
    sounds = {(s.pitch_hz, s.rhythm) for s in styles}
    assert len(looks) == 12 and len(sounds) == 12
    hues = [s.bg_hue for s in styles]
    assert all(hues.count(h) == 2 for h in hues)  # a hue alone never identifies a category
    for k in range(6):  # categories sharing a hue differ in shape and in motion
        a, b = styles[k], styles[k + 6]
        assert a.bg_hue == b.bg_hue and a.shape != b.shape and a.motion != b.motion
    assert len({s.pitch_hz for s in styles}) == 4  # pitch alone never identifies one either
    assert category_style(5) == category_style(5)


def test_style_noise_controls_within_category_variation():
    cfg0, cfg1 = _tiny_cfg(style_noise=0.0), _tiny_cfg(style_noise=1.0)
    style = category_style(4)
    rngs = lambda: (np.random.default_rng(1), np.random.default_rng(2))  # noqa: E731
    r1, r2 = rngs()
    assert np.array_equal(synth_frames(style, cfg0, r1), synth_frames(style, cfg0, r2))
    assert np.array_equal(synth_audio(style, cfg0, r1), synth_audio(style, cfg0, r2))
    r1, r2 = rngs()
    f1, f2 = synth_frames(style, cfg1, r1), synth_frames(style, cfg1, r2)
    assert f1.shape == (8, 32, 32, 3) and f1.dtype == np.uint8
    assert not np.array_equal(f1, f2)
    a1 = synth_audio(style, cfg1, r1)
    assert a1.shape == (16000,) and a1.dtype == np.float32 and np.abs(a1).max() <= 1.0
    # Frames move: consecutive frames differ beyond the pixel noise.
    assert np.abs(np.diff(f1.astype(np.int16), axis=0)).mean() > 3


@pytest.mark.parametrize("bad", [dict(frame_size=33), dict(frame_size=8), dict(sample_rate=16001),
                                 dict(workers=-1), dict(style_noise=-0.1), dict(seconds=0.0),
                                 dict(videos_per_category=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        _tiny_cfg(**bad)


def test_select_records_balanced_top_categories():
    def rec(i, cat, caption="文字", cover=None):
        return VideoRecord(id=str(i), caption=caption, cover_text=cover, category=cat)

    records = ([rec(i, "美食") for i in range(5)] + [rec(10 + i, "舞蹈") for i in range(4)]
               + [rec(20 + i, "其他") for i in range(9)] + [rec(30 + i, None) for i in range(9)]
               + [rec(40 + i, "宠物", caption=None) for i in range(9)]  # no text at all
               + [rec(50, "宠物", caption=None, cover="封面")] + [rec(60 + i, "运动") for i in range(3)])
    cfg = _tiny_cfg(num_categories=2, videos_per_category=4, seed=1)
    chosen, cats = select_records(records, cfg)
    assert cats == ["美食", "舞蹈"]
    assert sorted(r.category for r in chosen) == ["美食"] * 4 + ["舞蹈"] * 4
    again, _ = select_records(records, cfg)
    assert [r.id for r in again] == [r.id for r in chosen]
    with pytest.raises(ValueError, match="运动"):  # only 3 videos in the third category
        select_records(records, _tiny_cfg(num_categories=3, videos_per_category=4))
    with pytest.raises(ValueError, match="categories"):
        select_records(records, _tiny_cfg(num_categories=5, videos_per_category=1))


def test_default_dir_is_git_ignored_data_folder():
    d = default_demo_dir()
    assert d.parts[-2:] == ("data", "demo")
    assert (d.parents[1] / "mmemb" / "__init__.py").exists()
    assert "/data/" in (d.parents[1] / ".gitignore").read_text().splitlines()


# ----------------------------------------------------------------------------- the built corpus


def test_manifest_real_text_balanced(tiny):
    cfg, report = tiny
    records = read_manifest(report.manifest)
    assert report.num_videos == len(records) == 12
    assert report.manifest == report.out_dir / "manifest.jsonl"
    counts = {c: sum(r.category == c for r in records) for c in report.categories}
    assert len(report.categories) == 3 and set(counts.values()) == {4}
    assert "其他" not in report.categories

    rows = _csv_rows()
    for r in records:
        row = rows[r.id]  # a real KuaiRec video
        assert r.category == row["first_level_category_name"]
        assert r.caption or r.cover_text
        if r.caption:  # the caption is the CSV's, with the #hashtag words taken out
            assert "#" not in r.caption
            assert all(word in row["caption"] for word in r.caption.split())
        if r.cover_text:
            assert r.cover_text == " ".join(row["manual_cover_text"].split())
        for tag in r.hashtags:
            assert tag in row["topic_tag"]
        assert not r.queries and not r.comments
        assert Path(r.video) == report.out_dir / "clips" / f"{r.id}.mp4" and Path(r.video).is_file()

    raw = [json.loads(line) for line in report.manifest.read_text(encoding="utf-8").splitlines()]
    assert all(row["video"] == f"clips/{row['id']}.mp4" for row in raw)
    assert sorted(p.name for p in (report.out_dir / "clips").iterdir()) == sorted(f"{r.id}.mp4" for r in records)
    readme = (report.out_dir / "README.md").read_text(encoding="utf-8")
    assert "KuaiRec" in readme and "CC BY-SA 4.0" in readme and "synthetic" in readme.lower()
    assert report.clip_bytes == sum(p.stat().st_size for p in (report.out_dir / "clips").iterdir())


def test_clips_are_h264_aac(tiny):
    cfg, report = tiny
    for r in read_manifest(report.manifest)[:4]:
        info, num_frames, num_samples = _stream_facts(r.video)
        assert info == dict(vcodec="h264", acodec="aac", pix_fmt="yuv420p", rate=16000, channels=1, size=(32, 32))
        assert num_frames == 8
        assert 16000 <= num_samples <= 16000 + 3 * 1024  # AAC adds priming and padding frames
        frames, audio = _decode(r.video, cfg)  # the pipeline's decoder reads them too
        assert frames.shape == (8, 32, 32, 3) and frames.std() > 10
        assert audio.shape[0] >= 16000 and np.abs(audio).max() > 0.1
        assert 2_000 < Path(r.video).stat().st_size < 40_000


def test_same_seed_same_corpus_and_ensure(tiny, tmp_path):
    cfg, report = tiny
    again = build_demo(tmp_path / "again", _tiny_cfg(workers=0), progress=False)  # workers do not matter
    assert again.manifest.read_bytes() == report.manifest.read_bytes()
    for name in ("README.md", "demo_config.json"):
        assert (again.out_dir / name).read_bytes() == (report.out_dir / name).read_bytes()
    clip = sorted((report.out_dir / "clips").iterdir())[0]
    assert (again.out_dir / "clips" / clip.name).read_bytes() == clip.read_bytes()

    # ensure_demo: no rebuild when the stored config matches, a rebuild when it does not.
    manifest = again.manifest
    stamp = manifest.stat().st_mtime_ns
    assert ensure_demo(again.out_dir, _tiny_cfg(workers=1), progress=False) == manifest
    assert manifest.stat().st_mtime_ns == stamp
    other = _tiny_cfg(seed=7, workers=0)
    ensure_demo(again.out_dir, other, progress=False)
    assert json.loads((again.out_dir / "demo_config.json").read_text())["seed"] == 7
    ids = {r.id for r in read_manifest(manifest)}
    assert ids != {r.id for r in read_manifest(report.manifest)}
    assert {p.stem for p in (again.out_dir / "clips").iterdir()} == ids  # stale clips removed
    with pytest.raises(FileNotFoundError):  # a bad CSV path leaves the corpus alone
        build_demo(again.out_dir, _tiny_cfg(csv_path=tmp_path / "missing.csv"), progress=False)
    assert {r.id for r in read_manifest(manifest)} == ids and (again.out_dir / "demo_config.json").exists()


# ----------------------------------------------------------------------------- learnable signal


def _visual_features(frames: np.ndarray) -> np.ndarray:
    x = frames.astype(np.float32) / 255.0  # (T, S, S, 3)
    motion = np.abs(np.diff(x, axis=0)).mean()
    centre = x.mean(axis=(0, 3))  # (S, S) where things usually are
    return np.concatenate([x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2)), [motion, centre.std()]])


def _audio_features(audio: np.ndarray, sr: int = 16000) -> np.ndarray:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sr)
    edges = 150.0 * 2.0 ** (np.arange(19) / 6.0)  # third-octave-ish bands, 150 Hz .. 1.2 kHz
    bands = np.array([spec[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    bands = np.log(bands / bands.sum() + 1e-4)
    env = np.sqrt(np.mean(audio[: len(audio) // 320 * 320].reshape(-1, 320) ** 2, axis=1))  # 20 ms RMS
    return np.concatenate([bands, [env.std() / (env.mean() + 1e-6)]])


def _loo_nearest_centroid(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of a nearest-centroid classifier on z-scored features."""
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    hits = 0
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        classes = np.unique(labels[keep])
        centroids = np.stack([z[keep][labels[keep] == c].mean(0) for c in classes])
        hits += classes[np.argmin(((centroids - z[i]) ** 2).sum(1))] == labels[i]
    return hits / len(z)


def test_signal_is_learnable_per_modality(small):
    cfg, report = small
    records = read_manifest(report.manifest)
    labels = np.array([report.categories.index(r.category) for r in records])
    assert np.bincount(labels).tolist() == [6] * 6
    vis, aud = [], []
    for r in records:
        frames, audio = _decode(r.video, cfg)
        vis.append(_visual_features(frames))
        aud.append(_audio_features(audio))
    vis, aud = np.stack(vis), np.stack(aud)
    chance = 1.0 / 6.0
    assert _loo_nearest_centroid(vis, labels) >= 0.75 > 3 * chance
    assert _loo_nearest_centroid(aud, labels) >= 0.75
    # Clips of a category are alike but not identical.
    same = [i for i in range(len(records)) if labels[i] == labels[0]]
    assert not np.allclose(vis[same[0]], vis[same[1]])
    # Shuffled labels give chance-level accuracy: the test itself can fail.
    rng = np.random.default_rng(0)
    assert _loo_nearest_centroid(vis, rng.permutation(labels)) < 0.5
