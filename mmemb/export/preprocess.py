"""Preprocessing of an exported model: raw strings, clips and manifest records -> the model's batch.

The same steps as training's evaluation mode (:func:`mmemb.data.dataset.encode_record` with
``train=False``): frames sampled uniformly and decoded by :func:`mmemb.data.decode.load_clip`
(uint8, normalised inside the model), the centred log-mel window, ``[CLS] field [SEP] ...`` token ids
with field ids (:meth:`mmemb.data.text.TextTokenizer.encode_fields`) and the fields' hashed char
n-grams (bucket + 1, 0 = padding). A clip or modality that fails to decode is masked (zeros and a
False mask) and its reason kept in ``video_error`` / ``audio_error``, as in training.

Imports neither Lightning nor the training code (the data module, the LightningModule).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..data.decode import DecodeConfig, load_clip
from ..data.manifest import VideoRecord
from ..data.text import TextTokenizer, hash_field_ngrams
from ..data.vocab import TEXT_FIELDS, TextConfig, record_texts

__all__ = ["Preprocessor", "TEXT_FIELDS"]


@dataclass
class Preprocessor:
    """Turns raw inputs into the batch keys the encoders read (:mod:`mmemb.data.batch`)."""

    decode: DecodeConfig  # frames, frame size, resize policy, audio sample rate and log-mel settings
    text: TextConfig  # max_length and the n-gram hashing (ngram_n, ngram_buckets, ngram_max_length)
    tokenizer: TextTokenizer  # the run's tokenizer
    use_audio: bool = True  # the model has an audio tower (the batch carries ``mel``)
    use_ngrams: bool = True  # the model reads ``text_ngrams`` (its n-gram bag channel)

    # ------------------------------------------------------------------ text

    def text_fields(self, rows: Sequence[Sequence[str | None]]) -> dict[str, torch.Tensor]:
        """Token ids ``(B, L)``, attention, field ids, ``text_mask`` ``(B,)`` (any text) and, when the
        model reads them, ``text_ngrams`` ``(B, G)``, of rows of text fields in :data:`TEXT_FIELDS`
        order (caption, cover text, ASR, comments; ``None`` = absent)."""
        # built as Python lists and turned into tensors once: a search query is one row, where a
        # tensor per field and row would cost more than tokenising it
        length, grams_length = self.text.max_length, self.text.ngram_max_length
        ids, field_ids, attention, has_text, grams = [], [], [], [], []
        for fields in rows:
            if len(fields) > len(TEXT_FIELDS):
                raise ValueError(f"a text row has {len(fields)} fields; at most {len(TEXT_FIELDS)}: {TEXT_FIELDS}")
            fields = list(fields)
            present = any(fields)
            has_text.append(present)
            row_ids, row_fields = self.tokenizer.encode_fields(fields, length) if present else ([], [])
            pad = length - len(row_ids)
            ids.append(row_ids + [0] * pad)
            field_ids.append(row_fields + [0] * pad)
            attention.append([1] * len(row_ids) + [0] * pad)
            if self.use_ngrams:
                buckets = hash_field_ngrams(fields, grams_length, self.text.ngram_n,
                                            self.text.ngram_buckets) if present else []
                grams.append([i + 1 for i in buckets] + [0] * (grams_length - len(buckets)))
        b = len(rows)
        ids = torch.tensor(ids, dtype=torch.long).view(b, length)  # (B, L)
        field_ids = torch.tensor(field_ids, dtype=torch.long).view(b, length)  # (B, L)
        attention = torch.tensor(attention, dtype=torch.long).view(b, length)  # (B, L)
        has_text = torch.tensor(has_text, dtype=torch.bool).view(b)  # (B,)
        grams = torch.tensor(grams, dtype=torch.long).view(b, grams_length) if self.use_ngrams else None  # (B, G)
        out = {"text_ids": ids, "text_attention": attention, "text_field_ids": field_ids, "text_mask": has_text}
        if grams is not None:
            out["text_ngrams"] = grams
        return out

    def texts(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        """:meth:`text_fields` of single texts (a search query, a caption), each as the caption field;
        ``None`` or ``""`` is a row without text (``text_mask`` False)."""
        if isinstance(texts, str):
            raise TypeError("preprocess_texts takes a list of strings, got one string: wrap it in a list")
        return self.text_fields([[t or None] for t in texts])

    # ------------------------------------------------------------------ clips

    def clips(self, sources: Sequence[Any]) -> dict[str, Any]:
        """Frames ``(B, T, 3, S, S)`` uint8, ``video_mask``, (with an audio tower) ``mel`` ``(B, M, F)``
        and ``audio_mask`` of clips (paths, bytes or binary file objects; ``None`` = no clip), decoded
        as in evaluation; the lists ``video_error`` / ``audio_error`` (a decode reason where masked,
        ``no_audio`` for a clip without sound; None throughout without an audio tower, whose preprocessing
        does not decode the audio) and ``video_partial`` / ``audio_partial``."""
        d = self.decode
        b = len(sources)
        frames = torch.zeros(b, d.num_frames, 3, d.frame_size, d.frame_size, dtype=torch.uint8)  # (B, T, 3, S, S)
        video_mask = torch.zeros(b, dtype=torch.bool)
        mel = torch.zeros(b, d.n_mels, d.mel_frames)  # (B, M, F)
        audio_mask = torch.zeros(b, dtype=torch.bool)
        errors: dict[str, list] = {"video_error": [], "audio_error": [], "video_partial": [], "audio_partial": []}
        for i, source in enumerate(sources):
            if source is None:  # no clip: both modalities absent, which is not a failure
                for key in errors:
                    errors[key].append(None)
                continue
            clip = load_clip(os.fspath(source) if isinstance(source, os.PathLike) else source, d, train=False,
                             audio=self.use_audio)  # no audio tower: the audio is not decoded
            if clip.frames is not None:
                frames[i] = clip.frames
                video_mask[i] = True
            if clip.mel is not None:
                mel[i] = clip.mel
                audio_mask[i] = True
            errors["video_error"].append(clip.video_error)
            errors["audio_error"].append(clip.audio_error)
            errors["video_partial"].append(clip.video_partial)
            errors["audio_partial"].append(clip.audio_partial)
        out: dict[str, Any] = {"frames": frames, "video_mask": video_mask, **errors}
        if self.use_audio:
            out.update(mel=mel, audio_mask=audio_mask)
        return out

    # ------------------------------------------------------------------ records

    def records(self, records: Sequence[VideoRecord]) -> dict[str, Any]:
        """Both modalities of manifest records: :meth:`clips` of their videos and :meth:`text_fields` of
        their text (``#hashtag`` words removed, as in training: :func:`mmemb.data.vocab.record_texts`),
        plus ``ids``."""
        out = {"ids": [r.id for r in records]}
        out.update(self.clips([r.video for r in records]))
        out.update(self.text_fields([record_texts(r) for r in records]))
        return out
