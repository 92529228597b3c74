"""Audio: :func:`decode_audio` resamples any layout (stereo, 5.1, ...) to mono float at
``sample_rate``; :func:`log_mel` turns a fixed-length window of it into a log-mel spectrogram."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
import torch

from .config import DecodeConfig, Mode
from .container import Source, _decoded_share, _Input, _stated_duration
from .errors import DecodeError, Decoded, describe_partial

__all__ = ["decode_audio", "decode_sound", "log_mel", "mel_valid_frames", "sound_window"]

_MEL_EPS = 1e-6  # log(mel + eps)


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


@dataclass
class _AudioIndex:
    """Where the packets of an audio stream lie, from a demux-only pass (nothing decoded)."""

    start: float  # first packet's presentation time (s)
    end: float  # last packet's time + its duration (s)
    stated: float | None  # seconds the header says the stream lasts (None: unknown)
    # Share of the stated duration that the packets cover when they fall short (see PARTIAL), else None
    partial: float | None = None
    detail: str = ""  # why it is partial (for the warning)


class _AudioPackets:
    """Collects audio packet times during a demux pass (see :func:`_scan_audio`)."""

    def __init__(self, stream: av.audio.stream.AudioStream) -> None:
        self.stream = stream
        self.tb = float(stream.time_base)
        self.start: float | None = None
        self.end: float | None = None
        self.last_pos = 0  # byte offset after the last packet read

    def add(self, packet: av.Packet) -> None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.size == 0:
            return
        t = ts * self.tb
        self.start = t if self.start is None else min(self.start, t)
        self.end = max(self.end if self.end is not None else t, t + (packet.duration or 0) * self.tb)
        if packet.pos is not None and packet.pos >= 0:
            self.last_pos = packet.pos + packet.size

    def index(self, container: av.container.InputContainer, src: _Input,
              demux_error: Exception | None) -> _AudioIndex | None:
        """The index of what was collected (None: no packets); partial as :func:`decode_sound` says."""
        if self.start is None:
            return None
        stated = _stated_duration(container, self.stream, src)
        index = _AudioIndex(self.start, self.end, stated)
        failed = f" (demuxing failed: {demux_error})" if demux_error is not None else ""
        index.partial = _decoded_share(self.end - self.start, stated)
        if index.partial is not None:
            index.detail = f"audio ends at {self.end:.2f}s: {describe_partial(index.partial, stated)}{failed}"
        elif demux_error is not None and not stated:  # no duration to compare with: the share of the bytes
            size = src.size()
            index.partial = min(1.0, self.last_pos / size) if size and self.last_pos else 1.0
            index.detail = f"audio ends at {self.end:.2f}s, {index.partial:.0%} into the file{failed}"
        return index


def _scan_audio(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                src: _Input) -> _AudioIndex | None:
    """Index the packets of ``stream`` in a demux-only pass (None: no packets)."""
    packets = _AudioPackets(stream)
    demux_error = None
    try:
        for packet in container.demux(stream):
            packets.add(packet)
    except av.error.FFmpegError as e:
        demux_error = e
    return packets.index(container, src, demux_error)


class _Waveform:
    """Mono float chunks at the target rate from decoded frames: downmixed and resampled by
    libswresample, or taken as they are when already mono at that rate."""

    def __init__(self, cfg: DecodeConfig) -> None:
        self.cfg = cfg
        self.resampler: av.AudioResampler | None = None  # built on the first frame that needs one
        self.chunks: list[np.ndarray] = []
        self.samples = 0

    def add(self, frame: av.AudioFrame | None) -> None:
        """Append ``frame`` (None flushes the resampler)."""
        if frame is None:
            outs = self.resampler.resample(None) if self.resampler is not None else ()
        elif (self.resampler is None and frame.sample_rate == self.cfg.sample_rate
              and frame.layout.nb_channels == 1):
            outs, chunk = (), _mono_to_float(frame)  # nothing to resample or downmix
            self.chunks.append(chunk)
            self.samples += chunk.size
        else:
            if self.resampler is None:
                self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.cfg.sample_rate)
            frame.pts = None  # resample by sample count; gaps in pts are not filled
            outs = self.resampler.resample(frame)
        for out in outs:
            chunk = out.to_ndarray().reshape(-1)  # (1, n) packed mono -> (n,)
            self.chunks.append(chunk)
            self.samples += chunk.size

    def wave(self) -> np.ndarray:
        """``(N,)`` float32 samples so far."""
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)


def decode_sound(path: Source, cfg: DecodeConfig) -> Decoded[torch.Tensor] | None:
    """``(N,)`` float32 mono waveform at ``cfg.sample_rate`` (all channels downmixed by libswresample),
    and whether it decodes only partway (:attr:`Decoded.partial`: audio cut short, or decoding that
    fails after some samples; the waveform then holds what decoded).

    Returns None when the source has no audio stream; raises :class:`DecodeError` for broken audio.
    """
    src = _Input(path)
    with src.open() as container:
        if not container.streams.audio:
            return None
        stream = _audio_stream(src, container)
        return _decode_sound(src, container, stream, container.demux(stream), cfg)


def _audio_stream(src: _Input, container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The first audio stream, set to decode on one thread; raises ``codec`` without a decoder."""
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise DecodeError(src.label, "codec", f"no decoder for audio codec id of stream {stream.index}")
    if not stream.codec_context.is_open:
        stream.codec_context.thread_count = 1
    return stream


