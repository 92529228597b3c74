"""Video frames: an index of packet times, frame-time sampling, seeking, and conversion to RGB.

:func:`decode_frames` picks ``T`` presentation times (uniform, or random for training), then
decodes only what the keyframe structure requires to show the frame on screen at each time:

* a cheap demux-only pass lists every packet's timestamp and the keyframes (exact for variable
  frame rate, and the truth about where the clip really ends); the same pass indexes the audio
  packets for :func:`mmemb.data.decode.clip.load_clip`;
* the targets are grouped into *runs*: a run seeks to the keyframe at or before its first target's
  frame and decodes forward through its targets; the next target joins the run when its keyframe
  is not after the run's position (the frames in between are needed anyway), else it starts a new
  run. Each frame from a keyframe up to a target is thus decoded once, and no other frame is;
* a run sends the decoder exactly the packets up to its last target's frame, then drains it: with
  frame threading (``DecodeConfig.decode_threads``) no packet past the target is decoded ahead;
* only the selected frames are converted, by libswscale, straight to the output size
  (``frame.reformat(width, height, format="rgb24")``); no frame is ever converted at full size.

Every decision comes from the packet index; when the decoder disagrees with it (a seek that lands
past its keyframe, frames without timestamps) the reader falls back to one sequential pass from
the start, which picks frames by their decoded times as before.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

from .audio import _AudioIndex, _AudioPackets
from .config import DecodeConfig, Mode
from .container import Source, _configure_threads, _decoded_share, _Input, _stated_duration, _video_stream
from .errors import DecodeError, Decoded, describe_partial

__all__ = ["decode_frames", "decode_video"]

log = logging.getLogger(__package__)

_SEEK_MIN_SKIP = 1  # a target starts a new run (a seek) when continuing would decode this many unneeded frames


@dataclass
class _VideoIndex:
    """Packet timestamps of a video stream from a demux-only pass."""

    times: list[float]  # sorted presentation times (s) of every packet
    pts: list[int]  # the same, in stream time_base units (to match decoded frames and fed packets)
    keys: list[float]  # sorted times of keyframe packets
    key_pts: list[int]  # the same, in stream time_base units (for seeking)
    start: float  # first presentation time
    end: float  # last presentation time + one frame
    stated: float | None = None  # seconds the header says the stream lasts (None: unknown)
    # Share of the stated duration that the packets cover when they fall short (see PARTIAL), else None
    partial: float | None = None
    detail: str = ""  # why it is partial (for the warning)

    @property
    def frame_seconds(self) -> float:
        """Duration of the last frame (the typical frame duration for a constant rate)."""
        return self.end - self.times[-1]

    def clipped(self, last_time: float) -> "_VideoIndex":
        """This index without the packets after ``last_time`` (the last frame that decodes)."""
        n = max(bisect.bisect_right(self.times, last_time), 1)
        k = max(bisect.bisect_right(self.keys, last_time), 1)
        end = min(self.end, self.times[n - 1] + self.frame_seconds)
        return _VideoIndex(self.times[:n], self.pts[:n], self.keys[:k], self.key_pts[:k], self.start, end,
                           self.stated, self.partial, self.detail)


def _scan_video(container: av.container.InputContainer, stream, src: _Input,
                audio: av.audio.stream.AudioStream | None = None) -> tuple[_VideoIndex, _AudioIndex | None]:
    """List packet times and keyframes; raises ``truncated``/``decode`` when there are no packets.

    A stream whose packets stop short of its stated duration (a file cut short), or whose demuxing
    fails partway, is :data:`~.errors.PARTIAL`: ``partial`` says what share of the stated duration
    the packets cover (of the file's bytes, when the duration is unknown). With ``audio``, the same
    pass also indexes that stream's packets (the second value; None without ``audio`` or when it
    has no packets).
    """
    tb = float(stream.time_base)
    pts_list: list[int] = []
    keys: list[int] = []
    durations: list[int] = []
    audio_packets = _AudioPackets(audio) if audio is not None else None
    demux_error = None
    last_pos = 0  # byte offset of the last packet read
    try:
        for packet in container.demux(stream, *([audio] if audio is not None else [])):
            if audio_packets is not None and packet.stream_index == audio.index:
                audio_packets.add(packet)
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None or packet.size == 0:
                continue
            pts_list.append(ts)
            durations.append(packet.duration or 0)
            if packet.pos is not None and packet.pos >= 0:
                last_pos = packet.pos + packet.size
            if packet.is_keyframe:
                keys.append(ts)
    except av.error.FFmpegError as e:
        if not pts_list:
            raise DecodeError(src.label, "decode", f"demuxing failed: {e}") from None
        demux_error = e
    stated = _stated_duration(container, stream, src)
    if not pts_list:
        reason = "truncated" if stated else "decode"
        raise DecodeError(src.label, reason, "no video packets")
    order = sorted(range(len(pts_list)), key=pts_list.__getitem__)
    pts = [pts_list[i] for i in order]
    times = [p * tb for p in pts]
    if durations[order[-1]]:
        last_dur = durations[order[-1]] * tb
    elif len(times) > 1:
        last_dur = times[-1] - times[-2]  # unknown: as long as the previous frame (right for VFR too)
    else:
        rate = stream.average_rate or stream.guessed_rate
        last_dur = 1.0 / float(rate) if rate else 0.0
    if not keys:  # some demuxers flag no keyframes: assume the first packet is one
        keys = [pts[0]]
    keys.sort()
    index = _VideoIndex(times, pts, [k * tb for k in keys], keys, times[0], times[-1] + last_dur, stated)
    failed = f" (demuxing failed: {demux_error})" if demux_error is not None else ""
    index.partial = _decoded_share(index.end - index.start, stated, last_dur)
    if index.partial is not None:
        index.detail = f"video ends at {index.end:.2f}s: {describe_partial(index.partial, stated)}{failed}"
    elif demux_error is not None and not stated:  # no duration to compare with: the share of the bytes read
        size = src.size()
        index.partial = min(1.0, last_pos / size) if size and last_pos else 1.0
        index.detail = f"video ends at {index.end:.2f}s, {index.partial:.0%} into the file{failed}"
    audio_index = audio_packets.index(container, src, demux_error) if audio_packets is not None else None
    return index, audio_index


def _sample_times(start: float, end: float, cfg: DecodeConfig, mode: Mode,
                  generator: torch.Generator | None) -> list[float]:
    """T ascending frame times in ``[start, end)``: slot centres, or a jittered random segment."""
    t = cfg.num_frames
    dur = max(end - start, 0.0)
    if mode == "uniform":
        return [start + (i + 0.5) * dur / t for i in range(t)]
    if mode != "random":
        raise ValueError(f"mmemb/data/decode/video.py: mode must be 'uniform' or 'random', got {mode!r}")
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
    """Returns the frames shown at ascending target times, converted to RGB, decoding only what the
    keyframe structure requires (runs, see the module docstring).

    It takes over the container that :func:`_scan_video` demuxed to its end: the first run always
    seeks (straight to the keyframe it needs). ``decoded`` counts the frames the decoder returned.
    """

    def __init__(self, src: _Input, container: av.container.InputContainer, index: _VideoIndex,
                 cfg: DecodeConfig) -> None:
        self.src, self.index, self.cfg = src, index, cfg
        self.container = container
        self.stream = _video_stream(self.container)
        _configure_threads(self.stream, cfg.decode_threads)
        self.fps = float(self.stream.average_rate or self.stream.guessed_rate or 25)
        sar = self.stream.sample_aspect_ratio or self.stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar and 0.1 < float(sar) < 10 else 1.0
        self.packets: Iterator[av.Packet] = iter(())  # the current run's packets, from its keyframe on
        self.want: set[int] = set()  # timestamps of packets the current run has yet to send the decoder
        self.queue: deque[av.VideoFrame] = deque()  # decoded frames not taken yet (presentation order)
        self.drained = True  # the current run sent its last wanted packet and drained the decoder
        self.cur: tuple[float, av.VideoFrame] | None = None  # last decoded frame with time <= target
        self.peek: tuple[float, av.VideoFrame] | None = None  # next decoded frame (time > target)
        self.eof = False  # the stream ended, or decoding failed: nothing more decodes in this run
        self.decoded = 0  # frames the decoder returned (for tests / benchmarks)
        self.last_good: float | None = None  # time of the latest frame decoded before a failure
        self.failed: str | None = None  # why decoding stopped partway (then the stream ends at last_good)
        self.seeks = 0
        self.sequential = False  # fell back to one pass from the start (no seeking)
        self.cache: dict[float, np.ndarray] = {}

    def close(self) -> None:
        self.container.close()

    def frames_at(self, targets: list[float]) -> list[np.ndarray]:
        """RGB ``(S, S, 3)`` of the frame on screen at each ascending ``targets`` time (seconds): the
        last frame with time <= target (the first frame for a target before it)."""
        idx = self.index
        shown = [idx.pts[max(bisect.bisect_right(idx.times, t) - 1, 0)] for t in targets]  # frame on screen
        runs = self._plan(targets)
        out: list[np.ndarray] = []
        for r, (key, members) in enumerate(runs):
            if self.failed is None and not self._start_run(key, {shown[j] for j in members}):
                members = [j for _, later in runs[r:] for j in later]
                self._restart({shown[j] for j in members})
                out.extend(self._frame_for(targets[j], shown[j]) for j in members)
                break
            out.extend(self._frame_for(targets[j], shown[j]) for j in members)
        return out

    def _plan(self, targets: list[float]) -> list[tuple[int, list[int]]]:
        """The targets (by position) grouped into runs, each with the keyframe (index into
        ``index.keys``) it starts from: a target joins the current run unless continuing from the
        run's last frame would decode at least ``_SEEK_MIN_SKIP`` frames before its own keyframe."""
        idx = self.index
        runs: list[tuple[int, list[int]]] = []
        last = -1  # index into idx.times of the current run's last target frame
        for j, t in enumerate(targets):
            shown = max(bisect.bisect_right(idx.times, t) - 1, 0)
            k = max(bisect.bisect_right(idx.keys, idx.times[shown]) - 1, 0)
            first = bisect.bisect_left(idx.times, idx.keys[k])  # the keyframe's place among the frames
            if runs and first - (last + 1) < _SEEK_MIN_SKIP:
                runs[-1][1].append(j)
                last = max(last, shown)
                continue
            if not runs and first < _SEEK_MIN_SKIP:
                k = 0  # so few frames before the keyframe: start at the beginning
            runs.append((k, [j]))
            last = shown
        return runs

    def _seek(self, key_pts: int) -> None:
        """Jump to the keyframe at ``key_pts`` (stream time_base); the seek flushes the decoder."""
        self.container.seek(key_pts, stream=self.stream, backward=True)
        self.packets = self.container.demux(self.stream)
        self.queue.clear()
        self.cur = self.peek = None
        self.eof = False
        self.drained = True
        self.seeks += 1

    def _start_run(self, k: int, wanted: set[int]) -> bool:
        """Seek to keyframe ``k`` and set up a run that decodes until the packets ``wanted`` (their
        timestamps) are sent; False when the seek fails or lands past that keyframe."""
        key_pts = self.index.key_pts[k]
        try:
            self._seek(key_pts)
            # a seek lands on an indexed keyframe at or before the one asked for: skip up to it
            for packet in self.packets:
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    if packet.size == 0:
                        break  # end of the stream
                    continue
                if ts == key_pts:
                    self.packets = itertools.chain([packet], self.packets)
                    self.want = set(wanted)
                    self.drained = False
                    return True
                if ts > key_pts and packet.is_keyframe:
                    break  # past it
        except (av.error.FFmpegError, OSError) as e:  # unseekable: fall back to a sequential pass
            log.debug("seek failed in %s (%s); decoding sequentially", self.src.label, e)
        return False

    def _restart(self, wanted: set[int]) -> None:
        """Reopen the source and decode the targets left in one pass from the start (when a seek
        fails or lands past its keyframe: an imprecise index)."""
        self.container = self.src.open()  # the caller closes the container it passed in
        self.stream = _video_stream(self.container)
        _configure_threads(self.stream, self.cfg.decode_threads)
        self.packets = self.container.demux(self.stream)
        self.queue.clear()
        self.cur = self.peek = None
        self.eof = False
        self.failed = None  # a fresh pass from the start finds out again where decoding stops
        self.sequential = True
        self.want = set(wanted)
        self.drained = False

    def _feed(self) -> None:
        """Send the decoder the run's next packet (and drain it after the last wanted one, so that a
        threaded decoder decodes nothing ahead); queue the frames it returns."""
        cc = self.stream.codec_context
        try:
            packet = next(self.packets, None)
            while packet is not None and packet.size == 0 and (packet.pts is not None or packet.dts is not None):
                packet = next(self.packets, None)  # an empty packet inside the stream (a dropped frame)
            if packet is None or packet.size == 0:  # the end of the stream
                frames = cc.decode(self._drain_packet())
                self.eof = self.drained = True
            else:
                self.want.discard(packet.pts if packet.pts is not None else packet.dts)
                frames = cc.decode(packet)
                if not self.want:
                    frames = frames + cc.decode(self._drain_packet())
                    self.drained = True
        except av.error.DecoderNotFoundError as e:
            raise DecodeError(self.src.label, "codec", str(e)) from None
        except av.error.FFmpegError as e:
            if not self.decoded:
                raise DecodeError(self.src.label, "decode", str(e)) from None
            self.eof = True  # the stream ends where decoding fails: what decoded so far is kept
            self.failed = f"decoding failed after {self.decoded} frames: {e}"
            return
        self.decoded += len(frames)
        self.queue.extend(frames)

    def _drain_packet(self) -> av.Packet:
        """An empty packet: sent to the decoder, it returns every frame still inside (timed in the
        stream's time_base, which PyAV takes from the packet)."""
        packet = av.Packet()
        packet.time_base = self.stream.time_base
        return packet

    def _next(self) -> tuple[float, av.VideoFrame] | None:
        """The next decoded frame of the current run and its time, or None when the run is over
        (or the stream ended, or decoding failed)."""
        while not self.queue:
            if self.eof or self.drained:
                return None
            self._feed()
        frame = self.queue.popleft()
        t = frame.time
        if t is None:  # no timestamp: continue from the previous frame
            last = self.peek or self.cur
            t = last[0] + 1.0 / self.fps if last else self.index.start
        self.last_good = t if self.last_good is None else max(self.last_good, t)
        return t, frame

    def _frame_for(self, target: float, shown_pts: int) -> np.ndarray:
        """RGB of the frame on screen at ``target``: the last decoded frame with time <= target. A
        frame whose timestamp is the index's ``shown_pts`` is that frame (no other packet lies
        between it and the target), so the next frame is decoded only when timestamps disagree."""
        while True:
            if self.peek is None:
                if self.cur is not None and self.cur[1].pts == shown_pts and self.cur[0] <= target:
                    break
                self.peek = self._next()
                if self.peek is None:
                    break
            if self.cur is None or self.peek[0] <= target:
                self.cur, self.peek = self.peek, None
            else:
                break
        if self.cur is None:
            raise DecodeError(self.src.label, "decode", "no frame could be decoded")
        t, frame = self.cur
        if t not in self.cache:
            self.cache = {t: _to_rgb(frame, self.cfg, self.sar)}  # targets ascend: only the latest can repeat
        return self.cache[t]


