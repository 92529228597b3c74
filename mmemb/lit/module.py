"""Training and evaluation of the embedding model (:class:`mmemb.models.model.EmbeddingModel`, every
preset) as one LightningModule.

Loss = weighted sum of the terms (each logged as ``train/<term>``; a term whose weight is 0 or absent
from ``loss_weights`` is not computed, nor one whose head is off or whose data is absent):

* ``clip_v2t``, ``clip_t2v``: video (visual + audio) vs text-tower InfoNCE with the negatives of every
  DDP rank (:func:`mmemb.losses.clip_infonce_global`);
* ``simclr``: NT-Xent between the video embeddings of two augmented views
  (:func:`mmemb.data.augment.two_views`; the first view also feeds every other term);
* ``hashtag_bce``, ``query_bce``: TF-IDF weighted multi-label BCE of the label heads, over the rows
  that carry at least one label (label weighting ``bce_global`` or ``uniform``); or ``hashtag_ce``,
  ``query_ce``: softmax cross-entropy against each row's target distribution (``softmax``);
* ``hashtag_wide_bce``, ``query_wide_bce``: plain multi-label BCE (every label and row weighs 1, rows
  without labels are all-negative, as one-vs-rest logistic regression's) of a label head's wide part
  alone (``ModelConfig.wide_ngram_heads`` with ``wide_loss="bce"``; weight 1 unless ``loss_weights`` names
  it: it is the wide table's only gradient, and Adam's step hardly depends on its scale). The wide part
  learns from it only: the head's own term sees the wide scores without their gradient (the deep head
  learns what the wide part misses). The head's scores stay deep + wide. With ``wide_fit="liblinear"`` the
  wide parts are instead fitted to convergence when training starts and then fixed: no wide term;
* ``text_views``: NT-Xent between two text views of the same video, its caption alone and its cover
  text alone (:func:`text_field_view`: the other fields' tokens and n-grams left out), over the rows
  that have both (only those are encoded; :func:`mmemb.losses.text_view_infonce`); a text-side
  contrastive objective that needs no video (off unless weighted: 0 in :data:`DEFAULT_LOSS_WEIGHTS`);
* ``keyword``: cross-entropy of the masked keywords (highest-IDF words, :mod:`mmemb.models.keywords`),
  predicted from a second fusion pass over the masked text; every other term reads the clean text
  (see :class:`~mmemb.models.model.EmbeddingModel`). The dataset workers choose the keywords
  (``keyword_positions`` in the batch); a batch without them gets them chosen here.

The label-name encodings of the heads are refreshed every ``heads.label_refresh_steps`` training
steps (global step multiple of it) and reused in between; validation and test encode them afresh.

The two-tower presets train with ``loss_weights: {clip_v2t: 0.5, clip_t2v: 0.5}`` (their configs say
so); the default weights are those of the full model.

The augmentations draw from a generator seeded by (``augment_seed``, global rank, global step,
micro-batch index within the step's gradient accumulation) (:func:`augment_generator`): every rank and
every micro-batch draws its own views, and a run resumed from a checkpoint draws the same views as an
uninterrupted one.

Validation and test collect the embeddings, masks, categories and hashtag scores of every batch,
merge them across DDP ranks at the end of the epoch and log retrieval and hashtag metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch

from ..data.augment import AugmentConfig, two_views
from ..data.datamodule import VideoDataModule
from ..eval.metrics import retrieval_metrics
from ..losses import (clip_infonce_global, keyword_mask_loss, nt_xent, soft_target_cross_entropy, text_view_infonce,
                      total_loss, weighted_multilabel_bce)
from ..models.checkpoint import read_checkpoint, upgrade_state_dict
from ..models.config import apply_overrides
from ..models.keywords import KeywordConfig, apply_mask, keyword_targets, select_keywords
from ..models.ngram import NgramBag
from ..models.registry import create_model, get_model_config
from .hashtag_scoring import hashtag_metrics, label_inputs, name_token_ids, zero_shot_embedding, zero_shot_scores
from .optim import configure_warmup_cosine
from .resume import fix_loop_progress

__all__ = ["EmbeddingModule", "DEFAULT_LOSS_WEIGHTS", "augment_generator", "PROGRESS_METRICS", "first_occurrences",
           "text_field_view", "has_field"]

log = logging.getLogger(__name__)

# the label terms are ``<name>_bce`` (label weighting bce_global / uniform) or ``<name>_ce`` (softmax)
DEFAULT_LOSS_WEIGHTS = {"clip_v2t": 0.5, "clip_t2v": 0.5, "simclr": 0.5, "hashtag_bce": 1.0, "query_bce": 1.0,
                        "hashtag_ce": 1.0, "query_ce": 1.0, "keyword": 0.5, "text_views": 0.0,
                        "hashtag_wide_bce": 1.0, "query_wide_bce": 1.0}
# the wide terms exist only for wide parts with ``ModelConfig.wide_loss="bce"``, which are trained by them alone:
# their weight then defaults to 1 where ``loss_weights`` does not name them (see :class:`EmbeddingModule`)
WIDE_TERMS = ("hashtag_wide_bce", "query_wide_bce")
LabelWeighting = Literal["softmax", "bce_global", "uniform"]
MASK_ID = 4  # [MASK] in a TextTokenizer vocabulary (SPECIAL_TOKENS order); the data's tokenizer is used when known
PROGRESS_METRICS = ("t2v_r1_category", "chance_r1_category")  # also shown in the progress bar
CAPTION_FIELD, COVER_FIELD = 1, 2  # text_field_ids of the caption and the cover text (mmemb.data.vocab.TEXT_FIELDS)
TEXT_VIEW_KEYS = ("text_ids", "text_attention", "text_field_ids", "text_ngrams", "text_ngram_field_ids")


def augment_generator(seed: int, rank: int, step: int, micro_batch: int) -> torch.Generator:
    """A CPU generator of its own for every (seed, global rank, global step, micro-batch) (mixed by
    :class:`numpy.random.SeedSequence`, so that nearby tuples give unrelated streams)."""
    state = np.random.SeedSequence([seed, rank, step, micro_batch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _IdTokenizer:
    """Fallback for keyword selection without the data's tokenizer: every id is a word of its own."""

    def id_to_token(self, idx: int) -> str:
        from ..data.text import SPECIAL_TOKENS

        return SPECIAL_TOKENS[idx] if 0 <= idx < len(SPECIAL_TOKENS) else f"w{idx}"


