"""Turn manifest records into model-ready samples, and samples into batches.

A sample is a dict of tensors for one video; :func:`collate` stacks samples into a
:class:`mmemb.data.batch.Batch`, whose definition (every key with its dtype and shape, and how
missing, failed and partial modalities show) lives in :mod:`mmemb.data.batch`.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .batch import LIST_KEYS, Batch
from .decode import ClipSample, DecodeConfig, load_clip
from .labels import label_weights, normalize_label
from .manifest import VideoRecord
from .text import hash_field_ngrams_with_fields
from .text import TextTokenizer
from .vocab import TextConfig, Vocabularies, record_texts

if TYPE_CHECKING:
    from ..models.keywords import KeywordConfig

__all__ = ["encode_record", "encode_ngrams", "collate", "VideoDataset", "sample_generator", "KeywordSelector",
           "TokenTable"]



def sample_generator(seed: int, epoch: int, index: int, key: str) -> torch.Generator:
    """A generator for one sample's random choices (clip segment, frame jitter) in one epoch.

    It depends only on the run's seed, the epoch, the sample's index and its id, not on the process
    or its RNG state: every epoch draws new choices, any number of workers draws the same ones, and a
    run resumed from a checkpoint draws what the uninterrupted run drew.
    """
    mixed = (((seed * 1_000_003 + epoch) * 1_000_003 + index) * 7919 + zlib.crc32(key.encode())) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def _multi_hot(num: int, ids: list[int], weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.zeros(num, dtype=torch.float32)
    weight = torch.zeros(num, dtype=torch.float32)
    if ids:
        index = torch.tensor(ids, dtype=torch.long)
        target[index] = 1.0
        weight[index] = torch.as_tensor(weights, dtype=torch.float32)
    return target, weight


def encode_labels(record: VideoRecord, vocabs: Vocabularies, half_life_days: float | None, now: float | None) -> dict:
    """Multi-hot targets and TF-IDF weights for the record's hashtags and queries."""
    removed = vocabs.removed_hashtags
    tags = [t for t in dict.fromkeys(normalize_label(h) for h in record.hashtags) if t and t not in removed]
    tag_ids = vocabs.hashtags.encode(tags)
    tag_w = label_weights(tag_ids, vocabs.hashtag_idf, publish_time=record.publish_time, now=now,
                          half_life_days=half_life_days) if tag_ids else np.zeros(0)
    clicks: dict[int, float] = {}
    for q in record.queries:
        qid = vocabs.queries.index(normalize_label(q.text))
        if qid is not None:
            clicks[qid] = clicks.get(qid, 0.0) + q.clicks
    q_ids = list(clicks)
    q_w = label_weights(q_ids, vocabs.query_idf, clicks=[clicks[i] for i in q_ids], publish_time=record.publish_time,
                        now=now, half_life_days=half_life_days) if q_ids else np.zeros(0)
    hashtag_targets, hashtag_weights = _multi_hot(len(vocabs.hashtags), tag_ids, tag_w)
    query_targets, query_weights = _multi_hot(len(vocabs.queries), q_ids, q_w)
    return {
        "hashtag_targets": hashtag_targets,
        "hashtag_weights": hashtag_weights,
        "query_targets": query_targets,
        "query_weights": query_weights,
    }


def tokenize_text(record: VideoRecord, vocabs: Vocabularies, cfg: TextConfig,
                  tokens: tuple[Sequence[int], Sequence[int]] | None = None) -> dict:
    """Token ids and field ids of the record's text fields (padded to ``cfg.max_length``).

    ``tokens``: the record's ``(ids, field_ids)`` from :meth:`TextTokenizer.encode_fields` when
    already known (:class:`TokenTable`); else they are encoded here."""
    fields = record_texts(record)
    has_text = any(f for f in fields)
    if tokens is not None:
        ids, field_ids = tokens
    else:
        ids, field_ids = vocabs.tokenizer.encode_fields(fields, cfg.max_length) if has_text else ([], [])
    text_ids = torch.zeros(cfg.max_length, dtype=torch.long)
    text_field_ids = torch.zeros(cfg.max_length, dtype=torch.long)
    attention = torch.zeros(cfg.max_length, dtype=torch.long)
    n = len(ids)
    text_ids[:n] = torch.as_tensor(ids, dtype=torch.long)
    text_field_ids[:n] = torch.as_tensor(field_ids, dtype=torch.long)
    attention[:n] = 1
    out = {"text_ids": text_ids, "text_attention": attention, "text_field_ids": text_field_ids,
           "text_mask": torch.tensor(has_text)}
    if cfg.ngram_buckets:
        out["text_ngrams"], out["text_ngram_field_ids"] = encode_ngrams_with_fields(fields, cfg)
    return out