def _cut_at_failure(index: _VideoIndex, reader: _FrameReader) -> _VideoIndex:
    """``index`` without what follows the last frame ``reader`` decoded before decoding failed, and
    partial by the share of the stated duration (else of the packets' span) that is left."""
    whole = index.stated or (index.end - index.start)
    cut = index.clipped(reader.last_good)
    share = _decoded_share(cut.end - cut.start, whole, cut.frame_seconds)
    if share is not None:
        cut.partial = share if cut.partial is None else min(cut.partial, share)
        cut.detail = f"{reader.failed}: {describe_partial(cut.partial, cut.stated)}"
    return cut


def decode_video(path: Source, cfg: DecodeConfig, mode: Mode = "uniform",
                 generator: torch.Generator | None = None) -> Decoded[torch.Tensor]:
    """``(T, 3, S, S)`` uint8 RGB frames shown at T times spread over the clip, and whether the clip
    decodes only partway (:attr:`Decoded.partial`); raises :class:`DecodeError`.

    ``uniform`` takes the centres of T equal slots of the whole clip (deterministic); ``random``
    takes a random ``train_clip_seconds`` segment (or the whole clip) and jitters each slot time
    with ``generator``. Frames are picked by presentation time, so variable frame rate works; a
    clip with fewer than T frames repeats the frame on screen at each time.

    A clip cut short is sampled within the part that decodes: its packets' span (not the stated
    duration), and when decoding fails partway, the frames before the failure (the times are then
    drawn again within them, from a fresh pass). Every returned frame is one that decoded.
    """
    src = _Input(path)
    with src.open() as container:
        return _decode_video(src, container, cfg, mode, generator)[0]


