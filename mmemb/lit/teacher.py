"""Training of the multimodal teacher (:class:`mmemb.models.teacher.TeacherModel`) as a LightningModule.

Loss = weighted sum of the terms (each logged as ``train/<term>``; a term whose weight is 0 is not
computed, a term whose head is off or whose data is absent is not computed either):

* ``clip_v2t``, ``clip_t2v``: video (visual + audio) vs text-tower InfoNCE with the negatives of every
  DDP rank (:func:`mmemb.losses.clip_infonce_global`);
* ``simclr``: NT-Xent between the video embeddings of two augmented views
  (:func:`mmemb.data.augment.two_views`; the first view also feeds every other term);
* ``hashtag_bce``, ``query_bce``: TF-IDF weighted multi-label BCE of the label heads, over the rows
  that carry at least one label;
* ``keyword``: cross-entropy of the masked keywords (highest-IDF words, :mod:`mmemb.models.keywords`),
  predicted from the fused representation of the masked text.

Randomness of the augmentations comes from a generator seeded by ``(augment_seed, global_step)``, so a
run resumed from a checkpoint draws the same views as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import pytorch_lightning as pl
import torch

from ..data.augment import AugmentConfig, two_views
from ..losses import clip_infonce_global, keyword_mask_loss, nt_xent, total_loss, weighted_multilabel_bce
from ..models.keywords import KeywordConfig, apply_mask, select_keywords, token_idf
from ..models.teacher import LabelInputs
from ..models.teacher_registry import create_teacher, get_teacher_config
from .labels import HashtagScoringMixin, label_inputs
from .mixins import CheckpointWeightsMixin, EvalLoopMixin
from .optim import configure_warmup_cosine

__all__ = ["TeacherModule", "DEFAULT_TEACHER_WEIGHTS", "label_inputs"]

log = logging.getLogger(__name__)

DEFAULT_TEACHER_WEIGHTS = {"clip_v2t": 0.5, "clip_t2v": 0.5, "simclr": 0.5, "hashtag_bce": 1.0, "query_bce": 1.0,
                           "keyword": 0.5}
MASK_ID = 4  # [MASK] in a TextTokenizer vocabulary (SPECIAL_TOKENS order); the data's tokenizer is used when known


class _IdTokenizer:
    """Fallback for keyword selection without the data's tokenizer: every id is a word of its own."""

    def id_to_token(self, idx: int) -> str:
        from ..data.text import SPECIAL_TOKENS

        return SPECIAL_TOKENS[idx] if 0 <= idx < len(SPECIAL_TOKENS) else f"w{idx}"


def _plain(x: Any) -> Any:
    """Dataclasses -> dicts (checkpoints then load with ``weights_only=True``)."""
    return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x


