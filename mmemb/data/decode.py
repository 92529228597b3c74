"""Decode short videos into fixed-size frame stacks and log-mel spectrograms with PyAV.

Video: :func:`decode_frames` picks ``T`` presentation times (uniform, or random for training),
then decodes only what is needed to show the frame on screen at each time:

* a cheap demux-only pass lists every packet's timestamp and the keyframes (exact for variable
  frame rate, and the truth about where the clip really ends);
* decoding then runs forward from the start, and jumps with ``container.seek`` to the keyframe
  before a target only when that skips at least ``_SEEK_MIN_SKIP`` frames. A clip that is short
  relative to ``T`` (or has one keyframe) is thus one sequential pass, a long one a few seeks;
* only the selected frames are converted, by libswscale, straight to the output size
  (``frame.reformat(width, height, format="rgb24")``); no frame is ever converted at full size.

Audio: :func:`decode_audio` resamples any layout (stereo, 5.1, ...) to mono float at
``sample_rate``; :func:`log_mel` turns a fixed-length window of it into a log-mel spectrogram.

Bad input: :func:`probe`, :func:`decode_frames` and :func:`decode_audio` raise :class:`DecodeError`
with a ``reason`` from :data:`REASONS`; :func:`load_clip` never raises: it decodes each modality
separately and masks (``None``) the one that failed, with its reason, for the main process to count
(:class:`mmemb.data.failures.FailureLog`).

A source is a path, ``bytes``, or a binary file object (e.g. ``io.BytesIO`` from a shard).
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Literal, Union

import av
import numpy as np
import torch

__all__ = [
    "REASONS",
    "ClipInfo",
    "ClipSample",
    "DecodeConfig",
    "DecodeError",
    "decode_audio",
    "decode_frames",
    "load_clip",
    "log_mel",
    "mel_valid_frames",
    "probe",
]

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]
Mode = Literal["uniform", "random"]

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

_SEEK_MIN_SKIP = 8  # seek only when continuing forward would decode at least this many unneeded frames
_TRUNCATED_SHARE = 0.75  # a stream ending before this share of its stated duration ...
_TRUNCATED_MIN_GAP = 1.0  # ... and more than this many seconds early is truncated
_MEL_EPS = 1e-6  # log(mel + eps)


@dataclass
class DecodeConfig:
    """How clips become tensors: ``T`` frames of ``S x S`` pixels and an ``(n_mels, F)`` log-mel."""

    num_frames: int = 8  # T frames per clip
    frame_size: int = 112  # output frames are frame_size x frame_size
    # How a frame of another aspect ratio (vertical 9:16, 4:3, odd sizes) becomes square:
    # "center_crop" (default) resizes the short side to frame_size, then crops the centre;
    # "pad" resizes the long side to frame_size and letterboxes with black; "stretch" ignores aspect.
    # Display rotation metadata (phone clips) and non-square pixels are honoured first.
    resize_policy: Literal["center_crop", "pad", "stretch"] = "center_crop"
    # Training samples a random segment of this many seconds (None = the whole clip), then T frame
    # times uniformly inside it, each jittered within its slot (see train_jitter).
    train_clip_seconds: float | None = None
    train_jitter: float = 0.5  # random shift of each training frame time, as a share of its slot (0 = none)
    sample_rate: int = 16000  # audio is resampled to this rate, mono
    n_mels: int = 64  # mel bands
    # Length of the log-mel window. Shorter audio is zero-padded at the end (ClipSample.mel_valid
    # says how many mel frames are real); longer audio is cropped: centre for eval, random for train.
    audio_seconds: float = 4.0
    win_ms: float = 25.0  # STFT window length in milliseconds (n_fft is the next power of two)
    hop_ms: float = 10.0  # STFT hop in milliseconds
    # Decoder threads per clip: 1 suits DataLoader workers (they already fill the cores);
    # 0 lets FFmpeg use frame+slice threads on all cores ("AUTO"), which helps only with num_workers=0.
    decode_threads: int = 1

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"DecodeConfig.num_frames must be >= 1, got {self.num_frames}")
        if self.frame_size < 1:
            raise ValueError(f"DecodeConfig.frame_size must be >= 1, got {self.frame_size}")
        if self.resize_policy not in ("center_crop", "pad", "stretch"):
            raise ValueError("DecodeConfig.resize_policy must be center_crop, pad or stretch, "
                             f"got {self.resize_policy!r}")
        if self.train_clip_seconds is not None and self.train_clip_seconds <= 0:
            raise ValueError(f"DecodeConfig.train_clip_seconds must be > 0 or None, got {self.train_clip_seconds}")
        if not 0 <= self.train_jitter <= 1:
            raise ValueError(f"DecodeConfig.train_jitter must be in [0, 1], got {self.train_jitter}")
        if self.sample_rate < 1000:
            raise ValueError(f"DecodeConfig.sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if self.n_mels < 1:
            raise ValueError(f"DecodeConfig.n_mels must be >= 1, got {self.n_mels}")
        if self.audio_seconds <= 0:
            raise ValueError(f"DecodeConfig.audio_seconds must be > 0, got {self.audio_seconds}")
        if not 0 < self.hop_ms <= self.win_ms:
            raise ValueError(f"DecodeConfig needs 0 < hop_ms <= win_ms, got {self.hop_ms}, {self.win_ms}")
        if self.win_length > self.audio_samples:
            raise ValueError(f"DecodeConfig.win_ms={self.win_ms} is longer than audio_seconds={self.audio_seconds}")
        if self.decode_threads < 0:
            raise ValueError(f"DecodeConfig.decode_threads must be >= 0, got {self.decode_threads}")

    @property
    def audio_samples(self) -> int:
        """Samples in the log-mel window."""
        return int(round(self.audio_seconds * self.sample_rate))

    @property
    def win_length(self) -> int:
        """STFT window in samples."""
        return int(round(self.win_ms * self.sample_rate / 1000))

    @property
    def hop_length(self) -> int:
        """STFT hop in samples."""
        return max(1, int(round(self.hop_ms * self.sample_rate / 1000)))

    @property
    def n_fft(self) -> int:
        """FFT size: the next power of two >= the window."""
        return 1 << (self.win_length - 1).bit_length()

    @property
    def mel_frames(self) -> int:
        """F, the fixed number of log-mel frames (centred STFT)."""
        return self.audio_samples // self.hop_length + 1


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


@dataclass
class ClipSample:
    """One clip as :func:`load_clip` returns it; a failed or absent modality is ``None`` with a reason."""

    frames: torch.Tensor | None  # (T, 3, S, S) uint8 RGB
    mel: torch.Tensor | None  # (n_mels, F) float32 log-mel
    video_error: str | None  # a REASONS value, None when fine
    audio_error: str | None  # a REASONS value, "no_audio" when there is no audio stream, None when fine
    mel_valid: int | None = None  # mel frames computed from real audio (< F when zero-padded)


# --------------------------------------------------------------------------- sources


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
            raise TypeError(f"mmemb/data/decode.py: unsupported video source type {type(source).__name__}")

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


# --------------------------------------------------------------------------- helpers


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream (cover-art pictures are skipped)."""
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


