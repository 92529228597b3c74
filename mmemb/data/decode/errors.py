"""The failure taxonomy of decoding: :data:`REASONS`, :class:`DecodeError`, and warning once per source."""

from __future__ import annotations

import logging
import threading

__all__ = ["REASONS", "FILE_LEVEL", "DecodeError", "warn_once"]

log = logging.getLogger(__package__)  # one logger for the whole decode package: "mmemb.data.decode"

REASONS = ("missing", "empty", "not_media", "no_video_stream", "truncated", "codec", "decode")
"""Why a source could not be decoded:

* ``missing``: no such file (or no source at all);
* ``empty``: zero bytes;
* ``not_media``: FFmpeg cannot open it as a media file (text, image of garbage, ...);
* ``no_video_stream``: a media file without a video stream (audio only);
* ``truncated``: cut short: its header declares more bytes than the file has, or it decodes some
  frames then fails, or it ends far before its stated duration;
* ``codec``: no decoder for the stream's codec in this FFmpeg build;
* ``decode``: any other failure.
"""

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


def warn_once(label: str, modality: str, reason: str, detail: str) -> None:
    """Log a decode failure once per (source, modality) per process (``modality`` may be "video and audio")."""
    keys = {(label, m) for m in modality.split(" and ")}
    with _WARNED_LOCK:
        if keys <= _WARNED:
            return
        _WARNED.update(keys)
    log.warning("cannot decode %s of %s: %s%s", modality, label, reason, f" ({detail})" if detail else "")


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()
