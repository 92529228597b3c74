"""One clip, both modalities: :func:`load_clip` decodes video and audio separately and never raises."""

from __future__ import annotations

from dataclasses import dataclass

import av
import torch

from .audio import log_mel, mel_valid_frames, sound_window
from .config import DecodeConfig, Mode
from .container import Source, _Input
from .errors import FILE_LEVEL, PARTIAL, DecodeError, warn_once
from .video import _decode_video

__all__ = ["ClipSample", "load_clip"]


@dataclass
class ClipSample:
    """One clip as :func:`load_clip` returns it; a failed or absent modality is ``None`` with a reason."""

    frames: torch.Tensor | None  # (T, 3, S, S) uint8 RGB
    mel: torch.Tensor | None  # (n_mels, F) float32 log-mel
    video_error: str | None  # a REASONS value, None when fine
    audio_error: str | None  # a REASONS value, "no_audio" when there is no audio stream, None when fine
    mel_valid: int | None = None  # mel frames computed from real audio (< F when zero-padded)
    # Share (0..1] of the stated duration that decodes when the stream is cut short (PARTIAL: the
    # frames / the audio window come from that part only); None when whole or masked
    video_partial: float | None = None
    audio_partial: float | None = None


def load_clip(path: Source | None, cfg: DecodeConfig, train: bool = False,
              generator: torch.Generator | None = None, audio: bool = True) -> ClipSample:
    """Frames and log-mel of one clip; never raises for bad input. ``audio=False`` (a model without an
    audio tower) decodes the frames only: the audio is neither indexed nor decoded, and ``mel`` and
    ``audio_error`` are None.

    Each modality is decoded separately: a failure masks that modality (``None``) and records its
    reason (a :data:`REASONS` value; ``audio_error="no_audio"`` for a clip without an audio stream,
    which is not a failure). A stream that decodes only partway (:data:`~.errors.PARTIAL`) is kept
    and reported in ``video_partial`` / ``audio_partial``. Each failure or partial stream is logged
    as a warning once per (source, modality). ``train`` samples frames and the audio window at
    random (with ``generator``).

    The clip is opened once for both modalities: the video's demux pass also indexes the audio
    packets, and the audio is decoded only around its log-mel window (:func:`sound_window`).
    """
    mode: Mode = "random" if train else "uniform"
    try:
        src = _Input(path)  # a file object is read once, for both modalities
    except Exception as e:  # noqa: BLE001 - never raise for bad input
        warn_once(repr(path), "video and audio", "decode", f"{type(e).__name__}: {e}")
        return ClipSample(None, None, "decode", "decode" if audio else None)
    try:
        container = src.open()
    except DecodeError as e:
        if e.reason in FILE_LEVEL:
            warn_once(src.label, "video and audio", e.reason, e.detail)
        else:  # e.g. an MP4 that lost its index: each modality fails on its own
            warn_once(src.label, "video", e.reason, e.detail)
            warn_once(src.label, "audio", e.reason, e.detail)
        return ClipSample(None, None, e.reason, e.reason if audio else None)
    with container:
        return _load_open_clip(src, container, cfg, mode, generator, audio)


def _load_open_clip(src: _Input, container: av.container.InputContainer, cfg: DecodeConfig, mode: Mode,
                    generator: torch.Generator | None, audio: bool = True) -> ClipSample:
    """:func:`load_clip` of an open container."""
    frames = mel = None
    video_error = audio_error = None
    mel_valid = video_partial = audio_partial = None
    state: dict[str, object] = {}  # what the video pass did: "scanned", "audio_index"
    try:
        video, _ = _decode_video(src, container, cfg, mode, generator, audio=audio, stats=state)
        frames, video_partial = video.data, video.partial
        if video_partial is not None:
            warn_once(src.label, "video", PARTIAL, video.detail)
    except DecodeError as e:
        video_error = e.reason
        warn_once(src.label, "video and audio" if e.reason in FILE_LEVEL else "video", e.reason, e.detail)
    except Exception as e:  # noqa: BLE001 - anything else is a decode failure, not a crash
        video_error = "decode"
        warn_once(src.label, "video", "decode", f"{type(e).__name__}: {e}")
    if video_error in FILE_LEVEL:
        return ClipSample(None, None, video_error, video_error if audio else None)
    if not audio:
        return ClipSample(frames, None, video_error, None, None, video_partial, None)
    audio_container = container
    try:
        audio_index = state.get("audio_index")
        if audio_index is None and state.get("scanned") and container.streams.audio:
            audio_container = src.open()  # demuxed by a video pass that failed before indexing the audio
        sound = sound_window(src, audio_container, cfg, mode, generator, audio_index)
        if sound is None:
            audio_error = "no_audio"
        else:
            mel = log_mel(sound.data, cfg, mode, generator)
            mel_valid = mel_valid_frames(sound.data.numel(), cfg)
            audio_partial = sound.partial
            if audio_partial is not None:
                warn_once(src.label, "audio", PARTIAL, sound.detail)
    except DecodeError as e:
        audio_error = e.reason
        warn_once(src.label, "audio", e.reason, e.detail)
    except Exception as e:  # noqa: BLE001
        audio_error = "decode"
        warn_once(src.label, "audio", "decode", f"{type(e).__name__}: {e}")
    finally:
        if audio_container is not container:
            audio_container.close()
    return ClipSample(frames, mel, video_error, audio_error, mel_valid, video_partial, audio_partial)
