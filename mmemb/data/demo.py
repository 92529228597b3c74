"""The embedded demo corpus: real KuaiRec text paired with synthetic, category-styled clips.

:func:`build_demo` takes the real Kuaishou captions, cover texts, hashtags and categories of the
KuaiRec dataset (``assets/kuairec/kuairec_caption_category.csv``, CC BY-SA 4.0), keeps a balanced
sample of the most frequent first-level categories, and pairs every video with a short clip that is
*generated from its category only*: an H.264 (libx264, yuv420p) ``.mp4`` with an AAC audio track.
Each category gets a deterministic visual style (background hue, shape family, motion pattern,
number of objects) and sound (base pitch, rhythm); every clip adds its own jitter (position, phase,
speed, hue, size, noise), so clips of one category are alike but not identical. Hues and pitches are
shared between categories, so a model has to look at shape, motion and rhythm, not at one pixel.

Layout of the output folder::

    out_dir/manifest.jsonl      one record per video (``video`` = ``clips/<id>.mp4``)
    out_dir/clips/<id>.mp4      the generated clips
    out_dir/README.md           provenance and attribution (real text, synthetic pairing)
    out_dir/demo_config.json    the config the corpus was built with (written last)

The text and labels are real; the pairing with clips is synthetic. Nothing here is meant as a
benchmark of video understanding: it is a corpus on which every modality carries learnable signal,
small enough to build in well under a minute on two cores.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
import multiprocessing as mp
import sys
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

import mmemb

from .manifest import VideoRecord, write_manifest

__all__ = [
    "DEMO_VERSION",
    "DemoConfig",
    "DemoReport",
    "CategoryStyle",
    "category_style",
    "select_records",
    "synth_frames",
    "synth_audio",
    "write_clip",
    "build_demo",
    "default_demo_dir",
    "ensure_demo",
]

# Bump when the generator's output changes, so that ensure_demo rebuilds stale corpora.
DEMO_VERSION = 2  # 2: videos with hashtags are preferred (prefer_hashtags)

REPO_ROOT = Path(mmemb.__file__).resolve().parents[1]
DEFAULT_CSV = REPO_ROOT / "assets" / "kuairec" / "kuairec_caption_category.csv"

# Categories that say nothing about the content; never chosen as demo categories.
EXCLUDED_CATEGORIES = frozenset({"其他", "UNKNOWN", ""})

SHAPES = ("circle", "square", "triangle", "stripes", "rings", "checker")
MOTIONS = ("left_right", "up_down", "rotate", "zoom", "bounce", "flicker")
RHYTHMS = ("chord", "beeps", "vibrato")
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


@dataclass
class DemoConfig:
    """How the demo corpus is built; every field but ``workers`` changes the output."""

    csv_path: str = str(DEFAULT_CSV)  # KuaiRec caption/category CSV; default: the copy under assets/
    num_categories: int = 12  # the most frequent first-level categories, excluding 其他 / UNKNOWN / None
    videos_per_category: int = 100  # balanced; only videos with a non-empty caption or cover text
    prefer_hashtags: bool = True  # pick videos with hashtags first (then fill up), so tagging has labels
    frame_size: int = 64  # square clips, pixels (even: yuv420p)
    fps: int = 8  # frames per second of the clips
    seconds: float = 2.0  # clip duration
    sample_rate: int = 16000  # audio sample rate, Hz (mono AAC)
    seed: int = 0  # drives the sample of videos, their order and every clip's jitter
    workers: int = 2  # processes for synthesis and encoding, 0 = in-process
    style_noise: float = 1.0  # scale of the per-video jitter: 0 = all clips of a category identical
    crf: int = 30  # x264 constant rate factor (higher = smaller files)
    audio_bitrate: int = 24000  # AAC bit rate, bits/s

    def __post_init__(self) -> None:
        self.csv_path = str(self.csv_path)
        if self.num_categories < 1:
            raise ValueError(f"num_categories must be >= 1, got {self.num_categories}")
        if self.videos_per_category < 1:
            raise ValueError(f"videos_per_category must be >= 1, got {self.videos_per_category}")
        if self.frame_size < 16 or self.frame_size % 2:
            raise ValueError(f"frame_size must be even and >= 16 (yuv420p), got {self.frame_size}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if not self.seconds > 0 or self.num_frames < 1:
            raise ValueError(f"seconds must give at least one frame at {self.fps} fps, got {self.seconds}")
        if self.sample_rate not in AAC_RATES:
            raise ValueError(f"sample_rate must be one of {AAC_RATES} (AAC), got {self.sample_rate}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not (self.style_noise >= 0 and math.isfinite(self.style_noise)):
            raise ValueError(f"style_noise must be a finite number >= 0, got {self.style_noise}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.audio_bitrate < 8000:
            raise ValueError(f"audio_bitrate must be >= 8000, got {self.audio_bitrate}")

    @property
    def num_frames(self) -> int:
        """Frames per clip."""
        return int(round(self.fps * self.seconds))

    @property
    def num_samples(self) -> int:
        """Audio samples per clip."""
        return int(round(self.sample_rate * self.seconds))

    def output_key(self) -> dict:
        """The fields that determine the output (``workers`` does not), plus the generator version."""
        key = dataclasses.asdict(self)
        key.pop("workers")
        key["demo_version"] = DEMO_VERSION
        return key


@dataclass
class DemoReport:
    """What :func:`build_demo` made."""

    out_dir: Path  # the corpus folder
    num_videos: int  # records in the manifest (= clips written)
    categories: list[str]  # chosen categories; index = style index, most frequent first
    seconds_taken: float  # wall time of the whole build
    manifest: Path  # out_dir/manifest.jsonl
    clip_bytes: int = 0  # total size of the clips


# ----------------------------------------------------------------------------- category styles


@dataclass(frozen=True)
class CategoryStyle:
    """The deterministic look and sound of one category (its index among the chosen categories)."""

    index: int
    bg_hue: float  # background hue in [0, 1); shared by categories index and index + 6
    shape: str  # one of SHAPES
    motion: str  # one of MOTIONS
    num_objects: int  # 1..3
    pitch_hz: float  # base pitch; shared by categories whose index agrees mod 4
    rhythm: str  # one of RHYTHMS; with the pitch it identifies the category among the first 12


def category_style(index: int) -> CategoryStyle:
    """The style of category ``index``.

    Six background hues are each shared by two categories (``k`` and ``k + 6``), which then differ in
    shape and motion; four pitches times three rhythms give twelve distinct sounds. Visual
    combinations repeat after 36 categories, sounds are shifted a semitone per further 12.
    """
    if index < 0:
        raise ValueError(f"category index must be >= 0, got {index}")
    k = index
    semitones = 4 * (k % 4) + k // 12
    return CategoryStyle(
        index=k,
        bg_hue=(k % 6) / 6.0,
        shape=SHAPES[(k % 6 + 3 * ((k // 6) % 2) + k // 12) % 6],
        motion=MOTIONS[(5 * k + k // 6) % 6],
        num_objects=1 + (k + k // 6) % 3,
        pitch_hz=220.0 * 2.0 ** (semitones / 12.0),
        rhythm=RHYTHMS[k % 3],
    )


# ----------------------------------------------------------------------------- frames


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour in [0, 1] from HSV (hue wraps around)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _motion(motion: str, arg: np.ndarray) -> tuple[np.ndarray, ...]:
    """Offsets ``dx, dy``, rotation, scale and visibility per object and frame, each ``(n, T)``."""
    zeros, ones = np.zeros_like(arg), np.ones_like(arg)
    dx, dy, angle, scale, vis = zeros, zeros, zeros, ones, ones
    if motion == "left_right":
        dx = 0.45 * np.sin(arg)
    elif motion == "up_down":
        dy = 0.45 * np.sin(arg)
    elif motion == "rotate":  # spin on a small orbit
        angle = arg
        dx, dy = 0.15 * np.cos(arg), 0.15 * np.sin(arg)
    elif motion == "zoom":
        scale = 1.0 + 0.45 * np.sin(arg)
    elif motion == "bounce":  # floor at +0.4 (image y points down)
        dy = 0.4 - 0.8 * np.abs(np.sin(arg))
    elif motion == "flicker":  # static, blinking at 3x the base rate
        vis = np.where(np.sin(3.0 * arg) > 0, 1.0, 0.2)
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return dx, dy, angle, scale, vis


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of a shape of radius 1 in local coordinates ``u, v`` (any equal shapes)."""
    if shape == "circle":
        return u * u + v * v < 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.8
    if shape == "triangle":  # apex up
        return (v < 0.6) & (v > 2.0 * np.abs(u) - 1.1)
    if shape == "stripes":
        return (np.maximum(np.abs(u), np.abs(v)) < 1.0) & (np.sin(3.0 * np.pi * u) > 0)
    if shape == "rings":
        rad = np.sqrt(u * u + v * v)
        return (rad < 1.0) & (np.sin(3.0 * np.pi * rad) > 0)
    if shape == "checker":
        inside = np.maximum(np.abs(u), np.abs(v)) < 1.0
        return inside & ((np.floor(2.0 * u) + np.floor(2.0 * v)) % 2 == 0)
    raise ValueError(f"unknown shape {shape!r}")