_MKV_DURATION = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def _stated_duration(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """Seconds the header says ``stream`` lasts: its own duration, a Matroska DURATION tag, else the container's."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    m = _MKV_DURATION.match(tag.strip()) if isinstance(tag, str) else None
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _looks_truncated(end: float, start: float, stated: float | None) -> bool:
    """Whether a stream that really spans ``[start, end]`` ends far before its stated duration."""
    if stated is None:
        return False
    got = end - start
    return got < _TRUNCATED_SHARE * stated and stated - got > _TRUNCATED_MIN_GAP


def _configure_threads(stream: av.stream.Stream, threads: int) -> None:
    """One decoder thread (for workers), or FFmpeg's automatic frame+slice threading."""
    cc = stream.codec_context
    if threads == 1:
        cc.thread_count = 1
    else:
        cc.thread_type = "AUTO"
        cc.thread_count = threads  # 0 = one per core


def _warn_once(label: str, modality: str, reason: str, detail: str) -> None:
    """Log a decode failure once per (source, modality) per process (``modality`` may be "video and audio")."""
    keys = {(label, m) for m in modality.split(" and ")}
    with _WARNED_LOCK:
        if keys <= _WARNED:
            return
        _WARNED.update(keys)
    log.warning("cannot decode %s of %s: %s%s", modality, label, reason, f" ({detail})" if detail else "")


_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


# --------------------------------------------------------------------------- probe


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


# --------------------------------------------------------------------------- video


@dataclass
class _VideoIndex:
    """Packet timestamps of a video stream from a demux-only pass."""

    times: list[float]  # sorted presentation times (s) of every packet
    keys: list[float]  # sorted times of keyframe packets
    key_pts: list[int]  # the same, in stream time_base units (for seeking)
    start: float  # first presentation time
    end: float  # last presentation time + one frame


def _scan_video(container: av.container.InputContainer, stream, src: _Input) -> _VideoIndex:
    """List packet times and keyframes; raises ``truncated``/``decode`` for broken streams."""
    tb = float(stream.time_base)
    pts_list: list[int] = []
    keys: list[int] = []
    durations: list[int] = []
    try:
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or packet.size == 0:
                continue
            pts_list.append(ts)
            durations.append(packet.duration or 0)
            if packet.is_keyframe:
                keys.append(ts)
    except av.error.FFmpegError as e:
        if not pts_list:
            raise DecodeError(src.label, "decode", f"demuxing failed: {e}") from None
        end = max(pts_list) * tb
        raise DecodeError(src.label, "truncated", f"demuxing failed after {end:.2f}s: {e}") from None
    stated = _stated_duration(container, stream)
    if not pts_list:
        reason = "truncated" if stated else "decode"
        raise DecodeError(src.label, reason, "no video packets")
    order = sorted(range(len(pts_list)), key=pts_list.__getitem__)
    times = [pts_list[i] * tb for i in order]
    if durations[order[-1]]:
        last_dur = durations[order[-1]] * tb
    elif len(times) > 1:
        last_dur = times[-1] - times[-2]  # unknown: as long as the previous frame (right for VFR too)
    else:
        rate = stream.average_rate or stream.guessed_rate
        last_dur = 1.0 / float(rate) if rate else 0.0
    if not keys:  # some demuxers flag no keyframes: assume the first packet is one
        keys = [pts_list[order[0]]]
    keys.sort()
    index = _VideoIndex(times, [k * tb for k in keys], keys, times[0], times[-1] + last_dur)
    if _looks_truncated(index.end, index.start, stated):
        raise DecodeError(src.label, "truncated", f"video ends at {index.end:.2f}s of a stated {stated:.2f}s")
    return index


def _sample_times(start: float, end: float, cfg: DecodeConfig, mode: Mode,
                  generator: torch.Generator | None) -> list[float]:
    """T ascending frame times in ``[start, end)``: slot centres, or a jittered random segment."""
    t = cfg.num_frames
    dur = max(end - start, 0.0)
    if mode == "uniform":
        return [start + (i + 0.5) * dur / t for i in range(t)]
    if mode != "random":
        raise ValueError(f"mmemb/data/decode.py: mode must be 'uniform' or 'random', got {mode!r}")
    length = dur
    seg0 = start
    if cfg.train_clip_seconds is not None and cfg.train_clip_seconds < dur:
        length = cfg.train_clip_seconds
        seg0 = start + float(torch.rand((), generator=generator)) * (dur - length)
    jitter = (torch.rand(t, generator=generator) - 0.5) * cfg.train_jitter  # (T,) in [-j/2, j/2)
    slot = length / t
    return [seg0 + (i + 0.5 + float(jitter[i])) * slot for i in range(t)]


def _frame_rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation of ``frame`` in quarter turns (0..3)."""
    try:
        deg = frame.rotation
    except Exception:  # no display matrix support for this frame
        return 0
    return int(round((deg or 0) / 90.0)) % 4


def _to_rgb(frame: av.VideoFrame, cfg: DecodeConfig, sar: float = 1.0) -> np.ndarray:
    """Convert one frame to ``(S, S, 3)`` uint8 RGB, scaled by libswscale straight to the output size.

    ``sar`` is the stream's sample (pixel) aspect ratio; the display rotation comes from the frame.
    """
    s = cfg.frame_size
    quarter = _frame_rotation(frame)
    w, h = frame.width, frame.height
    disp_w = w * sar  # display width honours non-square pixels
    disp_h = float(h)
    if quarter % 2:
        disp_w, disp_h = disp_h, disp_w  # shown rotated by 90 degrees
    if cfg.resize_policy == "stretch":
        out_w, out_h = s, s
    else:
        scale = s / (min(disp_w, disp_h) if cfg.resize_policy == "center_crop" else max(disp_w, disp_h))
        out_w = max(1, int(round(disp_w * scale)))
        out_h = max(1, int(round(disp_h * scale)))
        if cfg.resize_policy == "center_crop":
            out_w, out_h = max(out_w, s), max(out_h, s)
        else:
            out_w, out_h = min(out_w, s), min(out_h, s)
    enc_w, enc_h = (out_h, out_w) if quarter % 2 else (out_w, out_h)  # size before rotation
    # AREA averages over the source pixels (no aliasing on big downscales) and costs ~1 ms at 720p;
    # one swscale thread, since DataLoader workers already fill the cores.
    rgb = frame.reformat(width=enc_w, height=enc_h, format="rgb24", interpolation="AREA",
                         threads=1).to_ndarray()  # (enc_h, enc_w, 3)
    if quarter:
        rgb = np.rot90(rgb, k=quarter)  # (out_h, out_w, 3)
    if cfg.resize_policy == "center_crop":
        top, left = (out_h - s) // 2, (out_w - s) // 2
        rgb = rgb[top:top + s, left:left + s]  # (S, S, 3)
    elif cfg.resize_policy == "pad":
        canvas = np.zeros((s, s, 3), dtype=np.uint8)  # (S, S, 3) black
        top, left = (s - out_h) // 2, (s - out_w) // 2
        canvas[top:top + out_h, left:left + out_w] = rgb
        rgb = canvas
    return np.ascontiguousarray(rgb)


class _FrameReader:
    """Decodes forward through a video stream, seeking ahead over long gaps, and returns the
    frame shown at each (ascending) target time, converted to RGB.

    It takes over the container that :func:`_scan_video` demuxed to its end: the first target
    always seeks (to the start, or straight to the keyframe it needs).
    """

    def __init__(self, src: _Input, container: av.container.InputContainer, index: _VideoIndex,
                 cfg: DecodeConfig) -> None:
        self.src, self.index, self.cfg = src, index, cfg
        self.container = container
        self.stream = _video_stream(self.container)
        self.rewind = True  # the demuxer sits at the end of the file after the scan
        _configure_threads(self.stream, cfg.decode_threads)
        self.fps = float(self.stream.average_rate or self.stream.guessed_rate or 25)
        sar = self.stream.sample_aspect_ratio or self.stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar and 0.1 < float(sar) < 10 else 1.0
        self.frames = self.container.decode(self.stream)
        self.cur: tuple[float, av.VideoFrame] | None = None  # last decoded frame with time <= target
        self.peek: tuple[float, av.VideoFrame] | None = None  # next decoded frame (time > target)
        self.eof = False
        self.decoded = 0  # frames decoded (for tests / benchmarks)
        self.seeks = 0
        self.can_seek = True
        self.cache: dict[float, np.ndarray] = {}

    def close(self) -> None:
        self.container.close()

    def _next(self) -> tuple[float, av.VideoFrame] | None:
        """The next decoded frame and its time, or None at the end of the stream."""
        if self.eof:
            return None
        try:
            frame = next(self.frames)
        except StopIteration:
            self.eof = True
            return None
        except av.error.DecoderNotFoundError as e:
            raise DecodeError(self.src.label, "codec", str(e)) from None
        except av.error.FFmpegError as e:
            if self.decoded:
                raise DecodeError(self.src.label, "truncated",
                                  f"decoding failed after {self.decoded} frames: {e}") from None
            raise DecodeError(self.src.label, "decode", str(e)) from None
        self.decoded += 1
        t = frame.time
        if t is None:  # no timestamp: continue from the previous frame
            last = self.peek or self.cur
            t = last[0] + 1.0 / self.fps if last else self.index.start
        return t, frame

    def _seek(self, key_pts: int) -> None:
        """Jump to the keyframe at ``key_pts`` (stream time_base) and restart decoding there."""
        self.container.seek(key_pts, stream=self.stream, backward=True)
        self.frames = self.container.decode(self.stream)
        self.cur = self.peek = None
        self.eof = False
        self.seeks += 1

    def _restart(self) -> None:
        """Reopen the source and decode from the start (when a seek landed past its target)."""
        self.container.close()
        self.container = self.src.open()
        self.stream = _video_stream(self.container)
        _configure_threads(self.stream, self.cfg.decode_threads)
        self.frames = self.container.decode(self.stream)
        self.cur = self.peek = None
        self.eof = False
        self.can_seek = False
        self.rewind = False

    def _maybe_seek(self, target: float) -> None:
        """Seek to the keyframe before the frame shown at ``target`` if that skips enough frames."""
        idx = self.index
        shown = idx.times[max(bisect.bisect_right(idx.times, target) - 1, 0)]
        k = max(bisect.bisect_right(idx.keys, shown) - 1, 0)
        key_time = idx.keys[k]
        pos = self.peek[0] if self.peek else (self.cur[0] if self.cur else None)
        if pos is None:  # nothing decoded yet: decoding starts at the first packet
            skipped = bisect.bisect_left(idx.times, key_time)
        else:
            skipped = bisect.bisect_left(idx.times, key_time) - bisect.bisect_right(idx.times, pos)
        if not self.can_seek or skipped < _SEEK_MIN_SKIP:
            if not self.rewind:
                return
            k = 0  # back to the first keyframe
        self.rewind = False
        try:
            self._seek(idx.key_pts[k])
        except (av.error.FFmpegError, OSError) as e:  # unseekable: fall back to a sequential pass
            log.debug("seek failed in %s (%s); decoding sequentially", self.src.label, e)
            self._restart()
            return
        first = self._next()
        if first is None or first[0] > shown + 0.5 / self.fps:
            self._restart()  # landed past the target (imprecise index): fall back to a sequential pass
            return
        self.peek = first

    def frame_at(self, target: float) -> np.ndarray:
        """RGB ``(S, S, 3)`` of the frame on screen at ``target`` seconds (the last with time <= target)."""
        self._maybe_seek(target)
        if self.peek is None and not self.eof:
            self.peek = self._next()
        while self.peek is not None and (self.cur is None or self.peek[0] <= target):
            self.cur, self.peek = self.peek, self._next()
        if self.cur is None:
            raise DecodeError(self.src.label, "decode", "no frame could be decoded")
        t, frame = self.cur
        if t not in self.cache:
            self.cache = {t: _to_rgb(frame, self.cfg, self.sar)}  # targets ascend: only the latest can repeat
        return self.cache[t]


def decode_frames(path: Source, cfg: DecodeConfig, mode: Mode = "uniform",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``(T, 3, S, S)`` uint8 RGB frames shown at T times spread over the clip; raises :class:`DecodeError`.

    ``uniform`` takes the centres of T equal slots of the whole clip (deterministic); ``random``
    takes a random ``train_clip_seconds`` segment (or the whole clip) and jitters each slot time
    with ``generator``. Frames are picked by presentation time, so variable frame rate works; a
    clip with fewer than T frames repeats the frame on screen at each time.
    """
    src = _Input(path)
    container = src.open()
    reader = None
    try:
        stream = _video_stream(container)
        if stream is None:
            raise DecodeError(src.label, "no_video_stream", f"{len(container.streams.audio)} audio stream(s) only")
        if stream.codec_context is None:
            raise DecodeError(src.label, "codec", f"no decoder for video codec id of stream {stream.index}")
        index = _scan_video(container, stream, src)
        times = _sample_times(index.start, index.end, cfg, mode, generator)
        reader = _FrameReader(src, container, index, cfg)
        rgb = np.stack([reader.frame_at(t) for t in times])  # (T, S, S, 3)
    except DecodeError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as e:
        raise DecodeError(src.label, "decode", f"{type(e).__name__}: {e}") from None
    finally:
        container.close()
        if reader is not None and reader.container is not container:  # reopened by a fallback
            reader.container.close()
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()  # (T, 3, S, S)


# --------------------------------------------------------------------------- audio


_PCM_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63}  # full scale of integer formats


