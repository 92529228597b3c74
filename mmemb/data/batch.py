"""The batch: one definition of what :func:`mmemb.data.dataset.collate` returns and the models read.

:class:`Batch` is the type (a ``TypedDict``, so the batch stays a plain dict that Lightning moves
between devices), :data:`FIELDS` the same keys with their dtype and symbolic shape, checked at run
time by :func:`check_batch` (tests keep the two in step). Shape symbols:

======  ==============================================================
``B``   samples in the batch
``T``   frames per clip (``DecodeConfig.num_frames``)
``S``   frame side in pixels (``DecodeConfig.frame_size``)
``M``   mel bands (``DecodeConfig.n_mels``)
``F``   log-mel frames (``DecodeConfig.mel_frames``)
``L``   text tokens (``TextConfig.max_length``)
``G``   hashed char-n-grams (``TextConfig.ngram_max_length``)
``H``   hashtag vocabulary size
``Q``   query vocabulary size
======  ==============================================================

A modality that is missing or fails to decode is masked (its mask is ``False`` and its tensor is
zeros), never invented, and the reason travels with the batch (``video_error`` / ``audio_error``)
so that the main process can count it (:class:`mmemb.data.failures.FailureLog`). A clip cut short
is not masked: it keeps the part that decodes and says how much in ``video_partial`` /
``audio_partial`` (see :data:`mmemb.data.decode.PARTIAL`).
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from evaluated annotations.
from dataclasses import dataclass
from typing import Any, Mapping, NotRequired, TypedDict

import torch

from .decode import PARTIAL, REASONS

__all__ = ["FIELDS", "Batch", "Field", "LIST_KEYS", "check_batch"]


class Batch(TypedDict):
    """A collated batch. Tensors are stacked over the batch (first dimension ``B``); the per-sample
    strings and reports stay Python lists of length ``B``."""

    ids: list[str]  # record ids
    # uint8 (B, T, 3, S, S) RGB, zeros where video_mask is False (the visual tower normalises it on
    # its device: 4x less to copy between processes and to the GPU than float)
    frames: torch.Tensor
    video_mask: torch.Tensor  # bool (B,) the clip's frames decoded
    mel: torch.Tensor  # float32 (B, M, F) log(mel + 1e-6), zeros where audio_mask is False
    audio_mask: torch.Tensor  # bool (B,) the clip has an audio track that decoded
    # int64 (B, L) [CLS] caption [SEP] cover [SEP] asr [SEP] comments [SEP], 0-padded
    text_ids: torch.Tensor
    text_attention: torch.Tensor  # int64 (B, L) 1 = real token
    text_field_ids: torch.Tensor  # int64 (B, L) 0 [CLS]/pad, 1 caption, 2 cover, 3 asr, 4 comments
    text_mask: torch.Tensor  # bool (B,) any text present
    # int64 (B, G) hashed char-n-gram bucket + 1 of the text fields, 0-padded; only when
    # TextConfig.ngram_buckets > 0
    text_ngrams: NotRequired[torch.Tensor]
    # int64 (B, G) the field of each n-gram of text_ngrams (as text_field_ids; 0 = padding); with text_ngrams
    text_ngram_field_ids: NotRequired[torch.Tensor]
    hashtag_targets: torch.Tensor  # float32 (B, H) multi-hot over the cleaned hashtag vocabulary
    hashtag_weights: torch.Tensor  # float32 (B, H) TF-IDF weight of each positive, 0 elsewhere
    query_targets: torch.Tensor  # float32 (B, Q) multi-hot over the query vocabulary
    query_weights: torch.Tensor  # float32 (B, Q) TF-IDF x clicks (x freshness) weight of each positive
    category: torch.Tensor  # int64 (B,) index into Vocabularies.categories, -1 unknown
    video_error: list[str | None]  # a decode REASONS value where video_mask is False for a failure, else None
    audio_error: list[str | None]  # likewise; "no_audio" for clips without an audio track
    # share (0..1] of the stated duration that decodes for a stream cut short (kept, not masked);
    # None when whole or masked
    video_partial: list[float | None]
    audio_partial: list[float | None]
    # bool (B, L) the keyword tokens to mask for keyword prediction (highest-IDF whole words, chosen in
    # the DataLoader workers by mmemb.data.dataset.KeywordSelector); only when the LightningModule's
    # keyword objective is on (it tells the data module, which adds them in every loader's collate)
    keyword_positions: NotRequired[torch.Tensor]
    # Read by the models when present; the collate does not produce it (all frames count then):
    frame_mask: NotRequired[torch.Tensor]  # bool (B, T) frames to use
    # int64 (B,) log-mel frames from real audio (the rest is zero padding, masked by the audio tower);
    # absent: every frame counts
    mel_valid: NotRequired[torch.Tensor]


@dataclass(frozen=True)
class Field:
    """One key of :class:`Batch`: a tensor (``dtype`` a torch dtype, ``shape`` symbols or sizes) or
    a list of length ``B`` (``dtype`` the Python type of its non-None items)."""

    dtype: torch.dtype | type
    shape: tuple[str | int, ...]
    collated: bool = True  # produced by the collate (always, or when its config asks for it)
    optional: bool = False  # may be absent

    @property
    def is_list(self) -> bool:
        return not isinstance(self.dtype, torch.dtype)


FIELDS: dict[str, Field] = {
    "ids": Field(str, ("B",)),
    "frames": Field(torch.uint8, ("B", "T", 3, "S", "S")),
    "video_mask": Field(torch.bool, ("B",)),
    "mel": Field(torch.float32, ("B", "M", "F")),
    "audio_mask": Field(torch.bool, ("B",)),
    "text_ids": Field(torch.int64, ("B", "L")),
    "text_attention": Field(torch.int64, ("B", "L")),
    "text_field_ids": Field(torch.int64, ("B", "L")),
    "text_mask": Field(torch.bool, ("B",)),
    "text_ngrams": Field(torch.int64, ("B", "G"), optional=True),
    "text_ngram_field_ids": Field(torch.int64, ("B", "G"), optional=True),
    "hashtag_targets": Field(torch.float32, ("B", "H")),
    "hashtag_weights": Field(torch.float32, ("B", "H")),
    "query_targets": Field(torch.float32, ("B", "Q")),
    "query_weights": Field(torch.float32, ("B", "Q")),
    "category": Field(torch.int64, ("B",)),
    "video_error": Field(str, ("B",)),
    "audio_error": Field(str, ("B",)),
    "video_partial": Field(float, ("B",)),
    "audio_partial": Field(float, ("B",)),
    "keyword_positions": Field(torch.bool, ("B", "L"), optional=True),
    "frame_mask": Field(torch.bool, ("B", "T"), collated=False, optional=True),
    "mel_valid": Field(torch.int64, ("B",), optional=True),  # absent in batches made before it (all frames real)
}
""":class:`Batch`'s keys, dtypes and shapes, for :func:`check_batch`."""