def synth_frames(style: CategoryStyle, cfg: DemoConfig, rng: np.random.Generator) -> np.ndarray:
    """All frames of one clip at once, ``(T, S, S, 3)`` uint8 RGB."""
    T, S, n, jit = cfg.num_frames, cfg.frame_size, style.num_objects, cfg.style_noise
    t = np.arange(T) / cfg.fps  # (T,) seconds
    coords = ((np.arange(S) + 0.5) / S * 2.0 - 1.0).astype(np.float32)  # (S,) pixel centres in [-1, 1]
    ys, xs = coords[:, None], coords[None, :]  # (S, 1), (1, S)

    # Object layout: evenly on a circle (one object in the centre), plus per-video jitter.
    theta = 2.0 * np.pi * np.arange(n) / n + rng.uniform(-0.5, 0.5) * jit
    ring = 0.0 if n == 1 else 0.45
    cx0 = ring * np.cos(theta) + rng.uniform(-0.2, 0.2, n) * jit  # (n,)
    cy0 = ring * np.sin(theta) + rng.uniform(-0.2, 0.2, n) * jit  # (n,)
    radius = 0.38 / math.sqrt(n) * (1.0 + rng.uniform(-0.2, 0.2) * jit)
    speed = 1.0 + rng.uniform(-0.25, 0.25) * jit
    phase = rng.uniform(0.0, 2.0 * np.pi, n) * min(jit, 1.0)  # (n,)
    arg = 2.0 * np.pi * 0.5 * speed * t[None, :] + phase[:, None]  # (n, T): one cycle per 2 s

    dx, dy, angle, scale, vis = (a.astype(np.float32) for a in _motion(style.motion, arg))  # each (n, T)
    cx = (cx0[:, None] + dx)[..., None, None]  # (n, T, 1, 1)
    cy = (cy0[:, None] + dy)[..., None, None]
    cos, sin = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    r = (radius * scale)[..., None, None]
    X, Y = xs - cx, ys - cy  # (n, T, 1, S), (n, T, S, 1)
    u = (cos * X + sin * Y) / r  # (n, T, S, S)
    v = (-sin * X + cos * Y) / r
    mask = _shape_mask(style.shape, u, v) * vis[..., None, None]  # (n, T, S, S)
    mask = mask.max(axis=0)[..., None]  # (T, S, S, 1) float32

    bg = _hsv(style.bg_hue + rng.uniform(-0.05, 0.05) * jit,
              0.55 + rng.uniform(-0.15, 0.15) * jit, 0.6 + rng.uniform(-0.15, 0.15) * jit)
    fg = _hsv(style.bg_hue + 0.5 + rng.uniform(-0.08, 0.08) * jit,
              0.75 + rng.uniform(-0.1, 0.1) * jit, 0.95 - rng.uniform(0.0, 0.15) * jit)
    gradient = 1.0 + rng.uniform(-0.25, 0.25) * jit * ys[..., None]  # (S, 1, 1)
    background = np.clip(bg * gradient, 0.0, 1.0).astype(np.float32)  # (S, 1, 3)
    fg = fg.astype(np.float32)
    img = background + (fg - background) * mask  # (T, S, S, 3)
    if jit > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.02 * jit)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- audio


