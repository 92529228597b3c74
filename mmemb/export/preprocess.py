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

import numpy as np
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
    text: TextConfig  # max_length and the n-gram hashing (ngram_n, ngram_min_n, ngram_buckets, ngram_max_length)
    tokenizer: TextTokenizer  # the run's tokenizer
    use_audio: bool = True  # the model has an audio tower (the batch carries ``mel``)
    use_ngrams: bool = True  # the model reads ``text_ngrams`` (its n-gram bag channel)

    # ------------------------------------------------------------------ text

    def text_arrays(self, rows: Sequence[Sequence[str | None]], trim: bool = False) -> dict[str, np.ndarray]:
        """Token ids ``(B, L)``, attention, field ids (int64), ``text_mask`` ``(B,)`` (bool: any text) and,
        when the model reads them, ``text_ngrams`` ``(B, G)`` (int64), of rows of text fields in
        :data:`TEXT_FIELDS` order (caption, cover text, ASR, comments; ``None`` = absent), as numpy arrays.

        ``L`` and ``G`` are the preprocessing's ``max_length`` and ``ngram_max_length``; with ``trim`` they
        end at the batch's longest row instead (at least 1 each): the padding is masked and positions are
        absolute, so the embeddings are the same (:func:`mmemb.export.loader.trim_text_batch`), and a
        search query costs a few tokens' work and no padding."""
        # built as Python lists and turned into arrays once: a search query is one row, where an array per
        # field and row would cost more than tokenising it
        length, grams_length = self.text.max_length, self.text.ngram_max_length
        token_rows, field_rows, gram_rows, has_text = [], [], [], []
        for fields in rows:
            if len(fields) > len(TEXT_FIELDS):
                raise ValueError(f"a text row has {len(fields)} fields; at most {len(TEXT_FIELDS)}: {TEXT_FIELDS}")
            fields = list(fields)
            present = any(fields)
            has_text.append(present)
            row_ids, row_fields = self.tokenizer.encode_fields(fields, length) if present else ([], [])
            token_rows.append(row_ids)
            field_rows.append(row_fields)
            if self.use_ngrams:
                buckets = hash_field_ngrams(fields, grams_length, self.text.ngram_n, self.text.ngram_buckets,
                                            min_n=self.text.ngram_min_n) if present else []
                gram_rows.append([i + 1 for i in buckets])  # bucket + 1: 0 is the padding
        if trim:
            length = max(max(map(len, token_rows), default=0), 1)
            grams_length = max(max(map(len, gram_rows), default=0), 1)
        b = len(token_rows)
        ids = np.zeros((b, length), dtype=np.int64)  # (B, L)
        field_ids = np.zeros((b, length), dtype=np.int64)  # (B, L)
        attention = np.zeros((b, length), dtype=np.int64)  # (B, L)
        for i, (row_ids, row_fields) in enumerate(zip(token_rows, field_rows)):
            n = len(row_ids)
            ids[i, :n] = row_ids
            field_ids[i, :n] = row_fields
            attention[i, :n] = 1
        out = {"text_ids": ids, "text_attention": attention, "text_field_ids": field_ids,
               "text_mask": np.array(has_text, dtype=bool).reshape(b)}  # (B,)
        if self.use_ngrams:
            grams = np.zeros((b, grams_length), dtype=np.int64)  # (B, G)
            for i, row in enumerate(gram_rows):
                grams[i, :len(row)] = row
            out["text_ngrams"] = grams
        return out

    def text_fields(self, rows: Sequence[Sequence[str | None]], trim: bool = False) -> dict[str, torch.Tensor]:
        """:meth:`text_arrays` as tensors (``torch.long``; ``text_mask`` ``torch.bool``)."""
        return {key: torch.from_numpy(value) for key, value in self.text_arrays(rows, trim).items()}

    @staticmethod
    def single_text_rows(texts: Sequence[str | None]) -> list[list[str | None]]:
        """Rows of single texts (a search query, a caption), each as the caption field; ``None`` or ``""``
        is a row without text."""
        if isinstance(texts, str):
            raise TypeError("preprocess_texts takes a list of strings, got one string: wrap it in a list")
        return [[t or None] for t in texts]

    def texts(self, texts: Sequence[str | None], trim: bool = False) -> dict[str, torch.Tensor]:
        """:meth:`text_fields` of single texts (:meth:`single_text_rows`): ``text_mask`` is False for a row
        without text."""
        return self.text_fields(self.single_text_rows(texts), trim)

    # ------------------------------------------------------------------ clips

    def clips(self, sources: Sequence[Any]) -> dict[str, Any]:
        """Frames ``(B, T, 3, S, S)`` uint8, ``video_mask``, (with an audio tower) ``mel`` ``(B, M, F)``,
        ``audio_mask`` and ``mel_valid`` (real log-mel frames; the rest is zero padding) of clips (paths,
        bytes or binary file objects; ``None`` = no clip), decoded as in evaluation; the lists ``video_error`` / ``audio_error`` (a decode reason where masked,
        ``no_audio`` for a clip without sound; None throughout without an audio tower, whose preprocessing
        does not decode the audio) and ``video_partial`` / ``audio_partial``."""
        d = self.decode
        b = len(sources)
        frames = torch.zeros(b, d.num_frames, 3, d.frame_size, d.frame_size, dtype=torch.uint8)  # (B, T, 3, S, S)
        video_mask = torch.zeros(b, dtype=torch.bool)
        mel = torch.zeros(b, d.n_mels, d.mel_frames)  # (B, M, F)
        audio_mask = torch.zeros(b, dtype=torch.bool)
        mel_valid = torch.full((b,), d.mel_frames, dtype=torch.long)  # (B,) real log-mel frames
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
                if clip.mel_valid is not None:
                    mel_valid[i] = clip.mel_valid
            errors["video_error"].append(clip.video_error)
            errors["audio_error"].append(clip.audio_error)
            errors["video_partial"].append(clip.video_partial)
            errors["audio_partial"].append(clip.audio_partial)
        out: dict[str, Any] = {"frames": frames, "video_mask": video_mask, **errors}
        if self.use_audio:
            out.update(mel=mel, audio_mask=audio_mask, mel_valid=mel_valid)
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
