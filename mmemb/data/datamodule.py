"""The LightningDataModule: manifest (or demo corpus, or streaming shards) -> split -> batches.

This is the one module of :mod:`mmemb.data` that imports Lightning.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError
from .dataset import KeywordSelector, VideoDataset, collate
from .decode import DecodeConfig
from .labels import LabelWeighting, normalize_weights
from .manifest import ManifestError, Query, VideoRecord, check_manifest, manifest_errors
from .sampler import EpochShuffleSampler
from .shards import ShardedVideoDataset, read_shard_index
from .split import Split, SplitConfig, split_of, split_records
from .vocab import (LabelConfig, TextConfig, Vocabularies, positive_mass_means, summarize, text_token_idf,
                    without_label_idf)

__all__ = ["SplitConfig", "VideoDataModule", "WeightedCollate", "split_of", "split_records", "without_labels"]

log = logging.getLogger(__name__)

def without_labels(record: VideoRecord) -> VideoRecord:
    """``record`` with its hashtags, queries and category removed (its id, clip, text fields (caption,
    cover text, ASR, comments: the model's inputs) and publish time kept): what self-supervised
    pre-training may see of a validation or test video."""
    return dataclasses.replace(record, hashtags=[], queries=[], category=None)


@dataclass(frozen=True)
class WeightedCollate:
    """:func:`~mmemb.data.dataset.collate`, then the batch's label masses (IDF x clicks x freshness, as
    the dataset writes them into ``hashtag_weights`` / ``query_weights``) turned into loss weights by
    ``weighting`` (:func:`mmemb.data.labels.normalize_weights`; ``*_mean``: the train split's mean
    positive mass, the ``bce_global`` normaliser). Picklable, so it runs in the DataLoader workers."""

    weighting: LabelWeighting
    hashtag_mean: float = 1.0
    query_mean: float = 1.0
    keywords: KeywordSelector | None = None  # adds keyword_positions (set_keywords)

    def __call__(self, samples):
        batch = collate(samples)
        for name, mean in (("hashtag", self.hashtag_mean), ("query", self.query_mean)):
            batch[f"{name}_weights"] = normalize_weights(batch[f"{name}_weights"], batch[f"{name}_targets"],
                                                         self.weighting, mean)  # (B, N)
        return batch if self.keywords is None else self.keywords(batch)


class _EpochLoader(DataLoader):
    """The training DataLoader: each pass tells the dataset and the sampler the epoch, so that the
    shuffle and every sample's random choices change per epoch and depend on nothing else (workers are
    not persistent: each pass pickles the dataset anew, with its epoch). ``resume_fn()`` gives
    ``(epoch, batches)`` of a run resumed from a mid-epoch checkpoint: that epoch's first pass then
    starts after its first ``batches`` batches (the sampler skips them; streamed shards read past them,
    :meth:`ShardedVideoDataset.resume_after`).

    A pass starts at its first ``next()``, not at ``iter()``: Lightning creates the first epoch's
    iterator while it counts the steps for the LR schedule, before it restores the checkpoint, and
    on resume it does not create it again."""

    def __init__(self, dataset, epoch_fn, resume_fn=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self._epoch_fn = epoch_fn
        self._resume_fn = resume_fn
        self._passes = 0

    def __iter__(self):
        epoch = self._epoch_fn()
        epoch = self._passes if epoch is None else epoch
        self.dataset.set_epoch(epoch)
        resume = self._resume_fn() if self._resume_fn is not None else None
        resume = resume[1] if resume is not None and resume[0] == epoch else None  # batches trained
        streamed = isinstance(self.dataset, ShardedVideoDataset)
        if isinstance(self.sampler, EpochShuffleSampler):
            self.sampler.set_epoch(epoch)
            if resume is not None and resume * self.batch_size < self.sampler.num_samples:
                self.sampler.skip(resume * self.batch_size)  # at the epoch's end: resumes at the next
        elif streamed and resume is not None:
            quotas = self.dataset.worker_quotas(max(1, self.num_workers))
            if resume < sum(-(-q // self.batch_size) for q in quotas):  # the pass's batches, by worker
                self.dataset.resume_after(resume, self.batch_size)
        self._passes += 1
        batches = super().__iter__()  # the workers (or the dataset's iterator) hold the resume from here
        if streamed:
            self.dataset.clear_resume()
        yield from batches


class VideoDataModule(pl.LightningDataModule):
    """Videos of a manifest, split into train/val/test, decoded in DataLoader workers.

    Args:
        manifest: JSONL/Parquet manifest; ``None`` uses the demo corpus (built on first use).
        shards: optional folder of WebDataset shards (``mmemb data write-shards``) streamed for
            training instead of the manifest's train split (val/test still come from the manifest).
        batch_size: videos per batch (per device).
        num_workers: DataLoader worker processes; 0 decodes in the main process.
        decode: frames, resolution and audio features (see :class:`mmemb.data.decode.DecodeConfig`).
        text: tokenization of the text fields.
        labels: hashtag/query vocabularies, cleaning, TF-IDF, freshness and the tag graph.
        split: the deterministic train/val/test split.
        vocab_dir: where to save (or, when it holds a vocabulary, load) the vocabularies; default
            ``<trainer.default_root_dir>/vocab`` at setup.
        max_videos: keep only the first N records (quick experiments); ``None`` keeps all.
        demo_dir: where the demo corpus lives when ``manifest`` is None (default ``data/demo``).
        skip_bad_records: train on the manifest's valid records and log how many invalid ones were
            skipped (:attr:`skipped_records`); by default an invalid record raises one
            :class:`~mmemb.data.manifest.ManifestError` (``mmemb data check FILE`` lists them all).
        train_on_all_texts: train also on the validation and test videos with every label removed
            (:func:`without_labels`: no hashtags, queries or category; clip and text fields kept),
            for the objectives that need no label (keyword masking, text views, SimCLR, video-text
            InfoNCE): self-supervised pre-training on the whole corpus. The vocabularies, the keyword
            IDF and the label statistics still come from the train split alone, and validation and
            test are unchanged; the rows without a label are left out of the label terms.

    Freshness is measured from one reference time (:attr:`now`): the vocabularies' when they were
    saved with freshness on, else the time this module was created.
    """

    def __init__(
        self,
        manifest: str | None = None,
        shards: str | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        decode: DecodeConfig | None = None,
        text: TextConfig | None = None,
        labels: LabelConfig | None = None,
        split: SplitConfig | None = None,
        vocab_dir: str | None = None,
        max_videos: int | None = None,
        demo_dir: str | None = None,
        pin_memory: bool = False,
        skip_bad_records: bool = False,
        train_on_all_texts: bool = False,
    ):
        super().__init__()
        self.decode = decode or DecodeConfig()
        self.text = text or TextConfig()
        self.labels = labels or LabelConfig()
        self.split = split or SplitConfig()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if shards is not None and not self.labels.clicks:
            raise ValueError("labels.clicks=false rewrites the manifest's records; streamed shards keep their clicks "
                             "(train from the manifest, without data.shards)")
        self.manifest = manifest
        self.shards = shards
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.vocab_dir = vocab_dir
        self.max_videos = max_videos
        self.demo_dir = demo_dir
        self.pin_memory = pin_memory
        self.skip_bad_records = skip_bad_records
        self.train_on_all_texts = train_on_all_texts
        if train_on_all_texts and shards is not None:
            raise ValueError("train_on_all_texts needs the manifest's splits: train from the manifest, without "
                             "data.shards")
        self.skipped_records = 0  # invalid manifest records left out (only with skip_bad_records)
        self._splits: dict[Split, list[VideoRecord]] | None = None
        self._keyword_config = None  # set_keywords
        self._vocabs: Vocabularies | None = None
        self._resume_from: tuple[int, int] | None = None  # set from a checkpoint (load_state_dict)
        self.now = time.time()  # reference time for freshness weights, fixed for the run

    # ------------------------------------------------------------------ records and vocabularies

    def manifest_path(self) -> Path:
        """The manifest in use; builds the demo corpus when none was given."""
        if self.manifest is not None:
            return Path(self.manifest)
        from .demo import ensure_demo

        return Path(ensure_demo(self.demo_dir))

    @property
    def splits(self) -> dict[Split, list[VideoRecord]]:
        if self._splits is None:
            records = self._read_manifest(self.manifest_path())
            if self.max_videos is not None:
                records = records[: self.max_videos]
            if not records:
                raise ValueError(f"manifest {self.manifest_path()} holds no valid records")
            if not self.labels.clicks:  # every query counts as one click
                records = [dataclasses.replace(r, queries=[Query(q.text, 1.0) for q in r.queries]) if r.queries else r
                           for r in records]
            self._splits = split_records(records, self.split)
            sizes = {k: len(v) for k, v in self._splits.items()}
            log.info("split of %s: %s", self.manifest_path(), sizes)
        return self._splits

    def _read_manifest(self, path: Path) -> list[VideoRecord]:
        """The manifest's valid records; invalid ones raise one ManifestError, or are skipped and
        counted in :attr:`skipped_records` with ``skip_bad_records``."""
        records, issues = check_manifest(path)
        errors = manifest_errors(issues)
        if errors and not self.skip_bad_records:
            raise ManifestError(errors)
        self.skipped_records = len(errors)
        if errors:
            log.warning("skipped %d bad record(s) of %s (first: %s); run `mmemb data check %s` to see them",
                        len(errors), path, errors[0], path)
        return records

    @property
    def vocabs(self) -> Vocabularies:
        """Vocabularies, loaded from ``vocab_dir`` when it holds one, else learned from the train split.

        Their mean label masses (the ``bce_global`` normaliser) are recomputed from the train split
        when the loaded ones are missing (saved by an older version) or were computed with another
        freshness half-life."""
        if self._vocabs is None:
            half_life = self.labels.half_life_days
            if self.vocab_dir is not None and (Path(self.vocab_dir) / "vocab.json").exists():
                vocabs = Vocabularies.load(self.vocab_dir)
                if self.labels.idf and not vocabs.label_idf:
                    raise ConfigError(f"{Path(self.vocab_dir) / 'vocab.json'}: saved by a run with data.labels.idf: "
                                      "false (its label IDFs are all 1); set data.labels.idf: false, or give a "
                                      "vocab_dir without it (or none: the vocabularies are then learned again)")
                means = vocabs.mass_means
                if means is None or not means.matches(half_life):
                    vocabs.mass_means = positive_mass_means(self.splits["train"], vocabs, half_life, self.now)
                    log.info("recomputed the mean label masses of %s for half_life_days=%s", self.vocab_dir,
                             half_life)
                elif means.reference_time is not None:
                    self.now = means.reference_time  # freshness as when the means were computed
            else:
                all_records = [r for part in self.splits.values() for r in part]
                vocabs, report = Vocabularies.build(self.splits["train"], self.text, self.labels, all_records,
                                                    now=self.now)
                if report is not None and report.removed:
                    log.info("label cleaning removed %d boilerplate hashtags", len(report.removed))
            if not self.labels.idf:  # every label weighs 1 before the weighting
                vocabs = without_label_idf(vocabs, self.splits["train"], half_life, self.now)
            self._vocabs = vocabs
            log.info("vocabularies: %s", summarize(self._vocabs))
        return self._vocabs

    @property
    def label_weighting(self) -> LabelWeighting:
        """How the batches' ``hashtag_weights`` / ``query_weights`` are normalised (``labels.weighting``):
        ``softmax`` targets go with softmax cross-entropy, ``bce_global`` and ``uniform`` with BCE."""
        return self.labels.weighting

    @property
    def collate_fn(self) -> WeightedCollate:
        """The collate function of every loader of this module (batches with normalised label weights)."""
        means = self.vocabs.mass_means
        if means is None:  # the vocabs property always sets them
            raise RuntimeError("the vocabularies have no mean label masses")
        keywords = None
        if self._keyword_config is not None:
            keywords = KeywordSelector(torch.from_numpy(self.keyword_idf), self.vocabs.tokenizer, self._keyword_config)
        return WeightedCollate(self.labels.weighting, means.hashtag, means.query, keywords)

    @property
    def keyword_idf(self) -> np.ndarray:
        """``(V,)`` float32 token IDF of the train split's texts (:attr:`Vocabularies.keyword_idf`;
        computed here for a vocabulary folder saved before it was)."""
        vocabs = self.vocabs
        if vocabs.keyword_idf is None:
            vocabs.keyword_idf = text_token_idf(self.splits["train"], vocabs.tokenizer, self.text.max_length)
        return vocabs.keyword_idf

    def set_keywords(self, config) -> None:
        """Choose the keywords of every batch in the loaders' workers with ``config`` (a
        :class:`~mmemb.models.keywords.KeywordConfig`; None: no ``keyword_positions``). The
        LightningModule calls this in its ``setup`` when its keyword objective is on."""
        self._keyword_config = config

    @property
    def vocab_size(self) -> int:
        return self.vocabs.tokenizer.vocab_size

    @property
    def ngram_buckets(self) -> int:
        """Hash buckets of the ``text_ngrams`` batch key (0: the batches have none)."""
        return self.text.ngram_buckets

    @property
    def num_hashtags(self) -> int:
        return len(self.vocabs.hashtags)

    @property
    def num_queries(self) -> int:
        return len(self.vocabs.queries)

    @property
    def category_names(self) -> list[str]:
        return list(self.vocabs.categories)

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        self.manifest_path()  # builds the demo corpus once, on rank 0

    def setup(self, stage: str | None = None) -> None:
        vocabs = self.vocabs
        target = self.vocab_dir
        if target is None and self.trainer is not None:
            target = str(Path(self.trainer.default_root_dir) / "vocab")
        if target is not None and not (Path(target) / "vocab.json").exists():
            if self.trainer is None or self.trainer.is_global_zero:
                vocabs.save(target)

    def _dataset(self, name: Split) -> VideoDataset:
        return self.dataset_of(self.splits[name], train=(name == "train"))

    def dataset_of(self, records: list[VideoRecord], train: bool = False) -> VideoDataset:
        """A dataset of any ``records`` (e.g. read from elsewhere) encoded exactly as this data module
        encodes its splits: its vocabularies, decoding, text and label settings (``train``: the
        training split's random choices, e.g. the frame jitter)."""
        vocabs = self.vocabs  # first: loading them may set self.now
        return VideoDataset(records, vocabs, self.decode, self.text, train=train,
                            half_life_days=self.labels.half_life_days, now=self.now)

    def _loader(self, dataset) -> DataLoader:
        """A validation/test/predict loader (in order)."""
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataset(self):
        if self.shards is None and self.train_on_all_texts:
            unlabelled = [without_labels(r) for r in self.splits["val"] + self.splits["test"]]
            return self.dataset_of(self.splits["train"] + unlabelled, train=True)
        if self.shards is None:
            return self._dataset("train")
        rank, world = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        vocabs = self.vocabs  # first: loading them may set self.now
        return ShardedVideoDataset(read_shard_index(self.shards), vocabs, self.decode, self.text, train=True,
                                   rank=rank, world_size=world, seed=self.split.seed,
                                   half_life_days=self.labels.half_life_days, now=self.now)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        common = dict(batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.collate_fn,
                      pin_memory=self.pin_memory, persistent_workers=False)
        if isinstance(dataset, ShardedVideoDataset):
            return _EpochLoader(dataset, self._epoch, resume_fn=self._resume_position, **common)
        if len(dataset) == 0:
            raise ValueError("the train split is empty: lower split fractions or add videos")
        rank, world = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)
        # the shuffle depends only on the seed and the epoch, so a resumed run sees the same order
        sampler = EpochShuffleSampler(dataset, epoch=self._epoch() or 0, num_replicas=world, rank=rank)
        return _EpochLoader(dataset, self._epoch, resume_fn=self._resume_position, sampler=sampler, **common)

    def _epoch(self) -> int | None:
        return None if self.trainer is None else self.trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the epoch and how many of its batches were trained, which a
        run resumed from a mid-epoch checkpoint skips (see :class:`_EpochLoader`)."""
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_position": [int(self.trainer.current_epoch), int(done)]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = state_dict.get("train_position")
        self._resume_from = tuple(position) if position else None

    def _resume_position(self) -> tuple[int, int] | None:
        """``(epoch, batches trained in it)`` of the checkpoint this run resumed from, once (the first
        pass of the train loader), else None."""
        position, self._resume_from = self._resume_from, None
        return position if position and position[1] > 0 else None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))
