"""Audio-visual correspondence on the real clips in ``assets/clips``, with a training-free baseline.

Segmentation
------------
A clip of duration ``D`` (from :func:`mmemb.data.decode.probe`) is cut into
``n = max(1, floor(D + 0.05))`` consecutive segments of ``L = D / n`` seconds (about 1 s; the 0.05 s
slack lets a clip of 0.99 s count as one segment). :func:`decode_frames` has no time-window
argument, so the whole clip is decoded once with ``DecodeConfig(num_frames=n * F)`` in ``uniform``
mode: it returns the frames at the centres of ``n * F`` equal slots of the clip, so frames
``[s * F, (s + 1) * F)`` are the ``F`` frames of segment ``s`` (``F = frames_per_segment``, 16 by
default, i.e. 16 frames per second). Audio: :func:`decode_audio` (mono, 16 kHz) sliced at the same
boundaries ``[s * L, (s + 1) * L)``, and :func:`log_mel` of each slice with ``audio_seconds = L``.
Video and audio segment boundaries come from the same ``D``; the video frame index may start a
few ms after 0, which we ignore.

Rows
----
* ``motion_rms_corr`` (baseline, no training): video curve = mean absolute difference of consecutive
  grey frames (``F - 1`` values) linearly resampled to 16 bins; audio curve = RMS energy of the
  segment's waveform in 16 equal bins. Each curve is z-normalised (a flat curve becomes zeros), so
  the cosine of two curves is their Pearson correlation. Retrieval and recall by
  :func:`mmemb.eval.av.av_correspondence` (pessimistic ties: a zero curve never wins).
* an ``embed_fn`` given by the caller (a model) maps ``frames (N, F, 3, S, S) uint8`` and
  ``mel (N, n_mels, Fm) float32`` to ``(video_emb, audio_emb)``, each ``(N, D)``.

Chance: recall@1 of a random ranking is ``1 / N`` (``chance_r1``); with ``groups`` (the clip of each
segment) also the clip-level recall and its chance (``chance_r1_clip``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.decode import DecodeConfig, decode_audio, decode_frames, log_mel, probe
from .av import av_correspondence

__all__ = [
    "ClipSegments",
    "segment_count",
    "segment_clip",
    "load_segments",
    "motion_curve",
    "rms_curve",
    "baseline_embeddings",
    "run_av_benchmark",
    "markdown_table",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
AVEmbedFn = Callable[[torch.Tensor, torch.Tensor], tuple]


@dataclass
class ClipSegments:
    """The ~1 s segments of one clip."""

    path: str
    duration: float
    seg_seconds: float  # L
    frames: torch.Tensor  # (n, F, 3, S, S) uint8
    waves: list[torch.Tensor]  # n mono waveforms at sample_rate
    mel: torch.Tensor  # (n, n_mels, Fm) float32

    @property
    def n(self) -> int:
        return int(self.frames.shape[0])


def segment_count(duration: float, seg_seconds: float = 1.0) -> int:
    """Number of segments of a clip lasting ``duration`` seconds: ``max(1, floor(duration / seg + 0.05))``."""
    return max(1, int(math.floor(duration / seg_seconds + 0.05)))


def segment_clip(path: str | Path, frames_per_segment: int = 16, frame_size: int = 64,
                 sample_rate: int = 16000, n_mels: int = 64) -> ClipSegments:
    """Decode one clip into its segments (see the module docstring)."""
    info = probe(path)
    n = segment_count(info.duration)
    seg = info.duration / n
    vcfg = DecodeConfig(num_frames=n * frames_per_segment, frame_size=frame_size)
    frames = decode_frames(path, vcfg, mode="uniform")  # (n*F, 3, S, S)
    frames = frames.reshape(n, frames_per_segment, *frames.shape[1:])
    acfg = DecodeConfig(sample_rate=sample_rate, n_mels=n_mels, audio_seconds=seg)
    wave = decode_audio(path, acfg)
    if wave is None:
        wave = torch.zeros(int(round(info.duration * sample_rate)))
    waves, mels = [], []
    for s in range(n):
        a, b = int(round(s * seg * sample_rate)), int(round((s + 1) * seg * sample_rate))
        w = wave[a:b]
        waves.append(w)
        mels.append(log_mel(w, acfg))
    return ClipSegments(str(path), info.duration, seg, frames, waves, torch.stack(mels))


def load_segments(clip_dir: str | Path = "assets/clips", **kw) -> list[ClipSegments]:
    """Segments of every video file in ``clip_dir`` (sorted by name)."""
    paths = sorted(p for p in Path(clip_dir).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not paths:
        raise FileNotFoundError(f"no clips ({', '.join(VIDEO_EXTENSIONS)}) in {clip_dir}")
    return [segment_clip(p, **kw) for p in paths]


def _resample(curve: np.ndarray, bins: int) -> np.ndarray:
    if curve.size == 0:
        return np.zeros(bins)
    if curve.size == 1:
        return np.full(bins, float(curve[0]))
    return np.interp(np.linspace(0, curve.size - 1, bins), np.arange(curve.size), curve)


def _znorm(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=-1, keepdims=True)
    return np.where(sd > 1e-8, (x - x.mean(axis=-1, keepdims=True)) / np.maximum(sd, 1e-8), 0.0)


def motion_curve(frames: torch.Tensor, bins: int = 16) -> np.ndarray:
    """``(bins,)`` mean absolute grey-level difference of consecutive frames ``(F, 3, S, S)``, resampled."""
    grey = frames.float().mean(dim=1)  # (F, S, S)
    diff = (grey[1:] - grey[:-1]).abs().mean(dim=(1, 2)).numpy()  # (F-1,)
    return _resample(diff, bins)


def rms_curve(wave: torch.Tensor, bins: int = 16) -> np.ndarray:
    """``(bins,)`` RMS energy of ``wave`` in ``bins`` equal chunks (zeros for empty audio)."""
    w = wave.float().numpy()
    if w.size < bins:
        return np.zeros(bins)
    chunks = np.array_split(w, bins)
    return np.array([math.sqrt(float((c.astype(np.float64) ** 2).mean())) for c in chunks])


def baseline_embeddings(clips: Sequence[ClipSegments], bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """z-normalised motion curves (video) and RMS curves (audio), ``(N, bins)`` each."""
    video = np.stack([motion_curve(c.frames[s], bins) for c in clips for s in range(c.n)])
    audio = np.stack([rms_curve(w, bins) for c in clips for w in c.waves])
    return _znorm(video), _znorm(audio)


def run_av_benchmark(clip_dir: str | Path = "assets/clips", embed_fn: AVEmbedFn | None = None,
                     progress: bool = True, embed_name: str = "mmemb", bins: int = 16,
                     clips: Sequence[ClipSegments] | None = None) -> list[dict]:
    """AV correspondence rows (``method``, ``task="av_correspondence"``, metrics, ``seconds``)."""
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    if clips is None:
        clips = load_segments(clip_dir)
    decode_seconds = time.perf_counter() - t0
    groups = np.array([i for i, c in enumerate(clips) for _ in range(c.n)])
    say(f"[av] {len(clips)} clips -> {len(groups)} segments "
        f"({', '.join(f'{Path(c.path).name}: {c.n}' for c in clips)}) decoded in {decode_seconds:.1f}s")
    rows = []
    t = time.perf_counter()
    v, a = baseline_embeddings(clips, bins)
    m = av_correspondence(v, a, groups=groups, ks=(1,))
    rows.append({"method": f"motion_rms_corr{bins}", "task": "av_correspondence", **m,
                 "seconds": time.perf_counter() - t, "decode_seconds": decode_seconds})
    if embed_fn is not None:
        t = time.perf_counter()
        frames = torch.cat([c.frames for c in clips])  # (N, F, 3, S, S)
        mel = torch.cat([c.mel for c in clips]) if len({tuple(c.mel.shape[1:]) for c in clips}) == 1 else None
        if mel is None:  # clips with different segment lengths give different mel widths: pad to the widest
            width = max(c.mel.shape[-1] for c in clips)
            mel = torch.cat([torch.nn.functional.pad(c.mel, (0, width - c.mel.shape[-1]), value=math.log(1e-6))
                             for c in clips])
        ve, ae = embed_fn(frames, mel)
        m = av_correspondence(ve, ae, groups=groups, ks=(1,))
        rows.append({"method": embed_name, "task": "av_correspondence", **m, "seconds": time.perf_counter() - t})
    for r in rows:
        say(f"[av] {r['method']}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items() if isinstance(v, float)))
    return rows


_COLS = ("a2v_r1", "v2a_r1", "chance_r1", "a2v_r1_clip", "v2a_r1_clip", "chance_r1_clip", "n", "seconds")


def markdown_table(rows: Sequence[dict]) -> str:
    lines = ["### av_correspondence\n", "| method | " + " | ".join(_COLS) + " |", "|---|" + "---:|" * len(_COLS)]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(
            (f"{r[c]:.4f}" if c != "n" else str(int(r[c]))) if c in r else "" for c in _COLS) + " |")
    return "\n".join(lines) + "\n"