def _decode_sound(src: _Input, container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                  packets: Iterator[av.Packet], cfg: DecodeConfig) -> Decoded[torch.Tensor]:
    """:func:`decode_sound` of ``packets``, the whole stream from its first packet."""
    out = _Waveform(cfg)
    failed = None  # why decoding stopped partway
    last_pos = 0  # byte offset after the last packet read
    try:
        for packet in packets:
            if packet.pos is not None and packet.pos >= 0:
                last_pos = packet.pos + packet.size
            for frame in packet.decode():
                out.add(frame)
    except av.error.DecoderNotFoundError as e:
        raise DecodeError(src.label, "codec", str(e)) from None
    except (av.error.FFmpegError, ValueError) as e:
        if not out.chunks:
            raise DecodeError(src.label, "decode", f"audio decoding failed: {e}") from None
        failed = f"audio decoding failed: {e}"  # keep what decoded
    try:
        out.add(None)  # flush the resampler
    except (av.error.FFmpegError, ValueError) as e:
        failed = failed or f"audio resampling failed: {e}"
    stated = _stated_duration(container, stream, src)
    wave = out.wave()
    seconds = len(wave) / cfg.sample_rate
    if not out.chunks and stated:
        raise DecodeError(src.label, "truncated", "no audio samples decoded")
    data = torch.from_numpy(wave.astype(np.float32, copy=False))
    share = _decoded_share(seconds, stated)
    if share is not None:
        return Decoded(data, share, f"audio ends at {seconds:.2f}s: {describe_partial(share, stated)}"
                       + (f" ({failed})" if failed else ""))
    if failed is not None and not stated:  # no duration to compare with: the share of the bytes read
        size = src.size()
        share = min(1.0, last_pos / size) if size and last_pos else 1.0
        return Decoded(data, share, f"{failed}, after {share:.0%} of the bytes")
    return Decoded(data)


_PREROLL = 0.1  # seconds decoded before the window (codec overlap of a packet or two, resampler filter), dropped
_TAIL = 0.05  # seconds decoded past the window (what the resampler still holds back), dropped
_WINDOW_MIN_SPARE = 1.0  # decode only the window when the audio is this many seconds longer than it


def _window_offset(spare: int, mode: Mode, generator: torch.Generator | None) -> int:
    """Where a window starts within ``spare`` extra samples: the middle (``uniform``) or at random."""
    if mode == "random":
        return int(torch.randint(0, spare + 1, (), generator=generator))
    if mode == "uniform":
        return spare // 2
    raise ValueError(f"mmemb/data/decode/audio.py: mode must be 'uniform' or 'random', got {mode!r}")


