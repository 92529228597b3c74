"""The failure taxonomy of decoding: why a source could not be decoded (:data:`REASONS`, raised as
:class:`DecodeError`), and what decoded only partway (:data:`PARTIAL`, carried by :class:`Decoded`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["FILE_LEVEL", "PARTIAL", "REASONS", "DecodeError", "Decoded", "warn_once"]

log = logging.getLogger(__package__)  # one logger for the whole decode package: "mmemb.data.decode"

REASONS = ("missing", "empty", "not_media", "no_video_stream", "truncated", "codec", "decode")
"""Why a source could not be decoded:

* ``missing``: no such file (or no source at all);
* ``empty``: zero bytes;
* ``not_media``: FFmpeg cannot open it as a media file (text, image of garbage, ...);
* ``no_video_stream``: a media file without a video stream (audio only);
* ``truncated``: cut short so that nothing of the stream decodes (e.g. an MP4 that lost its
  ``moov`` index with the tail; a stream whose header survives but none of its packets);
* ``codec``: no decoder for the stream's codec in this FFmpeg build;
* ``decode``: any other failure.
"""

PARTIAL = "partial"
"""A stream that decodes only partway: cut short (a truncated AVI, MKV, WebM ...), or failing after
some frames. Not a failure: the modality keeps what decodes (frames are sampled, and the audio window
cropped, within the decodable part only) and is reported, with the share of its stated duration
that decodes (:attr:`Decoded.partial`), never masked. Counted beside :data:`REASONS` as
``(modality, "partial")`` by :class:`mmemb.data.failures.FailureLog`."""

FILE_LEVEL = ("missing", "empty", "not_media")
"""Failures of the whole file: they doom the audio too, and are reported once for both modalities."""


class DecodeError(Exception):
    """A source that cannot be decoded; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"DecodeError reason must be one of {REASONS}, got {reason!r}")
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # picklable across DataLoader workers
        return DecodeError, (self.path, self.reason, self.detail)


T = TypeVar("T")


@dataclass
class Decoded(Generic[T]):
    """One decoded modality and whether it covers the whole clip."""

    data: T  # frames (T, 3, S, S) uint8, or a waveform (N,) float32
    # Share (0..1] of the stream's stated duration that decodes, when it falls short (PARTIAL);
    # None when the stream is whole (or says nothing about its duration and decodes to its end)
    partial: float | None = None
    detail: str = ""  # how much decodes and why it stops, when partial (for the warning)


def describe_partial(share: float, stated: float | None) -> str:
    """How a warning words a partial stream: ``"decodes 48% of a stated 4.00s"``."""
    return f"decodes {share:.0%}" + (f" of a stated {stated:.2f}s" if stated else " of its packets")


def warn_once(label: str, modality: str, reason: str, detail: str) -> None:
    """Log a decode failure (or a :data:`PARTIAL` stream) once per (source, modality) per process
    (``modality`` may be "video and audio")."""
    keys = {(label, m) for m in modality.split(" and ")}
    with _WARNED_LOCK:
        if keys <= _WARNED:
            return
        _WARNED.update(keys)
    if reason == PARTIAL:
        log.warning("partial %s in %s: %s", modality, label, detail)
    else:
        log.warning("cannot decode %s of %s: %s%s", modality, label, reason, f" ({detail})" if detail else "")


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()