def _plain(x: Any) -> Any:
    """Dataclasses -> dicts (checkpoints then load with ``weights_only=True``)."""
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x


def has_field(batch: dict[str, Any], field: int) -> torch.Tensor:
    """``(B,)`` bool: the rows whose text has a token of ``field`` (a ``text_field_ids`` value)."""
    return ((batch["text_field_ids"] == field) & batch["text_attention"].bool()).any(dim=1)


def text_field_view(batch: dict[str, Any], field: int) -> dict[str, torch.Tensor]:
    """The text inputs of ``batch`` restricted to one field (``field``: its ``text_field_ids`` value, e.g.
    :data:`CAPTION_FIELD`): ``[CLS]``, that field's tokens and its ``[SEP]`` attend (the positions stay
    where they are), the n-grams of the other fields are dropped (with ``text_ngram_field_ids``; without
    it the view has no n-gram bag), and ``text_mask`` holds for the rows where the field has a token."""
    fields = batch["text_field_ids"]  # (B, L)
    attention = batch["text_attention"] * ((fields == field) | (fields == 0)).long()  # (B, L) [CLS] + field
    view = {"text_ids": batch["text_ids"], "text_attention": attention, "text_field_ids": fields,
            "text_mask": has_field(batch, field)}
    if batch.get("text_ngrams") is not None and batch.get("text_ngram_field_ids") is not None:
        view["text_ngrams"] = batch["text_ngrams"] * (batch["text_ngram_field_ids"] == field).long()  # (B, G)
    return view


def first_occurrences(ids: list[str]) -> torch.Tensor:
    """Indices ``(U,)`` of the first row of every distinct id, in order."""
    seen: set[str] = set()
    keep = [i for i, key in enumerate(ids) if not (key in seen or seen.add(key))]
    return torch.tensor(keep, dtype=torch.long)


