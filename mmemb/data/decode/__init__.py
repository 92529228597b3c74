"""Decode short videos into fixed-size frame stacks and log-mel spectrograms with PyAV.

One concern per module:

* :mod:`.config`: :class:`DecodeConfig`, how clips become tensors;
* :mod:`.errors`: the failure taxonomy (:data:`REASONS`, :class:`DecodeError`);
* :mod:`.container`: opening a source (path, ``bytes``, binary file object such as ``io.BytesIO``
  from a shard), container sanity checks (a header that declares more bytes than the file has),
  stated durations, and :func:`probe`;
* :mod:`.video`: the packet index, frame-time sampling, seeking and RGB conversion
  (:func:`decode_frames`);
* :mod:`.audio`: mono resampling (:func:`decode_audio`) and the log-mel window (:func:`log_mel`);
* :mod:`.clip`: :func:`load_clip`, both modalities of one clip.

Bad input: :func:`probe`, :func:`decode_frames` and :func:`decode_audio` raise :class:`DecodeError`
with a ``reason`` from :data:`REASONS`; :func:`load_clip` never raises: it decodes each modality
separately and masks (``None``) the one that failed, with its reason, for the main process to count
(:class:`mmemb.data.failures.FailureLog`).
"""

from .audio import decode_audio, log_mel, mel_valid_frames
from .clip import ClipSample, load_clip
from .config import DecodeConfig, Mode
from .container import ClipInfo, Source, probe
from .errors import REASONS, DecodeError
from .video import decode_frames

__all__ = [
    "REASONS",
    "ClipInfo",
    "ClipSample",
    "DecodeConfig",
    "DecodeError",
    "Mode",
    "Source",
    "decode_audio",
    "decode_frames",
    "load_clip",
    "log_mel",
    "mel_valid_frames",
    "probe",
]