def _mono_to_float(frame: av.AudioFrame) -> np.ndarray:
    """``(n,)`` float32 samples of a mono frame already at the target rate (skips a resampler's
    ~2-3 ms set-up per clip, which dominates for short clips)."""
    x = frame.to_ndarray().reshape(-1)  # (1, n) -> (n,)
    name = frame.format.name.rstrip("p")  # planar and packed are the same for one channel
    if name in _PCM_SCALE:
        offset = 128.0 if name == "u8" else 0.0
        return ((x.astype(np.float64) - offset) / _PCM_SCALE[name]).astype(np.float32)
    return x.astype(np.float32, copy=False)


def decode_audio(path: Source, cfg: DecodeConfig) -> torch.Tensor | None:
    """``(N,)`` float32 mono waveform at ``cfg.sample_rate`` (all channels downmixed by libswresample).

    Returns None when the source has no audio stream; raises :class:`DecodeError` for broken audio.
    """
    src = _Input(path)
    with src.open() as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise DecodeError(src.label, "codec", f"no decoder for audio codec id of stream {stream.index}")
        stream.codec_context.thread_count = 1
        resampler = None  # built on the first frame that is not already mono at the target rate
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if resampler is None and frame.sample_rate == cfg.sample_rate and frame.layout.nb_channels == 1:
                    chunks.append(_mono_to_float(frame))  # nothing to resample or downmix
                    continue
                if resampler is None:
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
                frame.pts = None  # resample by sample count; gaps in pts are not filled
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))  # (1, n) packed mono -> (n,)
            for out in resampler.resample(None) if resampler is not None else ():  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.DecoderNotFoundError as e:
            raise DecodeError(src.label, "codec", str(e)) from None
        except (av.error.FFmpegError, ValueError) as e:
            if chunks:
                raise DecodeError(src.label, "truncated", f"audio decoding failed: {e}") from None
            raise DecodeError(src.label, "decode", f"audio decoding failed: {e}") from None
        stated = _stated_duration(container, stream)
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    seconds = len(wave) / cfg.sample_rate
    if not chunks and stated:
        raise DecodeError(src.label, "truncated", "no audio samples decoded")
    if _looks_truncated(seconds, 0.0, stated):
        raise DecodeError(src.label, "truncated", f"audio ends at {seconds:.2f}s of a stated {stated:.2f}s")
    return torch.from_numpy(wave.astype(np.float32, copy=False))