class EmbeddingModule(pl.LightningModule):
    """Multi-objective training of an :class:`~mmemb.models.model.EmbeddingModel` preset.

    Args:
        preset: model preset (``mmemb.models.list_models()``).
        vocab_size, num_hashtags, num_queries: linked from the data module by the CLI
            (``data.vocab_size`` ...); they set ``text.vocab_size``, ``heads.num_hashtags`` and
            ``heads.num_queries`` of the model config.
        ngram_buckets: hash buckets of the n-gram bag channel, linked from ``data.ngram_buckets``
            (``text.ngram_buckets``); 0 = no bag; None = the preset's (0).
        overrides: preset fields to change: top-level fields by name (``use_gcn: false``), a part as a
            dict of its fields (``audio: {depth: 1}``, ``vision: {pretrained_path: vit.safetensors}``).
        lr, weight_decay, betas: optimizer settings (no decay on 1-D parameters and embeddings).
        optimizer: ``"adamw"`` or ``"lamb"`` (for very large batches).
        warmup_fraction, min_lr_ratio: warmup + cosine schedule (:func:`mmemb.lit.optim.warmup_cosine`).
        loss_weights: weight per term (default :data:`DEFAULT_LOSS_WEIGHTS`); 0 or absent disables a term.
        simclr_temperature: NT-Xent temperature.
        text_view_temperature: temperature of the ``text_views`` term (caption vs cover text).
        augment: augmentation strength of the SimCLR views (None = ``AugmentConfig()``).
        augment_seed: seed of the augmentations (see :func:`augment_generator`), >= 0.
        keywords: keyword selection (None = ``KeywordConfig()``).
        label_neg_weight: weight of every negative label in the BCE terms.
        label_weighting: how the data normalised the batches' label weights, linked from
            ``data.labels.weighting``: ``softmax`` (per-video target distributions) trains the label
            heads with softmax cross-entropy (terms ``hashtag_ce``, ``query_ce``); ``bce_global`` and
            ``uniform`` with weighted BCE (``hashtag_bce``, ``query_bce``).
        init_from: a checkpoint (``.ckpt`` file) whose model weights start this training, e.g. a
            self-supervised pre-training run (``data.train_on_all_texts``): every weight whose name and
            shape match is copied when ``fit`` starts (read with ``weights_only=True``), the rest keep
            their initialisation (both counts logged). Its run's vocabularies must be the data's (checked
            when its ``vocab/`` is found beside it). A run resumed with ``--ckpt_path`` then restores
            its own weights over these.
        wide_fit: how the label heads' wide parts (``wide_ngram_heads``) learn: ``sgd``, by the training
            steps (their own BCE term under ``wide_loss="bce"``, else the head's); ``liblinear``, fitted to
            convergence on the train split when ``fit`` starts (:func:`mmemb.models.wide_fit.fit_wide_part`:
            one-vs-rest L2 logistic regression over the part's own pooled n-grams, an intercept per label
            with ``wide_bias``), then frozen, so that the deep head learns on top of a converged linear model
            (the wide terms are off). A resumed run fits them again (liblinear is deterministic: the same part).
        wide_fit_c: the inverse L2 strength ``C`` of ``wide_fit="liblinear"``.
        wide_fit_folds: cross-fitting of ``wide_fit="liblinear"``: the train rows are split into this many
            parts and, in training, the head's term sees each row's wide scores from a model fitted on the
            other parts (out-of-fold, as a validation row's come from a model that did not see it); without it
            (0) the deep head trains on the fitted part's own, over-confident train scores and learns little.
            Evaluation and export always use the part fitted on every train row.
    """

    def __init__(
        self,
        preset: str = "teacher_small",
        vocab_size: int = 8000,
        num_hashtags: int = 0,
        num_queries: int = 0,
        ngram_buckets: int | None = None,
        overrides: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        optimizer: Literal["adamw", "lamb"] = "adamw",
        warmup_fraction: float = 0.05,
        min_lr_ratio: float = 0.0,
        loss_weights: dict[str, float] | None = None,
        simclr_temperature: float = 0.1,
        augment: AugmentConfig | dict | None = None,
        augment_seed: int = 0,
        keywords: KeywordConfig | dict | None = None,
        label_neg_weight: float = 1.0,
        label_weighting: LabelWeighting = "bce_global",
        text_view_temperature: float = 0.1,
        init_from: str | None = None,
        wide_fit: Literal["sgd", "liblinear"] = "sgd",
        wide_fit_c: float = 16.0,
        wide_fit_folds: int = 5,
    ):
        super().__init__()
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        if optimizer not in ("adamw", "lamb"):
            raise ValueError(f"optimizer must be 'adamw' or 'lamb', got {optimizer!r}")
        if simclr_temperature <= 0:
            raise ValueError(f"simclr_temperature must be > 0, got {simclr_temperature}")
        if text_view_temperature <= 0:
            raise ValueError(f"text_view_temperature must be > 0, got {text_view_temperature}")
        if augment_seed < 0:
            raise ValueError(f"augment_seed must be >= 0, got {augment_seed}")
        weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
        unknown = set(weights) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise KeyError(f"unknown loss terms {sorted(unknown)}; valid: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        if label_weighting not in ("softmax", "bce_global", "uniform"):
            raise ValueError(f"label_weighting must be 'softmax', 'bce_global' or 'uniform', got {label_weighting!r}")
        if wide_fit not in ("sgd", "liblinear"):
            raise ValueError(f"wide_fit must be 'sgd' or 'liblinear', got {wide_fit!r}")
        if not wide_fit_c > 0:
            raise ValueError(f"wide_fit_c must be > 0, got {wide_fit_c}")
        if wide_fit_folds == 1 or wide_fit_folds < 0:
            raise ValueError(f"wide_fit_folds must be 0 (no cross-fitting) or >= 2, got {wide_fit_folds}")
        loss = "ce" if label_weighting == "softmax" else "bce"
        for name in ("hashtag", "query"):
            other = "bce" if loss == "ce" else "ce"
            if f"{name}_{loss}" not in weights and weights.get(f"{name}_{other}", 0) > 0:
                raise KeyError(f"label weighting {label_weighting!r} trains the term {name}_{loss}, but loss_weights "
                               f"has only {name}_{other}: add {name}_{loss} (e.g. --model.loss_weights.{name}_{loss} 1.0)")
        self.augment_cfg = augment if isinstance(augment, AugmentConfig) else AugmentConfig(**(augment or {}))
        self.keyword_cfg = keywords if isinstance(keywords, KeywordConfig) else KeywordConfig(**(keywords or {}))
        self.save_hyperparameters(ignore=["overrides", "augment", "keywords"])
        self.hparams["overrides"] = dict(overrides or {})  # plain containers: weights_only checkpoints
        self.hparams["augment"] = _plain(self.augment_cfg)
        self.hparams["keywords"] = _plain(self.keyword_cfg)
        linked = {"text": {"vocab_size": vocab_size, **({} if ngram_buckets is None else
                                                          {"ngram_buckets": ngram_buckets})},
                  "heads": {"num_hashtags": num_hashtags, "num_queries": num_queries}}
        self.config = apply_overrides(get_model_config(preset, **self.hparams["overrides"]), linked)
        self.model = create_model(self.config)
        if wide_fit == "liblinear":  # fitted once when fit starts, then fixed: no gradient, no term
            if not self._wide_parts():
                raise ValueError("wide_fit='liblinear' fits the label heads' wide parts, but the model has none: "
                                 "use a preset with wide_ngram_heads (e.g. teacher_text_wide) and n-gram buckets")
            for wide in self._wide_parts().values():
                wide.requires_grad_(False)
            for term in WIDE_TERMS:
                weights[term] = 0.0
        elif self.config.wide_loss == "bce":  # the wide parts' only gradient: on at weight 1 unless given
            for term in WIDE_TERMS:
                weights.setdefault(term, 1.0)
        self.loss_weights = weights
        # hashtag names (zero-shot scores without a head) and train counts (the popularity baseline)
        if num_hashtags > 0:
            length = self.config.heads.label_max_length
            self.register_buffer("hashtag_name_ids", torch.zeros(num_hashtags, length, dtype=torch.long))
            self.register_buffer("hashtag_name_attention", torch.zeros(num_hashtags, length, dtype=torch.long))
            self.register_buffer("hashtag_train_counts", torch.zeros(num_hashtags))
        self.register_buffer("keyword_idf", torch.ones(vocab_size))  # set from the train texts in setup
        self._tokenizer: Any = _IdTokenizer()
        self._mask_id = MASK_ID
        self._eval_outputs: list[dict[str, torch.Tensor]] = []
        self._eval_ids: list[str] = []  # the video id of every row of _eval_outputs
        # wide_fit="liblinear" with folds: {"hashtag": (row of each train id, (N, L) out-of-fold wide scores)}
        self._wide_oof: dict[str, tuple[dict[str, int], torch.Tensor]] = {}

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def from_checkpoint_weights(cls, path: str, map_location: str | torch.device = "cpu") -> "EmbeddingModule":
        """The module rebuilt from the hyper-parameters and weights of a Lightning checkpoint, read with
        ``torch.load(weights_only=True)`` (no pickled code runs); checkpoints of earlier versions are
        upgraded (:mod:`mmemb.models.checkpoint`)."""
        hparams, state_dict = read_checkpoint(path, map_location)
        module = cls(**hparams)
        module.load_state_dict(upgrade_state_dict(state_dict, module))
        return module

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning calls this (``restore_model``) before it restores the loops from
        ``checkpoint["loops"]`` (``restore_training_state``), so patching the dict here takes effect."""
        super().on_load_checkpoint(checkpoint)
        fix_loop_progress(checkpoint)

    # ------------------------------------------------------------------ data-dependent inputs

    def set_vocabularies(self, vocabs, train_records=None, text_max_length: int | None = None,
                         init_text: bool = False) -> None:
        """Label names, tag graph, hashtag train counts, tokenizer and keyword IDF from the data's
        :class:`~mmemb.data.vocab.Vocabularies`; with ``init_text`` and ``text.init="minilm"``, the text
        tower starts from MiniLM's weights. A label vocabulary whose size is not the model's is an error
        (its names would stay placeholders)."""
        cfg = self.config
        tok = vocabs.tokenizer
        num_hashtags, num_queries = cfg.heads.num_hashtags, cfg.heads.num_queries
        if num_hashtags and len(vocabs.hashtags) != num_hashtags:
            raise ValueError(f"the data has {len(vocabs.hashtags)} hashtags but the model was built for "
                             f"{num_hashtags}: link model.num_hashtags to data.num_hashtags")
        if cfg.has_query_head and len(vocabs.queries) != num_queries:
            raise ValueError(f"the data has {len(vocabs.queries)} queries but the model was built for "
                             f"{num_queries}: link model.num_queries to data.num_queries")
        if init_text and cfg.text.init == "minilm":
            self._init_text_from_minilm(tok)
        self._tokenizer = tok
        self._mask_id = getattr(tok, "mask_id", MASK_ID)
        length = cfg.heads.label_max_length
        hashtags = queries = None
        if cfg.has_hashtag_head:
            hashtags = label_inputs(tok, list(vocabs.hashtags.labels), length, vocabs.tag_graph)
        if cfg.has_query_head:
            queries = label_inputs(tok, list(vocabs.queries.labels), length)
        self.model.set_label_inputs(hashtags, queries)
        if num_hashtags:
            ids, att = name_token_ids(tok, list(vocabs.hashtags.labels), length)
            dev = self.hashtag_name_ids.device
            self.hashtag_name_ids.copy_(ids.to(dev))
            self.hashtag_name_attention.copy_(att.to(dev))
            self.hashtag_train_counts.copy_(torch.as_tensor(list(vocabs.hashtags.counts), dtype=torch.float32,
                                                            device=dev))
        if cfg.keyword_head and vocabs.keyword_idf is not None:  # learned from the train texts with the vocabularies
            self.keyword_idf = torch.as_tensor(vocabs.keyword_idf, dtype=torch.float32, device=self.keyword_idf.device)
        elif train_records is not None and cfg.keyword_head:
            from ..data.vocab import text_token_idf

            length = text_max_length or cfg.text.max_length
            self.keyword_idf = torch.from_numpy(text_token_idf(train_records, tok, length)).to(self.keyword_idf.device)

    def init_from_checkpoint(self, path: str, vocabs=None, only: Sequence[str] | None = None) -> tuple[int, int]:
        """Copy the model weights of the checkpoint at ``path`` whose names and shapes match this model's
        (see ``init_from``); returns (tensors copied, tensors of this model left as they were). With
        ``vocabs`` (the data's), the checkpoint run's saved vocabularies must have the same fingerprint.
        ``only``: copy only the weights of these child modules of the model (e.g. ``("text", "text_proj")``)."""
        from ..data.vocab import Vocabularies, vocab_fingerprint

        if not Path(path).is_file():
            raise FileNotFoundError(f"init_from: no checkpoint file {path}")
        _, state = read_checkpoint(path)
        if vocabs is not None:
            saved = next((p / "vocab" for p in Path(path).resolve().parents if (p / "vocab" / "vocab.json").exists()),
                         None)
            if saved is not None and vocab_fingerprint(Vocabularies.load(str(saved))) != vocab_fingerprint(vocabs):
                raise ValueError(f"init_from: {path} was trained with the vocabularies of {saved}, not the data's; "
                                 f"train with --data.vocab_dir {saved}")
        own = self.model.state_dict()
        found = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        match = {k: v for k, v in found.items() if k in own and own[k].shape == v.shape}
        if only is not None:
            match = {k: v for k, v in match.items() if k.split(".", 1)[0] in only}
        if not match:
            raise ValueError(f"init_from: no weight of {path} fits this model (preset {self.hparams.preset!r})")
        self.model.load_state_dict(match, strict=False)
        kept = len(own) - len(match)
        log.info("init_from %s: %d of the model's %d tensors copied, %d left as initialised (%d of the "
                 "checkpoint's unused)", path, len(match), len(own), kept, len(found) - len(match))
        return len(match), kept

    def _init_text_from_minilm(self, tokenizer) -> None:
        from ..models.text_init import init_text_from_minilm

        if self.config.text.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"text.init='minilm' maps the tokenizer's {tokenizer.vocab_size} tokens onto MiniLM's, "
                             f"but the model has text.vocab_size={self.config.text.vocab_size}")
        report = init_text_from_minilm(self.model.text, tokenizer.id_to_token)
        log.info("text tower initialised from MiniLM: %s", report.summary())

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "vocabs"):
            return
        records = dm.splits["train"] if hasattr(dm, "splits") else None
        text_len = getattr(getattr(dm, "text", None), "max_length", None)
        # MiniLM weights only when training starts (a resumed run's checkpoint then overwrites them)
        self.set_vocabularies(dm.vocabs, records, text_len, init_text=(stage == "fit"))
        if stage == "fit" and self.hparams.get("init_from"):
            self.init_from_checkpoint(self.hparams["init_from"], dm.vocabs)
        if self.config.keyword_head and self._weight("keyword") > 0 and isinstance(dm, VideoDataModule):
            dm.set_keywords(self.keyword_cfg)  # the loaders' workers choose the keywords

    def on_fit_start(self) -> None:
        """``wide_fit="liblinear"``: fit the wide parts on the data module's train split (after
        ``init_from``; a resumed run fits them again, to the same weights, and has its out-of-fold scores)."""
        if self.hparams.get("wide_fit") != "liblinear":
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "splits") or not hasattr(dm, "vocabs"):
            raise ValueError("wide_fit='liblinear' fits the wide parts on the data module's train split: train with "
                             "an mmemb VideoDataModule")
        self.fit_wide_parts(dm.splits["train"], dm.vocabs, dm.text)

    def _wide_parts(self) -> dict[str, NgramBag]:
        """``{"hashtags": bag, "queries": bag}``: the label heads' wide parts the model has."""
        parts = {"hashtags": self.model.hashtag_wide, "queries": self.model.query_wide}
        return {kind: wide for kind, wide in parts.items() if wide is not None}

    def fit_wide_parts(self, records, vocabs, text_cfg) -> None:
        """Fit each wide part to the ``records``' labels from their texts' n-grams, as the data set hashes
        them (``text_cfg``: the data's :class:`~mmemb.data.vocab.TextConfig`), by
        :func:`~mmemb.models.wide_fit.fit_wide_part` at ``wide_fit_c`` (``wide_fit="liblinear"``)."""
        from ..data.dataset import encode_labels, encode_ngrams
        from ..data.vocab import record_texts
        from ..models.wide_fit import fit_wide_part

        if not text_cfg.ngram_buckets:
            raise ValueError("wide_fit='liblinear' needs the data's n-grams: set data.text.ngram_buckets")
        ids = torch.stack([encode_ngrams(record_texts(r), text_cfg) for r in records])  # (N, G)
        labels = [encode_labels(r, vocabs, None, None) for r in records]
        rows = {r.id: i for i, r in enumerate(records)}
        folds = int(self.hparams.get("wide_fit_folds", 0))
        for kind, wide in self._wide_parts().items():
            name = kind[:-1]  # hashtags -> hashtag
            targets = torch.stack([x[f"{name}_targets"] for x in labels])  # (N, L)
            report, oof = fit_wide_part(wide, ids, targets, C=float(self.hparams.wide_fit_c), folds=folds,
                                        progress=True)
            log.info("wide part of the %s head fitted (liblinear, C=%s, %d folds): %s", kind, self.hparams.wide_fit_c,
                     folds, report.summary())
            if oof is not None:
                self._wide_oof[name] = (rows, torch.from_numpy(oof))

    def _out_of_fold(self, name: str, logits: torch.Tensor, wide: torch.Tensor, ids) -> torch.Tensor:
        """The head's training ``logits`` ``(B, N)`` (deep + wide) with each row's wide scores replaced by its
        out-of-fold scores (``wide_fit_folds``); rows of ids outside the fitted train split keep theirs."""
        rows, oof = self._wide_oof[name]
        index = [rows.get(str(i), -1) for i in ids]
        known = torch.tensor([i >= 0 for i in index], device=logits.device)  # (B,)
        held = oof[torch.tensor([max(i, 0) for i in index])].to(logits)  # (B, N)
        return logits - wide.detach() + torch.where(known.unsqueeze(1), held, wide.detach())  # (B, N)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    # ------------------------------------------------------------------ losses

    def _weight(self, term: str) -> float:
        return float(self.loss_weights.get(term, 0.0))

    def _augment_generator(self, batch_idx: int) -> torch.Generator:
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        return augment_generator(int(self.hparams.augment_seed), int(self.global_rank), int(self.global_step),
                                 batch_idx % accumulate)

    def _losses(self, batch: dict[str, Any],
                batch_idx: int | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Forward outputs and loss terms; ``batch_idx`` given = a training step (with augmentations)."""
        cfg = self.config
        view1 = view2 = None
        use_simclr = batch_idx is not None and self._weight("simclr") > 0
        if use_simclr:
            view1, view2 = two_views(batch, self.augment_cfg, self._augment_generator(batch_idx))
        main = view1 if view1 is not None else batch
        kw_args: dict[str, Any] = {}
        kw = None
        if cfg.keyword_head and self._weight("keyword") > 0:
            if batch.get("keyword_positions") is not None:  # chosen by the dataset workers
                positions = batch["keyword_positions"]
                target_ids, valid = keyword_targets(batch["text_ids"], positions)
            else:  # a batch from elsewhere: choose here (a device-to-host copy and CPU work per step)
                positions, target_ids, valid = select_keywords(batch["text_ids"], batch["text_attention"],
                                                               self.keyword_idf, self._tokenizer, self.keyword_cfg)
            kw = (target_ids, valid)
            kw_args = {"masked_text_ids": apply_mask(batch["text_ids"], positions, self._mask_id),
                       "keyword_positions": positions, "num_keywords": target_ids.shape[1]}
        refresh = batch_idx is None or self.global_step % cfg.heads.label_refresh_steps == 0
        out = self.model(main, **kw_args, refresh_labels=refresh)
        terms: dict[str, torch.Tensor] = {}
        if self._weight("clip_v2t") > 0 or self._weight("clip_t2v") > 0:
            terms.update(clip_infonce_global(out["video"], out["text"], out["logit_scale"], out["video_mask"],
                                             batch.get("text_mask")))
        if use_simclr:
            z2 = self.model.encode_video(view2)
            ok = out["video_mask"] & (z2 != 0).any(dim=-1)
            terms.update(nt_xent(out["video"], z2, self.hparams.simclr_temperature, ok))
        if self._weight("text_views") > 0 and batch.get("text_field_ids") is not None:
            terms.update(self._text_view_term(batch))
        softmax = self.hparams.label_weighting == "softmax"
        for name in ("hashtag", "query"):
            key = f"{name}_logits"
            term = f"{name}_ce" if softmax else f"{name}_bce"
            if key not in out or f"{name}_targets" not in batch:
                continue
            targets, weights = batch[f"{name}_targets"], batch[f"{name}_weights"]
            logits, wide = out[key], out.get(f"{name}_wide_logits")
            if batch_idx is not None and wide is not None and name in self._wide_oof:  # training: cross-fitted
                logits = self._out_of_fold(name, logits, wide, batch["ids"])
            # the wide part learns from its own term only (the model's head logits carry no gradient into it)
            if wide is not None and self.config.wide_loss == "bce" and self._weight(f"{name}_wide_bce") > 0:
                ones = torch.ones_like(wide)  # (B, N)
                terms[f"{name}_wide_bce"] = weighted_multilabel_bce(wide, targets, ones, 1.0, name)[f"{name}_bce"]
            if self._weight(term) > 0:
                labelled = targets.sum(-1) > 0  # (B,) rows with at least one label
                if softmax:
                    terms.update(soft_target_cross_entropy(logits, weights * targets, labelled, name))
                else:
                    terms.update(weighted_multilabel_bce(logits, targets, weights, self.hparams.label_neg_weight,
                                                         name, labelled))
        if kw is not None and "keyword_logits" in out:
            terms.update(keyword_mask_loss(out["keyword_logits"], *kw))
        terms.update(self._extra_terms(main, out, batch_idx))
        return out, terms

    def _extra_terms(self, inputs: dict[str, Any], out: dict[str, Any],
                     batch_idx: int | None) -> dict[str, torch.Tensor]:
        """Further loss terms of a subclass (e.g. distillation, :class:`mmemb.lit.distill.DistillModule`)
        from the batch the model saw (``inputs``: the first augmented view when SimCLR is on) and its
        outputs ``out``; ``batch_idx`` None = an evaluation step. None here."""
        return {}

    def _text_view_term(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``text_views`` over the rows that have both a caption and a cover text (only those are encoded:
        two extra text-tower passes over a quarter of the batch on KuaiRec rather than over all of it)."""
        rows = (has_field(batch, CAPTION_FIELD) & has_field(batch, COVER_FIELD)).nonzero().flatten()  # (P,)
        if rows.numel() == 0:
            return {"text_views": torch.zeros((), device=batch["text_ids"].device)}
        sub = {k: batch[k][rows] for k in TEXT_VIEW_KEYS if batch.get(k) is not None}  # (P, ...) each
        caption, cover = text_field_view(sub, CAPTION_FIELD), text_field_view(sub, COVER_FIELD)
        return text_view_infonce(self.model.encode_text(caption), self.model.encode_text(cover),
                                 self.hparams.text_view_temperature)

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return total_loss(terms, {k: self._weight(k) for k in terms})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out, terms = self._losses(batch, batch_idx)
        loss = self._total(terms)
        bs = len(batch["ids"])
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/logit_scale", out["logit_scale"], batch_size=bs)
        for kind, channels in (("video", self.model.video_channels), ("text", self.model.text_channels)):
            w = out[f"{kind}_weights"]
            for i, c in enumerate(channels):  # mean channel weight (channel attention)
                self.log(f"train/{kind}_weight_{c}", w[:, i].mean(), batch_size=bs)
        return loss

    def configure_optimizers(self):
        return configure_warmup_cosine(self, self.model, self.hparams.optimizer)

    # ------------------------------------------------------------------ hashtag scores

    def _has_hashtag_names(self) -> bool:
        return self.config.heads.num_hashtags > 0 and bool(self.hashtag_name_attention.any())

    def hashtag_scores(self, out: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``(B, H)`` hashtag scores of a forward output: the head's logits when there is a head, else
        the zero-shot cosines (:func:`~mmemb.lit.hashtag_scoring.zero_shot_scores` of
        :func:`~mmemb.lit.hashtag_scoring.zero_shot_embedding`: the video embedding, the text embedding for
        a video without a clip); None when the module knows no hashtag names."""
        if "hashtag_logits" in out:
            return out["hashtag_logits"]
        if not self._has_hashtag_names():
            return None
        return zero_shot_scores(self.model, zero_shot_embedding(out), self.hashtag_name_ids,
                                self.hashtag_name_attention)

    # ------------------------------------------------------------------ evaluation

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        out, terms = self._losses(batch)
        if terms:
            self.log(f"{prefix}/loss", self._total(terms), batch_size=len(batch["ids"]))
        row = {
            "video": out["video"].detach().float().cpu(),
            "text": out["text"].detach().float().cpu(),
            "video_mask": out["video_mask"].cpu(),
            "text_mask": batch["text_mask"].cpu(),
            "category": batch["category"].cpu(),
        }
        scores = self.hashtag_scores(out) if "hashtag_targets" in batch else None
        if scores is not None:  # head logits, else zero-shot cosines
            row.update(hashtag_scores=scores.detach().float().cpu(), hashtag_targets=batch["hashtag_targets"].cpu())
        self._eval_outputs.append(row)
        self._eval_ids.extend(str(i) for i in batch["ids"])

    def _merged_eval_outputs(self) -> dict[str, torch.Tensor] | None:
        """The epoch's outputs concatenated per key (then cleared), one row per video. On several ranks
        every rank gets the whole split: the rows and the ids of every rank are gathered, and the
        duplicates the DistributedSampler pads the shorter shards with are dropped (by id, the first
        occurrence kept; so under DDP the video ids of a split must be unique, as ``mmemb data check``
        requires). None when nothing was collected."""
        if not self._eval_outputs:
            return None
        keys = self._eval_outputs[0].keys()
        merged = {k: torch.cat([o[k] for o in self._eval_outputs]) for k in keys}
        ids, self._eval_ids = self._eval_ids, []
        self._eval_outputs.clear()
        if self.trainer.world_size > 1:
            merged = {k: self.all_gather(v.to(self.device)).flatten(0, 1).cpu() for k, v in merged.items()}  # rank-major
            per_rank: list[list[str]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(per_rank, ids)
            ids = [i for rank_ids in per_rank for i in rank_ids]  # the same rank-major order
            keep = first_occurrences(ids)
            if len(keep) < len(ids):
                merged = {k: v[keep] for k, v in merged.items()}
        return merged

    def _eval_epoch_end(self, prefix: str) -> dict[str, float]:
        """Retrieval metrics and hashtag metrics (with the popularity baseline) of the epoch, logged."""
        merged = self._merged_eval_outputs()
        if merged is None:
            return {}
        metrics = retrieval_metrics(merged["video"], merged["text"], merged["category"],
                                    merged["video_mask"], merged["text_mask"])
        logged = {k: v for k, v in metrics.items() if not k.endswith("_chance") and k not in PROGRESS_METRICS}
        if "hashtag_scores" in merged:
            counts = self.hashtag_train_counts if self._has_hashtag_names() else None
            for k, v in hashtag_metrics(merged["hashtag_scores"], merged["hashtag_targets"], counts).items():
                metrics[k] = v
                if not math.isnan(v):
                    logged[k] = v
        # every rank holds the same merged metrics: sync_dist only tells Lightning they are global
        self.log_dict({f"{prefix}/{k}": v for k, v in logged.items()}, sync_dist=True)
        self.log_dict({f"{prefix}/{k}": metrics[k] for k in PROGRESS_METRICS}, prog_bar=True, sync_dist=True)
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs.clear()
        self._eval_ids.clear()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_outputs.clear()
        self._eval_ids.clear()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``ids`` and the embeddings of a batch (``video`` reads no text; zero rows where missing)."""
        out = self.model(batch)
        pred = {"ids": list(batch["ids"]), "video": out["video"], "text": out["text"],
                "video_mask": out["video_mask"], "text_mask": batch["text_mask"], "category": batch["category"]}
        if "multimodal" in out:
            pred["multimodal"] = out["multimodal"]
        if "hashtag_logits" in out:
            pred["hashtag_scores"] = out["hashtag_logits"].sigmoid()
        elif (scores := self.hashtag_scores(out)) is not None:
            pred["hashtag_scores"] = scores  # zero-shot cosines (no hashtag head)
        return pred