def synth_audio(style: CategoryStyle, cfg: DemoConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip's mono audio, ``(N,)`` float32 in [-1, 1]."""
    jit, sr = cfg.style_noise, cfg.sample_rate
    t = np.arange(cfg.num_samples) / sr  # (N,) seconds
    f0 = style.pitch_hz * (1.0 + rng.uniform(-0.02, 0.02) * jit)
    speed = 1.0 + rng.uniform(-0.2, 0.2) * jit
    phase = rng.uniform(0.0, 2.0 * np.pi) * min(jit, 1.0)
    if style.rhythm == "chord":  # major triad with a slow tremolo
        tone = sum(np.sin(2.0 * np.pi * f0 * m * t + i * phase) for i, m in enumerate((1.0, 1.25, 1.5))) / 3.0
        tone = tone * (0.8 + 0.2 * np.sin(2.0 * np.pi * 0.5 * speed * t + phase))
    elif style.rhythm == "beeps":  # on/off at 4 Hz with soft edges
        gate = np.clip(3.0 * np.sin(2.0 * np.pi * 4.0 * speed * t + phase), 0.0, 1.0)
        tone = np.sin(2.0 * np.pi * f0 * t) * gate
    elif style.rhythm == "vibrato":  # +-5 % frequency modulation at 5 Hz
        rate = 5.0 * speed
        tone = np.sin(2.0 * np.pi * f0 * t + 0.05 * f0 / rate * np.sin(2.0 * np.pi * rate * t + phase))
    else:
        raise ValueError(f"unknown rhythm {style.rhythm!r}")
    amp = 0.3 + rng.uniform(-0.1, 0.1) * jit
    wave = amp * tone
    if jit > 0:
        wave = wave + rng.uniform(0.005, 0.03) * jit * rng.standard_normal(t.shape)
    fade = np.clip(np.minimum(t, t[-1] - t) / 0.01, 0.0, 1.0)  # 10 ms fade in/out, no clicks
    return np.clip(wave * fade, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- encoding


def write_clip(path: str | Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int,
               crf: int = 30, audio_bitrate: int = 24000) -> int:
    """Write ``(T, S, S, 3)`` uint8 frames (H.264, yuv420p) and ``(N,)`` float audio (AAC mono) as an
    ``.mp4``; returns the file size in bytes."""
    import av

    T, H, W, _ = frames.shape
    with av.open(str(path), "w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = W, H, "yuv420p"
        vstream.options = {"preset": "ultrafast", "crf": str(crf)}
        vstream.codec_context.thread_count = 1  # parallelism comes from the worker processes
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = "mono"
        astream.bit_rate = audio_bitrate
        astream.options = {"aac_coder": "fast"}  # 3x faster than the default two-loop search

        for i in range(T):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(vstream.encode(frame))
        container.mux(vstream.encode(None))

        chunk = astream.codec_context.frame_size or 1024  # AAC takes 1024 samples per frame
        for start in range(0, len(audio), chunk):
            samples = np.ascontiguousarray(audio[None, start:start + chunk], dtype=np.float32)  # (1, n)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            frame.time_base = Fraction(1, sample_rate)
            container.mux(astream.encode(frame))
        container.mux(astream.encode(None))
    return Path(path).stat().st_size


def _clip_rng(seed: int, video_id: str) -> np.random.Generator:
    """The jitter generator of one clip: depends on the seed and the id, not on worker scheduling."""
    return np.random.default_rng([seed, zlib.crc32(video_id.encode("utf-8"))])


def _render_chunk(args: tuple[DemoConfig, list[tuple[str, int, str]]]) -> list[int]:
    """Worker: synthesise and write the clips ``(video_id, category_index, path)``; returns sizes."""
    cfg, tasks = args
    sizes = []
    for video_id, index, path in tasks:
        style, rng = category_style(index), _clip_rng(cfg.seed, video_id)
        frames = synth_frames(style, cfg, rng)
        audio = synth_audio(style, cfg, rng)
        sizes.append(write_clip(path, frames, audio, cfg.fps, cfg.sample_rate, cfg.crf, cfg.audio_bitrate))
    return sizes


# ----------------------------------------------------------------------------- records


def _has_text(record: VideoRecord) -> bool:
    return bool((record.caption or "").strip() or (record.cover_text or "").strip())


def _id_key(video_id: str) -> tuple:
    """Numeric ids in numeric order, others after them."""
    return (0, int(video_id), "") if video_id.isdigit() else (1, 0, video_id)


def _pick(pool: list[VideoRecord], n: int, prefer_hashtags: bool, rng: np.random.Generator) -> list[VideoRecord]:
    """``n`` records of ``pool`` at random (pool order), those with hashtags first when ``prefer_hashtags``."""
    if not prefer_hashtags:
        return [pool[i] for i in np.sort(rng.choice(len(pool), size=n, replace=False))]
    tagged = [i for i, r in enumerate(pool) if r.hashtags]
    untagged = [i for i, r in enumerate(pool) if not r.hashtags]
    first = rng.choice(len(tagged), size=min(n, len(tagged)), replace=False)
    rest = rng.choice(len(untagged), size=n - len(first), replace=False)
    picks = sorted([tagged[i] for i in first] + [untagged[i] for i in rest])
    return [pool[i] for i in picks]


def select_records(records: Sequence[VideoRecord], cfg: DemoConfig) -> tuple[list[VideoRecord], list[str]]:
    """Pick ``videos_per_category`` videos with text from each of the ``num_categories`` most frequent
    categories (counted among videos with text; ties by name), videos with hashtags first when
    ``cfg.prefer_hashtags`` (most videos carry none). Returns the records in a seeded shuffled order
    and the categories, most frequent first. Raises ``ValueError`` when there are
    too few categories or videos."""
    pools: dict[str, list[VideoRecord]] = {}
    for record in records:
        category = (record.category or "").strip()
        if category in EXCLUDED_CATEGORIES or not _has_text(record):
            continue
        pools.setdefault(category, []).append(record)
    ranked = sorted(pools, key=lambda c: (-len(pools[c]), c))
    if len(ranked) < cfg.num_categories:
        raise ValueError(f"asked for {cfg.num_categories} categories, only {len(ranked)} have videos with text")
    categories = ranked[: cfg.num_categories]
    rng = np.random.default_rng(cfg.seed)
    chosen: list[VideoRecord] = []
    for category in categories:
        pool = sorted(pools[category], key=lambda r: _id_key(r.id))
        if len(pool) < cfg.videos_per_category:
            raise ValueError(f"category {category!r} has {len(pool)} videos with text, "
                             f"fewer than videos_per_category={cfg.videos_per_category}")
        chosen.extend(_pick(pool, cfg.videos_per_category, cfg.prefer_hashtags, rng))
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order], categories


def _load_kuairec(csv_path: str) -> list[VideoRecord]:
    from .kuairec import read_kuairec  # imported late: only the builder needs the CSV reader

    return read_kuairec(csv_path, category_level=1)


# ----------------------------------------------------------------------------- building


README_TEXT = """\
# mmemb demo corpus

Generated by `mmemb.data.demo.build_demo` (generator version {version}); {num_videos} videos,
{per_cat} from each of {num_cat} categories: {categories}. Videos with hashtags were picked
first (`prefer_hashtags`), so the corpus has more hashtags than a random sample of KuaiRec.

## What is real and what is synthetic

- **Real:** the text and labels of every record (`caption`, `cover_text`, `hashtags`, `category`,
  and the `id`, which is the KuaiRec `video_id`) come from the KuaiRec dataset, unchanged except
  that `#hashtag` words were removed from captions (the hashtags are kept, raw, in `hashtags`),
  whitespace was collapsed and KuaiRec's "UNKNOWN" placeholders were dropped.
- **Synthetic:** the clips. KuaiRec ships no video. Each clip in `clips/` is *generated from the
  video's category only* (a colour, shape, motion and sound per category, plus random per-clip
  jitter); it is not the real video and shows nothing of its content. The pairing of text with
  clips is therefore artificial: use this corpus to check that a pipeline runs and learns, never to
  measure video understanding.
- There are no queries, comments or speech transcripts: KuaiRec has none, and none were invented.

## Attribution and license

The text and labels are from KuaiRec (Chongming Gao et al., "KuaiRec: A Fully-observed Dataset and
Insights for Evaluating Recommender Systems", CIKM 2022, https://kuairec.com). They are licensed under the
Creative Commons Attribution-ShareAlike 4.0 International license (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/; full text in the repository at
`assets/kuairec/LICENSE_CC-BY-SA-4.0.txt`). This corpus, as an adaptation of that data, is shared
under the same license.
"""


def _pool(workers: int):
    """A process pool. On Linux it forks: the workers need no re-import of the caller's script (no
    ``if __name__ == "__main__"`` guard needed) and start at once; they use only numpy and PyAV.
    Elsewhere the platform's default start method is used (spawn on macOS and Windows)."""
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    return ctx.Pool(workers)


def default_demo_dir() -> Path:
    """Where the quickstart keeps the demo corpus: ``<repo>/data/demo`` (``data/`` is git-ignored)."""
    return REPO_ROOT / "data" / "demo"


def build_demo(out_dir: str | Path, cfg: DemoConfig | None = None, progress: bool = True) -> DemoReport:
    """Build the demo corpus into ``out_dir`` (see the module docstring); replaces earlier clips."""
    from tqdm.auto import tqdm

    cfg = cfg if cfg is not None else DemoConfig()
    start = time.perf_counter()
    records, categories = select_records(_load_kuairec(cfg.csv_path), cfg)  # fails before touching out_dir
    out_dir = Path(out_dir)
    clips_dir = out_dir / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    for stale in (out_dir / "demo_config.json", out_dir / "manifest.jsonl"):  # config is written last:
        stale.unlink(missing_ok=True)  # it marks a complete build for ensure_demo
    for old in clips_dir.glob("*.mp4"):
        old.unlink()

    index = {c: i for i, c in enumerate(categories)}
    out_records, tasks = [], []
    for record in records:
        path = clips_dir / f"{record.id}.mp4"
        out_records.append(dataclasses.replace(record, video=str(path), queries=[], comments=[]))
        tasks.append((record.id, index[record.category.strip()], str(path)))

    per_chunk = max(1, min(32, len(tasks) // (8 * max(cfg.workers, 1))))
    chunks = [(cfg, tasks[i:i + per_chunk]) for i in range(0, len(tasks), per_chunk)]
    sizes: list[int] = []
    pool = _pool(cfg.workers) if cfg.workers > 0 else None  # started before tqdm's monitor thread
    try:
        results = pool.imap_unordered(_render_chunk, chunks) if pool is not None else map(_render_chunk, chunks)
        with tqdm(total=len(tasks), desc="demo clips", unit="clip", disable=not progress) as bar:
            for chunk_sizes in results:
                sizes.extend(chunk_sizes)
                bar.update(len(chunk_sizes))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()

    manifest = write_manifest(out_records, out_dir / "manifest.jsonl")
    (out_dir / "README.md").write_text(README_TEXT.format(
        version=DEMO_VERSION, num_videos=len(out_records), per_cat=cfg.videos_per_category,
        num_cat=len(categories), categories=", ".join(categories)), encoding="utf-8")
    (out_dir / "demo_config.json").write_text(
        json.dumps(cfg.output_key(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return DemoReport(out_dir=out_dir, num_videos=len(out_records), categories=categories,
                      seconds_taken=time.perf_counter() - start, manifest=manifest, clip_bytes=sum(sizes))


def ensure_demo(out_dir: str | Path | None = None, cfg: DemoConfig | None = None, progress: bool = True) -> Path:
    """The demo manifest's path, building the corpus first when ``manifest.jsonl`` is missing or the
    stored ``demo_config.json`` differs from ``cfg`` (default: :func:`default_demo_dir`, ``DemoConfig()``)."""
    out_dir = Path(out_dir) if out_dir is not None else default_demo_dir()
    cfg = cfg if cfg is not None else DemoConfig()
    manifest, stored = out_dir / "manifest.jsonl", out_dir / "demo_config.json"
    try:
        current = json.loads(stored.read_text(encoding="utf-8")) == cfg.output_key()
    except (OSError, ValueError):
        current = False
    if not (manifest.exists() and current):
        build_demo(out_dir, cfg, progress=progress)
    return manifest
