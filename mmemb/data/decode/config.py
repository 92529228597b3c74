"""How clips become tensors: :class:`DecodeConfig` (frames, resolution, audio features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DecodeConfig", "Mode"]

Mode = Literal["uniform", "random"]
"""How frame times and the audio window are chosen: ``uniform`` (deterministic, for evaluation) or
``random`` (training)."""


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
    # Decoder threads per clip (FFmpeg frame+slice threading, "AUTO"): None (default) decides per
    # process: 1 inside a DataLoader worker (the workers already fill the cores), all cores
    # elsewhere (single-process extraction, embedding, num_workers=0); 0 = all cores; n = n threads.
    # Threading changes no decoded pixel (FFmpeg's threaded decoders are bit-exact).
    decode_threads: int | None = None

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
        if self.decode_threads is not None and self.decode_threads < 0:
            raise ValueError(f"DecodeConfig.decode_threads must be None or >= 0, got {self.decode_threads}")

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