class TokenTable:
    """The token ids and field ids of many records' texts (:meth:`TextTokenizer.encode_fields`),
    encoded with one tokenizer call and kept as flat arrays (4 + 1 bytes a token).

    A dataset builds it once, where it is created, so that DataLoader workers (which inherit or
    unpickle it) index it instead of calling the tokenizer per sample and per epoch (that call was
    the largest part of a sample's work besides decoding; see BENCHMARKS.md)."""

    def __init__(self, records: Sequence[VideoRecord], vocabs: Vocabularies, cfg: TextConfig) -> None:
        rows = [record_texts(r) for r in records]
        texted = [i for i, fields in enumerate(rows) if any(f for f in fields)]
        encoded = dict(zip(texted, vocabs.tokenizer.encode_fields_batch([rows[i] for i in texted], cfg.max_length)))
        lengths = np.array([len(encoded[i][0]) if i in encoded else 0 for i in range(len(rows))], dtype=np.int64)
        self.offsets = np.zeros(len(rows) + 1, dtype=np.int64)  # (N + 1,) record i: offsets[i]:offsets[i+1]
        np.cumsum(lengths, out=self.offsets[1:])
        self.ids = np.zeros(int(self.offsets[-1]), dtype=np.int32)  # (total tokens,)
        self.field_ids = np.zeros(int(self.offsets[-1]), dtype=np.uint8)  # (total tokens,) < 256 fields
        for i, (ids, field_ids) in encoded.items():
            self.ids[self.offsets[i]:self.offsets[i + 1]] = ids
            self.field_ids[self.offsets[i]:self.offsets[i + 1]] = field_ids

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, field_ids)`` of record ``index``, as :meth:`TextTokenizer.encode_fields` gives them."""
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end], self.field_ids[start:end]


def encode_ngrams(fields: Sequence[str | None], cfg: TextConfig) -> torch.Tensor:
    """``(cfg.ngram_max_length,)`` int64: the fields' hashed char-n-gram buckets + 1, 0-padded (0 = no gram)."""
    return encode_ngrams_with_fields(fields, cfg)[0]