class TeacherModule(CheckpointWeightsMixin, EvalLoopMixin, HashtagScoringMixin, pl.LightningModule):
    """Multi-objective training of the teacher.

    Args:
        preset: teacher preset (``mmemb.models.teacher_registry.list_teachers()``).
        vocab_size, num_hashtags, num_queries: linked from the data module by ``train.py``.
        ngram_buckets: hash buckets of the n-gram bag channel, linked from the data module by
            ``train.py`` (``data.text.ngram_buckets``); 0 = no bag; None = the preset's (0).
        overrides: preset fields to change (``audio``/``fusion`` as dicts of nested fields).
        lr, weight_decay, betas: optimizer settings (no decay on 1-D parameters and embeddings).
        optimizer: ``"adamw"`` or ``"lamb"`` (:class:`mmemb.lamb.Lamb`, for very large batches).
        warmup_fraction, min_lr_ratio: warmup + cosine schedule (:func:`warmup_cosine`).
        loss_weights: weight per term (default :data:`DEFAULT_TEACHER_WEIGHTS`); 0 disables a term.
        simclr_temperature: NT-Xent temperature.
        augment: augmentation strength of the SimCLR views (None = ``AugmentConfig()``).
        augment_seed: seed of the augmentation generator (combined with the global step).
        keywords: keyword selection (None = ``KeywordConfig()``).
        label_neg_weight: weight of every negative label in the BCE terms.
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
        weights = dict(DEFAULT_TEACHER_WEIGHTS if loss_weights is None else loss_weights)
        unknown = set(weights) - set(DEFAULT_TEACHER_WEIGHTS)
        if unknown:
            raise KeyError(f"unknown loss terms {sorted(unknown)}; valid: {sorted(DEFAULT_TEACHER_WEIGHTS)}")
        self.augment_cfg = augment if isinstance(augment, AugmentConfig) else AugmentConfig(**(augment or {}))
        self.keyword_cfg = keywords if isinstance(keywords, KeywordConfig) else KeywordConfig(**(keywords or {}))
        self.save_hyperparameters(ignore=["overrides", "augment", "keywords"])
        self.hparams["overrides"] = dict(overrides or {})  # plain containers: weights_only checkpoints
        self.hparams["augment"] = _plain(self.augment_cfg)
        self.hparams["keywords"] = _plain(self.keyword_cfg)
        self.config = get_teacher_config(preset, vocab_size=vocab_size, num_hashtags=num_hashtags,
                                         num_queries=num_queries, **self.hparams["overrides"],
                                         **({} if ngram_buckets is None else {"ngram_buckets": ngram_buckets}))
        self.model = create_teacher(self.config)
        self.loss_weights = weights
        self._init_hashtag_names(num_hashtags, self.config.label_max_length)  # zero-shot scores, baseline
        self.register_buffer("keyword_idf", torch.ones(vocab_size))  # set from the train texts in setup
        self._tokenizer: Any = _IdTokenizer()
        self._mask_id = MASK_ID
        self._eval_outputs: list[dict[str, torch.Tensor]] = []

    # ------------------------------------------------------------------ data-dependent inputs

    def set_vocabularies(self, vocabs, train_records=None, text_max_length: int | None = None,
                         init_text: bool = False) -> None:
        """Label names, tag graph, tokenizer and keyword IDF from the data's :class:`Vocabularies`; with
        ``init_text`` and ``text_init="minilm"``, the text tower starts from MiniLM's weights."""
        cfg = self.config
        tok = vocabs.tokenizer
        if init_text and cfg.text_init == "minilm":
            self._init_text_from_minilm(tok)
        self._tokenizer = tok
        self._mask_id = getattr(tok, "mask_id", MASK_ID)
        hashtags = queries = None
        if cfg.has_hashtag_head and len(vocabs.hashtags) == cfg.num_hashtags:
            hashtags = label_inputs(tok, list(vocabs.hashtags.labels), cfg.label_max_length, vocabs.tag_graph)
        if cfg.has_query_head and len(vocabs.queries) == cfg.num_queries:
            queries = label_inputs(tok, list(vocabs.queries.labels), cfg.label_max_length)
        self.model.set_label_inputs(hashtags, queries)
        if self._num_hashtag_names and len(vocabs.hashtags) == self._num_hashtag_names:
            self.set_hashtag_names(tok, list(vocabs.hashtags.labels), list(vocabs.hashtags.counts))
        if train_records is not None and cfg.keyword_head:
            from ..data.vocab import record_texts

            length = text_max_length or cfg.text_max_length
            lists = [tok.encode_fields(record_texts(r), length)[0] for r in train_records]
            lists = [[i for i in ids if i >= 5] for ids in lists]  # no special tokens
            self.keyword_idf = token_idf(lists, cfg.vocab_size).to(self.keyword_idf.device)

    def _init_text_from_minilm(self, tokenizer) -> None:
        from ..models.text_init import init_text_from_minilm

        if self.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(f"text_init='minilm' maps the tokenizer's {tokenizer.vocab_size} tokens onto MiniLM's, "
                             f"but the model has vocab_size={self.config.vocab_size}")
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

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.model(batch)

    # ------------------------------------------------------------------ losses

    def _weight(self, term: str) -> float:
        return float(self.loss_weights.get(term, 0.0))

    def _losses(self, batch: dict[str, Any], train: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        cfg = self.config
        view1 = view2 = None
        use_simclr = train and self._weight("simclr") > 0
        if use_simclr:
            g = torch.Generator().manual_seed(int(self.hparams.augment_seed) * 1_000_003 + int(self.global_step))
            view1, view2 = two_views(batch, self.augment_cfg, g)
        main = view1 if view1 is not None else batch
        kw_args: dict[str, Any] = {}
        kw = None
        if cfg.keyword_head and self._weight("keyword") > 0:
            positions, target_ids, valid = select_keywords(batch["text_ids"], batch["text_attention"],
                                                           self.keyword_idf, self._tokenizer, self.keyword_cfg)
            kw = (target_ids, valid)
            kw_args = {"masked_text_ids": apply_mask(batch["text_ids"], positions, self._mask_id),
                       "keyword_positions": positions, "num_keywords": target_ids.shape[1]}
        out = self.model(main, **kw_args)
        terms: dict[str, torch.Tensor] = {}
        if self._weight("clip_v2t") > 0 or self._weight("clip_t2v") > 0:
            video_ok = (out["video"] != 0).any(dim=-1)  # the model zeroes rows without visual and audio
            terms.update(clip_infonce_global(out["video"], out["text"], out["logit_scale"], video_ok,
                                             batch.get("text_mask")))
        if use_simclr:
            z2 = self.model.encode_video(view2)
            ok = (out["video"] != 0).any(dim=-1) & (z2 != 0).any(dim=-1)
            terms.update(nt_xent(out["video"], z2, self.hparams.simclr_temperature, ok))
        for name in ("hashtag", "query"):
            key = f"{name}_logits"
            if key in out and self._weight(f"{name}_bce") > 0 and f"{name}_targets" in batch:
                targets = batch[f"{name}_targets"]
                terms.update(weighted_multilabel_bce(out[key], targets, batch[f"{name}_weights"],
                                                     self.hparams.label_neg_weight, name, targets.sum(-1) > 0))
        if kw is not None and "keyword_logits" in out:
            terms.update(keyword_mask_loss(out["keyword_logits"], *kw))
        return out, terms

    def _total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return total_loss(terms, {k: self._weight(k) for k in terms})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out, terms = self._losses(batch, train=True)
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

    # ------------------------------------------------------------------ evaluation

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        out, terms = self._losses(batch, train=False)
        if terms:
            self.log(f"{prefix}/loss", self._total(terms), batch_size=len(batch["ids"]))
        if "keyword_logits" in out:  # the losses' fusion read keyword-masked text: score the clean text
            out = self.model(batch)
        row = {
            "video": out["video"].detach().float().cpu(),
            "text": out["text"].detach().float().cpu(),
            "video_mask": (out["video"] != 0).any(dim=-1).cpu(),
            "text_mask": batch["text_mask"].cpu(),
            "category": batch["category"].cpu(),
        }
        row.update(self._hashtag_row(out, batch))  # head logits, else zero-shot cosines
        self._eval_outputs.append(row)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``ids`` and the embeddings of a batch (``video`` reads no text; zero rows where missing)."""
        out = self.model(batch)
        pred = {"ids": list(batch["ids"]), "video": out["video"], "text": out["text"],
                "multimodal": out["multimodal"], "video_mask": (out["video"] != 0).any(dim=-1),
                "text_mask": batch["text_mask"], "category": batch["category"]}
        if "hashtag_logits" in out:
            pred["hashtag_scores"] = out["hashtag_logits"].sigmoid()
        elif (scores := self.hashtag_scores(out)) is not None:
            pred["hashtag_scores"] = scores  # zero-shot cosines (hashtag head off)
        return pred