@functools.lru_cache(maxsize=8)
def _mel_transform(sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
    """A cached torchaudio MelSpectrogram (power spectrum, centred frames)."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                                                hop_length=hop_length, n_mels=n_mels, power=2.0, center=True)


def mel_valid_frames(num_samples: int, cfg: DecodeConfig) -> int:
    """How many of the F log-mel frames come from real audio when it has ``num_samples`` samples."""
    n = min(num_samples, cfg.audio_samples)
    return min(cfg.mel_frames, n // cfg.hop_length + 1) if n > 0 else 0


def log_mel(wave: torch.Tensor, cfg: DecodeConfig, mode: Mode = "uniform",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n_mels, F)`` float32 ``log(mel + 1e-6)`` of a fixed ``audio_seconds`` window of ``wave``.

    Longer audio is cropped (centre for ``uniform``, random with ``generator`` for ``random``);
    shorter audio is zero-padded at the end (see :func:`mel_valid_frames`).
    """
    if wave.dim() != 1:
        raise ValueError(f"mmemb/data/decode.py: log_mel expects a (N,) waveform, got shape {tuple(wave.shape)}")
    n = cfg.audio_samples
    wave = wave.float()
    if wave.numel() > n:
        spare = wave.numel() - n
        if mode == "random":
            offset = int(torch.randint(0, spare + 1, (), generator=generator))
        elif mode == "uniform":
            offset = spare // 2
        else:
            raise ValueError(f"mmemb/data/decode.py: mode must be 'uniform' or 'random', got {mode!r}")
        wave = wave[offset:offset + n]  # (n,)
    elif wave.numel() < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.numel()))  # (n,)
    transform = _mel_transform(cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels)
    mel = transform(wave)  # (n_mels, F)
    return torch.log(mel + _MEL_EPS).float()


