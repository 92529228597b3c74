"""Decode short videos into fixed-size frame stacks and log-mel spectrograms with PyAV.

One concern per module:

* :mod:`.config`: :class:`DecodeConfig`, how clips become tensors;
* :mod:`.errors`: the failure taxonomy (:data:`REASONS`, :class:`DecodeError`) and partial streams
  (:data:`PARTIAL`, :class:`Decoded`);
* :mod:`.container`: opening a source (path, ``bytes``, binary file object such as ``io.BytesIO``
  from a shard), container sanity checks (a header that declares more bytes than the file has),
  stated durations, and :func:`probe`;
* :mod:`.video`: the packet index, frame-time sampling, keyframe-aware seeking and RGB conversion
  (:func:`decode_frames`);
* :mod:`.audio`: mono resampling (:func:`decode_audio`), the log-mel window (:func:`log_mel`) and
  decoding only around it (:func:`sound_window`);
* :mod:`.clip`: :func:`load_clip`, both modalities of one clip from one open container.

Bad input: :func:`probe`, :func:`decode_frames` and :func:`decode_audio` raise :class:`DecodeError`
with a ``reason`` from :data:`REASONS`; :func:`load_clip` never raises: it decodes each modality
separately and masks (``None``) the one that failed, with its reason, for the main process to count
(:class:`mmemb.data.failures.FailureLog`). A file cut short (a truncated AVI, MKV, WebM ...) whose
streams decode partway is not a failure: it is *partial*, each modality keeps what decodes (frames
are sampled within it) and reports the share of its stated duration that decodes.
"""

from .audio import decode_audio, decode_sound, log_mel, mel_valid_frames, sound_window
from .clip import ClipSample, load_clip
from .config import DecodeConfig, Mode
from .container import ClipInfo, Source, probe
from .errors import PARTIAL, REASONS, DecodeError, Decoded
from .video import decode_frames, decode_video

__all__ = [
    "PARTIAL",
    "REASONS",
    "ClipInfo",
    "ClipSample",
    "DecodeConfig",
    "DecodeError",
    "Decoded",
    "Mode",
    "Source",
    "decode_audio",
    "decode_frames",
    "decode_sound",
    "decode_video",
    "load_clip",
    "log_mel",
    "mel_valid_frames",
    "probe",
    "sound_window",
]