def sound_window(path: Source, container: av.container.InputContainer, cfg: DecodeConfig,
                 mode: Mode = "uniform", generator: torch.Generator | None = None,
                 index: _AudioIndex | None = None) -> Decoded[torch.Tensor] | None:
    """The waveform of the log-mel window (``(n,)`` float32 mono at ``cfg.sample_rate``, ``n`` at
    most ``cfg.audio_samples``: :func:`log_mel` of it crops nothing), decoded from the open
    ``container`` of ``path`` (left open) only around that window.

    The window is placed as :func:`log_mel` places it in the whole waveform (centre for
    ``uniform``; for ``random`` the one draw from ``generator`` that :func:`log_mel` makes), the
    whole length being the packets' span (``index``, from the video's demux pass; when None, the
    container must not have been demuxed yet and is scanned here). The stream is sought to
    :data:`_PREROLL` seconds before the window and decoded to :data:`_TAIL` past its end. The
    window may sit a few milliseconds from where the whole decode puts it (the packets' span is not
    the decoded length to the sample, and Matroska/WebM timestamps are in milliseconds); its
    samples are the whole decode's up to that shift and the resampler's phase.

    Audio at most :data:`_WINDOW_MIN_SPARE` seconds longer than the window is decoded whole from
    its first packet on this container and cropped by :func:`log_mel` exactly as before. Audio
    whose decoding fails in the window, or whose seek lands wrong, is decoded whole from a fresh
    open (:func:`decode_sound`, partial as it says). Otherwise a stream whose packets stop short
    of its stated duration is partial by ``index``.

    Returns None when there is no audio stream; raises :class:`DecodeError` for broken audio.
    """
    src = _Input(path)
    if not container.streams.audio:
        return None
    stream = _audio_stream(src, container)
    if index is None:
        index = _scan_audio(container, stream, src)
    if index is None:  # no packets at all: decode_sound says what that is
        return decode_sound(src, cfg)
    n = cfg.audio_samples
    sr = cfg.sample_rate
    tb = float(stream.time_base)
    total = int(round((index.end - index.start) * sr))
    if total - n < _WINDOW_MIN_SPARE * sr:  # short: the whole stream, on this container
        try:
            container.seek(int(round(index.start / tb)), stream=stream, backward=True)
            packets = container.demux(stream)
            first = next((p for p in packets if p.size and (p.pts if p.pts is not None else p.dts) is not None), None)
        except (av.error.FFmpegError, OSError):
            first = None
        if first is None or abs((first.pts if first.pts is not None else first.dts) * tb - index.start) > 1e-6:
            return decode_sound(src, cfg)  # the seek did not land on the first packet
        return _decode_sound(src, container, stream, itertools.chain([first], packets), cfg)
    spare = total - n
    offset = _window_offset(spare, mode, generator)
    t0 = index.start + offset / sr  # time of the window's first sample
    t1 = t0 + n / sr
    out = _Waveform(cfg)
    first_time: float | None = None  # time of the first decoded sample
    try:
        container.seek(int(max(index.start, t0 - _PREROLL) / tb), stream=stream, backward=True)
        for packet in container.demux(stream):
            for frame in packet.decode():
                if first_time is None:
                    if frame.time is None:
                        continue  # untimed: wait for a frame that says where it is
                    first_time = frame.time
                out.add(frame)
            if first_time is not None and first_time + out.samples / sr >= t1 + _TAIL:
                break
    except av.error.DecoderNotFoundError as e:
        raise DecodeError(src.label, "codec", str(e)) from None
    except (av.error.FFmpegError, ValueError):
        first_time = None  # decoding fails in the window: decode the whole stream as before
    start = int(round((t0 - first_time) * sr)) if first_time is not None else -1
    if start < 0 or out.samples < start + n:  # landed past the window, or it does not decode to its end
        return decode_sound(src, cfg)
    wave = out.wave()[start:start + n]  # (n,)
    data = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return Decoded(data, index.partial, index.detail) if index.partial is not None else Decoded(data)


def decode_audio(path: Source, cfg: DecodeConfig) -> torch.Tensor | None:
    """The waveform of :func:`decode_sound` alone: ``(N,)`` float32 mono at ``cfg.sample_rate``
    (what decodes, for audio cut short); None without an audio stream; raises :class:`DecodeError`."""
    sound = decode_sound(path, cfg)
    return None if sound is None else sound.data


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
        raise ValueError(f"mmemb/data/decode/audio.py: log_mel expects a (N,) waveform, got shape {tuple(wave.shape)}")
    n = cfg.audio_samples
    wave = wave.float()
    if wave.numel() > n:
        spare = wave.numel() - n
        offset = _window_offset(spare, mode, generator)
        wave = wave[offset:offset + n]  # (n,)
    elif wave.numel() < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.numel()))  # (n,)
    transform = _mel_transform(cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels)
    mel = transform(wave)  # (n_mels, F)
    return torch.log(mel + _MEL_EPS).float()