# --------------------------------------------------------------------------- both


_FILE_LEVEL = ("missing", "empty", "not_media")  # failures that doom the audio too


def load_clip(path: Source | None, cfg: DecodeConfig, train: bool = False,
              generator: torch.Generator | None = None) -> ClipSample:
    """Frames and log-mel of one clip; never raises for bad input.

    Each modality is decoded separately: a failure masks that modality (``None``) and records its
    reason (a :data:`REASONS` value; ``audio_error="no_audio"`` for a clip without an audio stream,
    which is not a failure). Each failure is logged as a warning once per (source, modality).
    ``train`` samples frames and the audio window at random (with ``generator``).
    """
    mode: Mode = "random" if train else "uniform"
    try:
        src = _Input(path)  # a file object is read once, for both modalities
    except Exception as e:  # noqa: BLE001 - never raise for bad input
        _warn_once(repr(path), "video and audio", "decode", f"{type(e).__name__}: {e}")
        return ClipSample(None, None, "decode", "decode")
    frames = mel = None
    video_error = audio_error = None
    mel_valid = None
    try:
        frames = decode_frames(src, cfg, mode, generator)
    except DecodeError as e:
        video_error = e.reason
        _warn_once(src.label, "video and audio" if e.reason in _FILE_LEVEL else "video", e.reason, e.detail)
    except Exception as e:  # noqa: BLE001 - anything else is a decode failure, not a crash
        video_error = "decode"
        _warn_once(src.label, "video", "decode", f"{type(e).__name__}: {e}")
    if video_error in _FILE_LEVEL:
        return ClipSample(None, None, video_error, video_error)
    try:
        wave = decode_audio(src, cfg)
        if wave is None:
            audio_error = "no_audio"
        else:
            mel = log_mel(wave, cfg, mode, generator)
            mel_valid = mel_valid_frames(wave.numel(), cfg)
    except DecodeError as e:
        audio_error = e.reason
        _warn_once(src.label, "audio", e.reason, e.detail)
    except Exception as e:  # noqa: BLE001
        audio_error = "decode"
        _warn_once(src.label, "audio", "decode", f"{type(e).__name__}: {e}")
    return ClipSample(frames, mel, video_error, audio_error, mel_valid)