LIST_KEYS = tuple(k for k, f in FIELDS.items() if f.is_list)
"""Keys whose values stay Python lists in a batch (the rest are stacked tensors)."""

_ERRORS = set(REASONS) | {"no_audio"}


def check_batch(batch: Mapping[str, Any], **dims: int) -> dict[str, int]:
    """Check ``batch`` against :data:`FIELDS` and return the size of every shape symbol.

    ``dims`` pins symbols to known sizes (e.g. ``B=8, T=4``); the others are read from the first
    key that has them and must agree everywhere. Raises ``ValueError`` naming the key for an unknown
    or missing key, a wrong dtype, a wrong shape, a list of the wrong length, or an error reason or
    partial share out of range.
    """
    unknown = sorted(set(batch) - set(FIELDS))
    if unknown:
        raise ValueError(f"batch has keys that mmemb/data/batch.py does not define: {unknown}")
    missing = [k for k, f in FIELDS.items() if not f.optional and k not in batch]
    if missing:
        raise ValueError(f"batch lacks keys that mmemb/data/batch.py requires: {missing}")
    sizes = dict(dims)

    def bind(key: str, symbol: str | int, size: int) -> None:
        if isinstance(symbol, int):
            if size != symbol:
                raise ValueError(f"batch[{key!r}] has size {size} where {symbol} is required")
        elif sizes.setdefault(symbol, size) != size:
            raise ValueError(f"batch[{key!r}] has {symbol}={size}, elsewhere (or as given) {symbol}={sizes[symbol]}")

    for key, spec in FIELDS.items():
        if key not in batch:
            continue
        value = batch[key]
        if spec.is_list:
            if not isinstance(value, list):
                raise ValueError(f"batch[{key!r}] must be a list, got {type(value).__name__}")
            bind(key, spec.shape[0], len(value))
            for item in value:
                if item is None and key != "ids":
                    continue
                if not isinstance(item, spec.dtype):
                    raise ValueError(f"batch[{key!r}] holds a {type(item).__name__}, expected {spec.dtype.__name__}")
                if key.endswith("_error") and item not in _ERRORS:
                    raise ValueError(f"batch[{key!r}] holds {item!r}, not a decode reason ({sorted(_ERRORS)})")
                if key.endswith("_partial") and not 0.0 <= item <= 1.0:
                    raise ValueError(f"batch[{key!r}] holds {item}, not a {PARTIAL} share in [0, 1]")
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"batch[{key!r}] must be a tensor, got {type(value).__name__}")
        if value.dtype != spec.dtype:
            raise ValueError(f"batch[{key!r}] is {value.dtype}, expected {spec.dtype}")
        if value.dim() != len(spec.shape):
            raise ValueError(f"batch[{key!r}] has shape {tuple(value.shape)}, expected {spec.shape}")
        for symbol, size in zip(spec.shape, value.shape):
            bind(key, symbol, int(size))
    return sizes
