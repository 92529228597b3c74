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
        length = self.text.max_length
        b = len(rows)
        ids = torch.zeros(b, length, dtype=torch.long)  # (B, L)
        field_ids = torch.zeros(b, length, dtype=torch.long)  # (B, L)
        attention = torch.zeros(b, length, dtype=torch.long)  # (B, L)
        has_text = torch.zeros(b, dtype=torch.bool)  # (B,)
        grams = torch.zeros(b, self.text.ngram_max_length, dtype=torch.long) if self.use_ngrams else None  # (B, G)
        for i, fields in enumerate(rows):
            if len(fields) > len(TEXT_FIELDS):
                raise ValueError(f"a text row has {len(fields)} fields; at most {len(TEXT_FIELDS)}: {TEXT_FIELDS}")
            if not any(fields):
                continue
            has_text[i] = True
            row_ids, row_fields = self.tokenizer.encode_fields(list(fields), length)
            n = len(row_ids)
            ids[i, :n] = torch.tensor(row_ids, dtype=torch.long)
            field_ids[i, :n] = torch.tensor(row_fields, dtype=torch.long)
            attention[i, :n] = 1
            if grams is not None:
                buckets = hash_field_ngrams(list(fields), self.text.ngram_max_length, self.text.ngram_n,
                                            self.text.ngram_buckets)
                grams[i, : len(buckets)] = torch.tensor(buckets, dtype=torch.long) + 1
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
        ``no_audio`` for a clip without sound) and ``video_partial`` / ``audio_partial``."""
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
            clip = load_clip(os.fspath(source) if isinstance(source, os.PathLike) else source, d, train=False)
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