def encode_ngrams_with_fields(fields: Sequence[str | None], cfg: TextConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`encode_ngrams` and the field of each n-gram, ``(cfg.ngram_max_length,)`` int64 each (field:
    1 + the field's index, as in ``text_field_ids``; 0 = padding)."""
    ids, field_ids = hash_field_ngrams_with_fields(fields, cfg.ngram_max_length, cfg.ngram_n, cfg.ngram_buckets,
                                                   min_n=cfg.ngram_min_n)
    out = torch.zeros(cfg.ngram_max_length, dtype=torch.long)
    out[: len(ids)] = torch.tensor(ids, dtype=torch.long) + 1
    fields_out = torch.zeros(cfg.ngram_max_length, dtype=torch.long)
    fields_out[: len(field_ids)] = torch.tensor(field_ids, dtype=torch.long)
    return out, fields_out


def encode_record(
    record: VideoRecord,
    vocabs: Vocabularies,
    decode: DecodeConfig,
    text: TextConfig,
    train: bool,
    generator: torch.Generator | None = None,
    half_life_days: float | None = None,
    now: float | None = None,
    video_source: Any = None,
    tokens: tuple[Sequence[int], Sequence[int]] | None = None,
) -> dict:
    """One model-ready sample. ``video_source`` overrides ``record.video`` (e.g. bytes from a shard);
    ``tokens``: the record's encoded text when already known (see :func:`tokenize_text`)."""
    source = video_source if video_source is not None else record.video
    if source is None:  # the record has no clip: both modalities absent, which is not a failure
        clip = ClipSample(None, None, None, None)
    else:
        clip = load_clip(source, decode, train=train, generator=generator)
    t, s = decode.num_frames, decode.frame_size
    frames = clip.frames if clip.frames is not None else torch.zeros(t, 3, s, s, dtype=torch.uint8)  # (T, 3, S, S)
    mel = clip.mel if clip.mel is not None else torch.zeros(decode.n_mels, decode.mel_frames)
    sample = {
        "ids": record.id,
        "frames": frames,
        "video_mask": torch.tensor(clip.frames is not None),
        "mel": mel,
        "audio_mask": torch.tensor(clip.mel is not None),
        # log-mel frames from real audio: a clip shorter than the window is zero-padded, and the audio tower
        # masks the padding (every frame counts where there is no audio: audio_mask masks it all)
        "mel_valid": torch.tensor(decode.mel_frames if clip.mel_valid is None else clip.mel_valid, dtype=torch.long),
        "category": torch.tensor(vocabs.category_index(record.category), dtype=torch.long),
        "video_error": clip.video_error,
        "audio_error": clip.audio_error,
        "video_partial": clip.video_partial,
        "audio_partial": clip.audio_partial,
    }
    sample.update(tokenize_text(record, vocabs, text, tokens))
    sample.update(encode_labels(record, vocabs, half_life_days, now))
    return sample


def collate(samples: Sequence[dict], shared: bool | None = None) -> Batch:
    """Stack samples into a :class:`mmemb.data.batch.Batch` (the keys of :data:`~mmemb.data.batch.LIST_KEYS`
    stay lists).

    ``shared`` (default: inside a DataLoader worker) stacks each tensor straight into shared memory,
    as PyTorch's default collate does: sending the batch to the main process then copies nothing
    (a tensor outside shared memory is copied into it when pickled)."""
    if not samples:
        raise ValueError("collate got an empty list of samples")
    if shared is None:
        shared = get_worker_info() is not None
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = list(values) if key in LIST_KEYS else _stack(values, shared)
    return batch  # type: ignore[return-value]  # the keys of FIELDS, as check_batch verifies in the tests


def _stack(values: list[torch.Tensor], shared: bool) -> torch.Tensor:
    """``torch.stack(values)``, into a new shared-memory storage when ``shared``."""
    if not shared:
        return torch.stack(values)
    first = values[0]
    storage = first._typed_storage()._new_shared(len(values) * first.numel(), device=first.device)
    out = first.new(storage).resize_(len(values), *first.shape)  # (B, ...) in shared memory
    return torch.stack(values, out=out)


@dataclass
class KeywordSelector:
    """Adds ``keyword_positions`` (bool ``(B, L)``, the tokens to mask) to a collated batch with
    :func:`mmemb.models.keywords.select_keywords`. It runs where the collate runs, in the DataLoader
    workers, so that the training step does no per-text CPU work (word segmentation, jieba) and no
    device-to-host copy. Picklable.

    ``idf``: ``(V,)`` float32 token IDF of the train split (:attr:`Vocabularies.keyword_idf`)."""

    idf: torch.Tensor
    tokenizer: TextTokenizer
    config: "KeywordConfig"

    def __call__(self, batch: dict) -> dict:
        from ..models.keywords import select_keywords  # here: mmemb.models imports mmemb.data

        positions, _, _ = select_keywords(batch["text_ids"], batch["text_attention"], self.idf, self.tokenizer,
                                          self.config)
        batch["keyword_positions"] = positions  # (B, L)
        return batch


class VideoDataset(Dataset):
    """Map-style dataset over in-memory manifest records (decoding happens in ``__getitem__``)."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        vocabs: Vocabularies,
        decode: DecodeConfig,
        text: TextConfig,
        train: bool,
        half_life_days: float | None = None,
        now: float | None = None,
        seed: int | None = None,
    ):
        self.records = list(records)
        self.vocabs = vocabs
        self.decode = decode
        self.text = text
        self.train = train
        self.half_life_days = half_life_days
        self.now = now
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)
        self.epoch = 0  # set by the loader before each pass (workers receive a copy per pass)
        self.tokens = TokenTable(self.records, vocabs, text)  # the texts, encoded once for every epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        generator = sample_generator(self.seed, self.epoch, index, record.id) if self.train else None
        return encode_record(record, self.vocabs, self.decode, self.text, self.train, generator,
                             self.half_life_days, self.now, tokens=self.tokens[index])
