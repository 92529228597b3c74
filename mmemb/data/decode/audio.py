"""Audio: :func:`decode_audio` resamples any layout (stereo, 5.1, ...) to mono float at
``sample_rate``; :func:`log_mel` turns a fixed-length window of it into a log-mel spectrogram."""

from __future__ import annotations

import functools

import av
import numpy as np
import torch

from .config import DecodeConfig, Mode
from .container import Source, _decoded_share, _Input, _stated_duration
from .errors import DecodeError, Decoded, describe_partial

__all__ = ["decode_audio", "decode_sound", "log_mel", "mel_valid_frames"]

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
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise DecodeError(src.label, "codec", f"no decoder for audio codec id of stream {stream.index}")
        stream.codec_context.thread_count = 1
        resampler = None  # built on the first frame that is not already mono at the target rate
        chunks: list[np.ndarray] = []
        failed = None  # why decoding stopped partway
        last_pos = 0  # byte offset after the last packet read
        try:
            for packet in container.demux(stream):
                if packet.pos is not None and packet.pos >= 0:
                    last_pos = packet.pos + packet.size
                for frame in packet.decode():
                    if resampler is None and frame.sample_rate == cfg.sample_rate and frame.layout.nb_channels == 1:
                        chunks.append(_mono_to_float(frame))  # nothing to resample or downmix
                        continue
                    if resampler is None:
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
                    frame.pts = None  # resample by sample count; gaps in pts are not filled
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))  # (1, n) packed mono -> (n,)
        except av.error.DecoderNotFoundError as e:
            raise DecodeError(src.label, "codec", str(e)) from None
        except (av.error.FFmpegError, ValueError) as e:
            if not chunks:
                raise DecodeError(src.label, "decode", f"audio decoding failed: {e}") from None
            failed = f"audio decoding failed: {e}"  # keep what decoded
        try:
            for out in resampler.resample(None) if resampler is not None else ():  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as e:
            failed = failed or f"audio resampling failed: {e}"
        stated = _stated_duration(container, stream, src)
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    seconds = len(wave) / cfg.sample_rate
    if not chunks and stated:
        raise DecodeError(src.label, "truncated", "no audio samples decoded")
    out = torch.from_numpy(wave.astype(np.float32, copy=False))
    share = _decoded_share(seconds, stated)
    if share is not None:
        return Decoded(out, share, f"audio ends at {seconds:.2f}s: {describe_partial(share, stated)}"
                       + (f" ({failed})" if failed else ""))
    if failed is not None and not stated:  # no duration to compare with: the share of the bytes read
        size = src.size()
        share = min(1.0, last_pos / size) if size and last_pos else 1.0
        return Decoded(out, share, f"{failed}, after {share:.0%} of the bytes")
    return Decoded(out)


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
        if mode == "random":
            offset = int(torch.randint(0, spare + 1, (), generator=generator))
        elif mode == "uniform":
            offset = spare // 2
        else:
            raise ValueError(f"mmemb/data/decode/audio.py: mode must be 'uniform' or 'random', got {mode!r}")
        wave = wave[offset:offset + n]  # (n,)
    elif wave.numel() < n:
        wave = torch.nn.functional.pad(wave, (0, n - wave.numel()))  # (n,)
    transform = _mel_transform(cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length, cfg.n_mels)
    mel = transform(wave)  # (n_mels, F)
    return torch.log(mel + _MEL_EPS).float()
