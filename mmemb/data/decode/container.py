"""Opening sources and reading container headers: sources (path, bytes, file object), the checks
that a file declares more bytes than it has, stream durations, and :func:`probe`."""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Union

import av

from .errors import DecodeError

__all__ = ["ClipInfo", "Source", "probe"]

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]

_PARTIAL_SHARE = 0.97  # a stream decoding less than this share of its stated duration ...
_PARTIAL_MIN_GAP = 0.2  # ... and more than this many seconds short of it is partial (cut short)


@dataclass
class ClipInfo:
    """What :func:`probe` reads from the container header (nothing is decoded)."""

    duration: float  # seconds (container's, else longest stream's; 0.0 when unknown)
    fps: float | None  # average frame rate of the video stream
    width: int  # coded width of the video stream (0 without video)
    height: int
    video_codec: str | None  # FFmpeg codec name, "unknown" when no decoder exists
    audio_codec: str | None
    audio_channels: int | None
    audio_rate: int | None  # Hz
    has_video: bool
    has_audio: bool


class _Input:
    """A source normalised for repeated opening: a path on disk, or bytes in memory."""

    def __init__(self, source: "Source | _Input | None") -> None:
        if isinstance(source, _Input):
            self.path, self.data, self._label = source.path, source.data, source._label
            return
        self.path: str | None = None
        self.data: bytes | None = None
        self._label: str | None = None  # None: made from the bytes on demand (only failures need it)
        if source is None:
            self._label = "<no video>"
        elif isinstance(source, (str, os.PathLike)):
            self.path = os.fspath(source)
            self._label = self.path
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self.data = bytes(source)
        elif hasattr(source, "read"):
            name = getattr(source, "name", None)
            if hasattr(source, "getvalue"):
                self.data = source.getvalue()
            else:
                if hasattr(source, "seek"):
                    source.seek(0)
                self.data = source.read()
            self._label = name if isinstance(name, str) else None
        else:
            raise TypeError(f"mmemb/data/decode/container.py: unsupported video source type {type(source).__name__}")

    @property
    def label(self) -> str:
        """How errors and warnings name the source: its path, else its size and CRC-32."""
        if self._label is None:
            self._label = f"<{len(self.data)} bytes, crc32 {zlib.crc32(self.data):08x}>"
        return self._label

    def size(self) -> int:
        """Bytes in the source; raises ``missing``/``not_media`` for absent paths or directories."""
        if self.data is not None:
            return len(self.data)
        if self.path is None:
            raise DecodeError(self.label, "missing", "no video source")
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DecodeError(self.label, "missing", "no such file") from None
        except OSError as e:
            raise DecodeError(self.label, "missing", str(e)) from None
        if not os.path.isfile(self.path):
            raise DecodeError(self.label, "not_media", "not a regular file")
        return st.st_size

    def read_at(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset``."""
        if self.data is not None:
            return self.data[offset:offset + n]
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def open(self) -> av.container.InputContainer:
        """An open container; raises :class:`DecodeError` (missing, empty, not_media, truncated)."""
        size = self.size()
        if size == 0:
            raise DecodeError(self.label, "empty", "zero bytes")
        try:
            target = self.path if self.data is None else io.BytesIO(self.data)
            return av.open(target, mode="r", metadata_errors="ignore")
        except FileNotFoundError:
            raise DecodeError(self.label, "missing", "no such file") from None
        except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
            cut = _declared_beyond_end(self, size)
            if cut:
                raise DecodeError(self.label, "truncated", f"{cut}; open failed: {e}") from None
            raise DecodeError(self.label, "not_media", str(e)) from None


def _ebml_vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, length) or None."""
    if pos >= len(buf) or buf[pos] == 0:
        return None
    first = buf[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in buf[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, length


def _declared_beyond_end(src: _Input, size: int) -> str | None:
    """Why the container header says the file should be longer than it is, or None.

    Checks the top-level boxes of MP4/MOV (a box running past the end, or no ``moov`` index),
    the RIFF size of AVI, and the Segment size of Matroska/WebM.
    """
    head = src.read_at(0, 64)
    if head[:4] == b"RIFF" and len(head) >= 12:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return f"RIFF declares {declared} bytes, file has {size}" if declared > size else None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        ident = _ebml_vint(head, 0, keep_marker=True)
        hsize = _ebml_vint(head, 4, keep_marker=False)
        if ident is None or hsize is None:
            return None
        pos = 4 + hsize[1] + hsize[0]  # end of the EBML header
        seg = src.read_at(pos, 12)
        seg_id = _ebml_vint(seg, 0, keep_marker=True)
        if seg_id is None or seg_id[0] != 0x18538067:
            return None
        seg_size = _ebml_vint(seg, seg_id[1], keep_marker=False)
        if seg_size is None or seg_size[0] == (1 << (7 * seg_size[1])) - 1:  # unknown size (live)
            return None
        declared = pos + seg_id[1] + seg_size[1] + seg_size[0]
        return f"Matroska segment declares {declared} bytes, file has {size}" if declared > size else None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        pos, boxes = 0, []
        while pos + 8 <= size:
            box = src.read_at(pos, 16)
            n, kind = struct.unpack(">I4s", box[:8])
            if n == 1 and len(box) >= 16:
                n = struct.unpack(">Q", box[8:16])[0]
            elif n == 0:
                n = size - pos
            if n < 8:
                return None  # not a box structure we understand
            boxes.append(kind)
            if pos + n > size:
                return f"MP4 box {kind.decode('latin-1')!r} at {pos} declares {n} bytes, file has {size}"
            pos += n
        if b"moov" not in boxes:
            return "MP4 has no moov index"
    return None


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream (cover-art pictures are skipped)."""
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


_MKV_DURATION = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _avi_header_duration(src: _Input) -> float | None:
    """Seconds an AVI's main header (``avih``) declares: total frames x microseconds per frame.

    FFmpeg re-estimates the duration of an AVI that has lost its index (the ``idx1`` chunk at the
    end, the first thing a cut removes) from what is left, so only the header still says how long
    the clip was meant to be. An OpenDML ``dmlh`` frame count (files over 1 GiB) takes precedence.
    """
    if src.read_at(0, 12)[8:12] != b"AVI ":  # RIFF....AVI
        return None
    head = src.read_at(0, 4096)
    if head[:4] != b"RIFF":
        return None
    at = head.find(b"avih")
    if at < 0 or at + 8 + 20 > len(head):
        return None
    usec, _, _, _, frames = struct.unpack("<5I", head[at + 8:at + 28])  # MicroSecPerFrame ... TotalFrames
    dml = head.find(b"dmlh")
    if dml >= 0 and dml + 12 <= len(head):
        frames = max(frames, struct.unpack("<I", head[dml + 8:dml + 12])[0])  # dwGrandFrames
    return frames * usec / 1e6 if frames and usec else None


def _stream_duration(stream: av.stream.Stream) -> float | None:
    """Seconds the header says ``stream`` itself lasts (its duration, else a Matroska DURATION tag), or None."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    m = _MKV_DURATION.match(tag.strip()) if isinstance(tag, str) else None
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return None


def _stated_duration(container: av.container.InputContainer, stream: av.stream.Stream,
                     src: _Input | None = None) -> float | None:
    """Seconds the header says ``stream`` lasts: an AVI main header's (when ``src`` is given), the
    stream's own duration, a Matroska DURATION tag, else the container's."""
    if src is not None:
        avi = _avi_header_duration(src)
        if avi:
            return avi
    own = _stream_duration(stream)
    if own:
        return own
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _decoded_share(got: float, stated: float | None, frame: float = 0.0) -> float | None:
    """The share of ``stated`` seconds that ``got`` seconds of decodable media cover when that falls
    short of it (a source cut short), or None when the stream is whole (or its duration unknown).

    Short means more than :data:`_PARTIAL_MIN_GAP` seconds (and two frames of ``frame`` seconds)
    missing and under :data:`_PARTIAL_SHARE` of the stated duration: encoder padding, audio priming
    and rounding of the stated duration stay well inside both.
    """
    if not stated or stated <= 0:
        return None
    if got < _PARTIAL_SHARE * stated and stated - got > max(_PARTIAL_MIN_GAP, 2 * frame):
        return max(0.0, min(1.0, got / stated))
    return None


def decoder_threads(threads: int | None) -> int:
    """Decoder threads for ``DecodeConfig.decode_threads``: None is 1 inside a DataLoader worker and
    0 (FFmpeg picks one per core) elsewhere."""
    if threads is not None:
        return threads
    from torch.utils.data import get_worker_info

    return 1 if get_worker_info() is not None else 0


def _configure_threads(stream: av.stream.Stream, threads: int | None) -> None:
    """One decoder thread, or FFmpeg's automatic frame+slice threading with ``threads`` threads (0 =
    one per core); see :func:`decoder_threads`. A decoder already opened keeps its setting."""
    cc = stream.codec_context
    if cc.is_open:
        return
    n = decoder_threads(threads)
    if n == 1:
        cc.thread_count = 1
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = n


def probe(path: Source) -> ClipInfo:
    """Read stream facts from the header without decoding; raises :class:`DecodeError`."""
    src = _Input(path)
    with src.open() as container:
        v = _video_stream(container)
        a = container.streams.audio[0] if container.streams.audio else None
        duration = container.duration / av.time_base if container.duration and container.duration > 0 else 0.0
        if not duration:
            duration = max((_stated_duration(container, s) or 0.0 for s in container.streams), default=0.0)
        fps = None
        if v is not None:
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fps = float(rate) if rate else None
        vcc = v.codec_context if v is not None else None
        acc = a.codec_context if a is not None else None
        return ClipInfo(
            duration=float(duration),
            fps=fps,
            width=int(vcc.width) if vcc is not None else 0,
            height=int(vcc.height) if vcc is not None else 0,
            video_codec=(vcc.name if vcc is not None else "unknown") if v is not None else None,
            audio_codec=(acc.name if acc is not None else "unknown") if a is not None else None,
            audio_channels=int(acc.channels) if acc is not None else None,
            audio_rate=int(acc.sample_rate) if acc is not None else None,
            has_video=v is not None,
            has_audio=a is not None,
        )