def _decode_video(src: _Input, container: av.container.InputContainer, cfg: DecodeConfig, mode: Mode,
                  generator: torch.Generator | None, audio: bool = False,
                  stats: dict[str, object] | None = None) -> tuple[Decoded[torch.Tensor], _AudioIndex | None]:
    """:func:`decode_video` on an open ``container`` (left open for the caller); with ``audio``, also
    the index of the first audio stream's packets (from the same demux pass). ``stats`` (when
    given) receives ``scanned`` (True once the container has been demuxed), ``audio_index`` (once
    the scan has made it, even when decoding then fails), ``decoded`` (frames the decoder
    returned) and ``seeks``."""
    readers: list[_FrameReader] = []
    try:
        stream = _video_stream(container)
        if stream is None:
            raise DecodeError(src.label, "no_video_stream", f"{len(container.streams.audio)} audio stream(s) only")
        if stream.codec_context is None:
            raise DecodeError(src.label, "codec", f"no decoder for video codec id of stream {stream.index}")
        audio_stream = container.streams.audio[0] if audio and container.streams.audio else None
        if stats is not None:
            stats["scanned"] = True
        index, audio_index = _scan_video(container, stream, src, audio_stream)
        if stats is not None:
            stats["audio_index"] = audio_index
        times = _sample_times(index.start, index.end, cfg, mode, generator)
        readers.append(_FrameReader(src, container, index, cfg))
        rgb = readers[-1].frames_at(times)  # [(S, S, 3)] * T
        if readers[-1].failed is not None and readers[-1].last_good is not None:
            index = _cut_at_failure(index, readers[-1])
            if times[-1] >= index.end:  # some times fell past the decodable end: draw them again within it
                times = _sample_times(index.start, index.end, cfg, mode, generator)
                readers.append(_FrameReader(src, container, index, cfg))
                rgb = readers[-1].frames_at(times)
        frames = np.stack(rgb)  # (T, S, S, 3)
    except DecodeError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as e:
        raise DecodeError(src.label, "decode", f"{type(e).__name__}: {e}") from None
    finally:
        for reader in readers:
            if reader.container is not container:  # reopened by a fallback to a sequential pass
                reader.container.close()
        if stats is not None:
            stats["decoded"] = sum(r.decoded for r in readers)
            stats["seeks"] = sum(r.seeks for r in readers)
    out = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, S, S)
    if index.partial is not None:
        return Decoded(out, index.partial, index.detail), audio_index
    return Decoded(out), audio_index


def decode_frames(path: Source, cfg: DecodeConfig, mode: Mode = "uniform",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The frames of :func:`decode_video` alone: ``(T, 3, S, S)`` uint8 RGB (within the decodable
    part of a clip cut short); raises :class:`DecodeError`."""
    return decode_video(path, cfg, mode, generator).data
