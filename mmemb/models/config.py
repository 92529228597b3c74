"""Typed configuration of the embedding model, one dataclass per part.

A :class:`ModelConfig` fully describes a :class:`mmemb.models.model.EmbeddingModel`; it is composed of

* :class:`VisionConfig`: the per-frame ViT, the pooling of frames over time, the ViT blocks the
  fusion reads;
* :class:`TextEncoderConfig`: the BERT text tower and its hashed char-n-gram bag channel;
* :class:`~mmemb.models.audio.AudioConfig`: the log-mel audio tower;
* :class:`~mmemb.models.fusion.FusionConfig`: the multi-scale cross-attention fusion (its input
  widths, layer count and modalities are *derived* from the other parts by ``__post_init__``);
* :class:`HeadsConfig`: the label heads (tag GCN, hashtag and query heads, label names);
* the joint embedding space and the component switches (fields of :class:`ModelConfig` itself).

Named presets live in :mod:`mmemb.models.registry`. Every check runs once, in the ``__post_init__`` of
the part it concerns; nested parts may be given as dicts (YAML), which are turned into their dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from .audio import AudioConfig
from .fusion import FusionConfig
from .ngram import NGRAM_POOLINGS

__all__ = ["VisionConfig", "TextEncoderConfig", "HeadsConfig", "ModelConfig", "AudioConfig", "FusionConfig",
           "PARTS", "FLAT_FIELDS", "apply_overrides"]


def _check_positive(owner: Any, *names: str) -> None:
    for name in names:
        if getattr(owner, name) < 1:
            raise ValueError(f"{type(owner).__name__}.{name} must be >= 1, got {getattr(owner, name)}")


def _check_rate(owner: Any, *names: str) -> None:
    for name in names:
        if not 0 <= getattr(owner, name) < 1:
            raise ValueError(f"{type(owner).__name__}.{name} must lie in [0, 1), got {getattr(owner, name)}")


def _check_choice(owner: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(owner, name) not in choices:
        raise ValueError(f"{type(owner).__name__}.{name} must be one of {choices}, got {getattr(owner, name)!r}")


@dataclass
class VisionConfig:
    """The visual tower: a timm ViT applied to every frame, frame features pooled over time."""

    frame_size: int = 32  # frames are (S, S); must equal the data's decode.frame_size
    patch_size: int = 8  # ViT patch side; frame_size must be a multiple of it
    width: int = 64  # ViT embed_dim
    depth: int = 2  # ViT blocks
    heads: int = 2  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden = ratio * width
    drop_path: float = 0.0  # stochastic depth rate of the ViT
    pretrained_path: Optional[str] = None  # local timm ViT weights (.safetensors / .pth); never downloaded
    # pooling of the per-frame [CLS] features over the valid frames: a learned query attending over them
    # (mmemb.models.temporal), or their mean (the first two-tower model)
    temporal_pool: Literal["attention", "mean"] = "attention"
    # ViT blocks (0-based, or negative from the last, strictly increasing) whose tokens the fusion reads, one
    # per fusion layer (the first shallowest)
    fusion_depths: list[int] = field(default_factory=lambda: [-1])
    fusion_tokens: Literal["cls", "all"] = "cls"  # tokens per fused block: the T frame [CLS], or all T*N
    grad_checkpointing: bool = False  # recompute the ViT blocks in backward (memory for compute)

    def __post_init__(self) -> None:
        self.fusion_depths = [int(d) for d in self.fusion_depths]
        _check_positive(self, "frame_size", "patch_size", "width", "depth", "heads")
        if self.frame_size % self.patch_size:
            raise ValueError(f"VisionConfig.frame_size {self.frame_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"VisionConfig.width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"VisionConfig.mlp_ratio must be > 0, got {self.mlp_ratio}")
        _check_rate(self, "drop_path")
        _check_choice(self, "temporal_pool", ("attention", "mean"))
        _check_choice(self, "fusion_tokens", ("cls", "all"))
        if not self.fusion_depths:
            raise ValueError("VisionConfig.fusion_depths must name at least one ViT block")
        blocks = []
        for d in self.fusion_depths:
            if not -self.depth <= d < self.depth:
                raise ValueError(f"VisionConfig.fusion_depths: block {d} is out of range for depth={self.depth}")
            blocks.append(d % self.depth)
        if any(a >= b for a, b in zip(blocks, blocks[1:])):
            raise ValueError(f"VisionConfig.fusion_depths must be strictly increasing blocks, got {self.fusion_depths}")

    @property
    def fusion_blocks(self) -> list[int]:
        """``fusion_depths`` as 0-based block indices."""
        return [d % self.depth for d in self.fusion_depths]


@dataclass
class TextEncoderConfig:
    """The text tower: a BERT encoder built from a config (random init unless ``init="minilm"``),
    field ids as token types, mean-pooled; plus the hashed char-n-gram bag channel."""

    vocab_size: int = 8000  # tokenizer size, linked from the data (``data.vocab_size``)
    width: int = 64  # hidden size
    depth: int = 2  # encoder layers
    heads: int = 2  # attention heads; must divide width
    max_length: int = 128  # position embeddings; must be >= the data's text max_length
    num_fields: int = 5  # token_type vocabulary: 0 [CLS]/pad, 1 caption, 2 cover, 3 asr, 4 comments
    dropout: float = 0.0  # hidden and attention dropout of the encoder
    # feed-forward width of each layer as a multiple of width (BERT's intermediate size = ffn_ratio * width); 4 is
    # BERT's and MiniLM's. Most of a short query's time in the exported text graph is these products
    ffn_ratio: int = 4
    # "minilm": start the tower from all-MiniLM-L6-v2 (mmemb.models.text_init) once the data's tokenizer is
    # known; needs width 384, depth 6, heads 12 and data.text.base_vocab: minilm
    init: Literal["random", "minilm"] = "random"
    # hash buckets of the char-n-gram bag channel (mmemb.models.ngram), linked from the data
    # (``data.ngram_buckets``; the batches then carry ``text_ngrams``); 0 = no bag channel
    ngram_buckets: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, "vocab_size", "width", "depth", "heads", "max_length", "num_fields", "ffn_ratio")
        if self.width % self.heads:
            raise ValueError(f"TextEncoderConfig.width {self.width} is not divisible by heads {self.heads}")
        _check_rate(self, "dropout")
        _check_choice(self, "init", ("random", "minilm"))
        if self.ngram_buckets < 0:
            raise ValueError(f"TextEncoderConfig.ngram_buckets must be >= 0 (0 = no n-gram bag), got "
                             f"{self.ngram_buckets}")


@dataclass
class HeadsConfig:
    """The label heads: hashtag and query logits scored against label embeddings computed from the label
    names (by the text tower, then a TagGCN over the tag graph or a Linear)."""

    num_hashtags: int = 0  # hashtag vocabulary size, linked from the data; 0 = no hashtag head
    num_queries: int = 0  # query vocabulary size, linked from the data; 0 = no query head
    label_max_length: int = 8  # tokens per label name ([CLS] name [SEP], 0-padded); also for zero-shot scoring
    gcn_hidden: int = 128  # hidden width of the TagGCN
    gcn_layers: int = 2  # GCNConv layers
    gcn_dropout: float = 0.0  # dropout between GCN layers
    label_init_prob: float = 0.01  # every label starts at this probability (bias = -log((1-p)/p))
    # training steps between two text-tower encodings of the label names; in between the label heads
    # reuse a detached copy (no gradient into the text tower through the names on those steps). 1 =
    # every step; evaluation always encodes them afresh
    label_refresh_steps: int = 1

    def __post_init__(self) -> None:
        _check_positive(self, "label_max_length", "gcn_hidden", "gcn_layers", "label_refresh_steps")
        if self.num_hashtags < 0 or self.num_queries < 0:
            raise ValueError("HeadsConfig.num_hashtags and num_queries must be >= 0")
        _check_rate(self, "gcn_dropout")
        if not 0 < self.label_init_prob < 1:
            raise ValueError(f"HeadsConfig.label_init_prob must lie in (0, 1), got {self.label_init_prob}")


@dataclass
class ModelConfig:
    """Architecture of :class:`~mmemb.models.model.EmbeddingModel`: the parts, the joint space and the
    component switches (the ablations turn these off one at a time)."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioConfig = field(default_factory=lambda: AudioConfig(width=64, heads=2))
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(width=64, heads=2))
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    # --- joint embedding space
    embed_dim: int = 64  # dimension of the L2-normalised embeddings
    init_temperature: float = 0.07  # CLIP logit scale starts at 1 / init_temperature
    max_logit_scale: float = 100.0  # the logit scale is clamped at this value
    learn_logit_scale: bool = True  # False freezes the temperature

    # --- component switches
    use_audio: bool = True  # the audio tower and channel
    use_fusion: Literal["multiscale", "none"] = "multiscale"  # cross-attention fusion, or channel attention only
    use_ngram_bag: bool = True  # the text tower's n-gram bag channel (also needs text.ngram_buckets > 0)
    heads_read_ngram: bool = False  # the bag also joins the multimodal vector the label heads read (clean pass
    #                                 only: the keyword pass never sees it, it would show the masked words)
    # each label head adds a wide part to its logits: the mean, over the text's hashed char n-grams, of a
    # learned vector of label scores per bucket (a linear model of the n-grams, as TF-IDF + logistic
    # regression is of the words, trained jointly with the deep head; zero at the start; reads the clean
    # text's n-grams only; without n-gram buckets (text.ngram_buckets 0) there is none)
    wide_ngram_heads: bool = False
    # the wide parts' learning rate as a multiple of the optimizer's: a bucket's row moves only in the steps
    # whose batch has its n-gram, by about the learning rate per step (Adam), and a linear model's weights
    # must reach the size of logits
    wide_lr_scale: float = 100.0  # chosen on validation (README, "The KuaiRec text model")
    # the wide parts' Adam second-moment decay (their own parameter group; None = the optimizer's betas[1]):
    # a rare n-gram's row moves about lr (1 - beta1) / sqrt((1 - beta2) / (1 - beta2^t)) in a step t that
    # sees it, so after a few hundred steps the optimizer's 0.98 moves it 2-3 x less than 0.999 (4.5 x in
    # the limit)
    wide_adam_beta2: float | None = None
    # how a wide part pools its n-grams' label scores: the mean over the occurrences, or l2_sublinear (each
    # distinct n-gram weighs 1 + ln(count), the row scaled to unit L2 norm: TF-IDF + logistic regression's
    # sublinear-tf features without the IDF)
    wide_pooling: Literal["mean", "l2_sublinear"] = "mean"
    # what trains a wide part: "head", the head's own term, on deep + wide logits; or "bce", a term of its
    # own (<name>_wide_bce: one-vs-rest BCE of the wide scores alone, as logistic regression's), the head's
    # term then seeing the wide scores without their gradient (the deep head learns what the wide part misses)
    wide_loss: Literal["head", "bce"] = "head"
    # a per-label intercept in each wide part (a linear model's bias: the label's prior, which a one-vs-rest
    # BCE needs and the n-grams alone can only learn through the commonest of them)
    wide_bias: bool = False
    use_gcn: bool = True  # label embeddings by the TagGCN over the tag graph (else a Linear of the names)
    hashtag_head: bool = True  # hashtag logits (also needs heads.num_hashtags > 0)
    query_head: bool = True  # query logits (also needs heads.num_queries > 0)
    keyword_head: bool = True  # masked keyword prediction logits

    def __post_init__(self) -> None:
        for name, cls in PARTS.items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise TypeError(f"ModelConfig.{name} must be a {cls.__name__} or a dict, got {type(value).__name__}")
        _check_positive(self, "embed_dim")
        _check_choice(self, "wide_pooling", NGRAM_POOLINGS)
        _check_choice(self, "wide_loss", ("head", "bce"))
        if not self.wide_lr_scale > 0:
            raise ValueError(f"ModelConfig.wide_lr_scale must be > 0, got {self.wide_lr_scale}")
        if self.wide_adam_beta2 is not None and not 0 < self.wide_adam_beta2 < 1:
            raise ValueError(f"ModelConfig.wide_adam_beta2 must be in (0, 1) or None, got {self.wide_adam_beta2}")
        if self.init_temperature <= 0 or 1 / self.init_temperature > self.max_logit_scale:
            raise ValueError(f"ModelConfig.init_temperature must be > 0 and 1 / init_temperature <= max_logit_scale "
                             f"({self.max_logit_scale}), got {self.init_temperature}")
        _check_choice(self, "use_fusion", ("multiscale", "none"))
        if self.use_fusion == "multiscale" and not self.has_multimodal:
            raise ValueError("ModelConfig.use_fusion='multiscale' fuses for the heads, but hashtag_head, query_head "
                             "and keyword_head are all off: set use_fusion='none'")
        # derived fields of the fusion
        modalities = ("text", "visual", "audio") if self.use_audio else ("text", "visual")
        self.fusion = dataclasses.replace(self.fusion, text_width=self.text.width, visual_width=self.vision.width,
                                          audio_width=self.audio.width, num_layers=len(self.vision.fusion_depths),
                                          modalities=modalities)

    @property
    def has_multimodal(self) -> bool:
        """Whether the model computes the multimodal embedding (what the heads read)."""
        return self.hashtag_head or self.query_head or self.keyword_head

    @property
    def has_ngram_bag(self) -> bool:
        return self.use_ngram_bag and self.text.ngram_buckets > 0

    @property
    def multimodal_reads_ngram(self) -> bool:
        """Whether the multimodal vector has the n-gram bag as a channel (``heads_read_ngram`` with a bag)."""
        return self.heads_read_ngram and self.has_ngram_bag and self.has_multimodal

    def has_wide_head(self, kind: Literal["hashtags", "queries"]) -> bool:
        """Whether the ``kind`` label head has the wide n-gram part (``wide_ngram_heads``, the head on, n-gram
        buckets)."""
        head = self.has_hashtag_head if kind == "hashtags" else self.has_query_head
        return self.wide_ngram_heads and head and self.text.ngram_buckets > 0

    @property
    def has_hashtag_head(self) -> bool:
        return self.hashtag_head and self.heads.num_hashtags > 0

    @property
    def has_query_head(self) -> bool:
        return self.query_head and self.heads.num_queries > 0


# The nested parts of ModelConfig and their dataclasses.
PARTS: dict[str, type] = {"vision": VisionConfig, "text": TextEncoderConfig, "audio": AudioConfig,
                          "fusion": FusionConfig, "heads": HeadsConfig}

# The flat field names of the configs before the parts (``vision_depth`` ...) -> (part, field). Read by
# the checkpoint upgrade (:mod:`mmemb.models.checkpoint`) and named in the error for an unknown override.
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{f"vision_{k}": ("vision", k) for k in ("width", "depth", "heads", "mlp_ratio", "pretrained_path")},
    **{k: ("vision", k) for k in ("frame_size", "patch_size", "drop_path", "temporal_pool", "fusion_depths",
                                  "grad_checkpointing")},
    "fusion_visual_tokens": ("vision", "fusion_tokens"),
    **{f"text_{k}": ("text", k) for k in ("width", "depth", "heads", "max_length", "dropout", "init")},
    "vocab_size": ("text", "vocab_size"), "num_text_fields": ("text", "num_fields"),
    "ngram_buckets": ("text", "ngram_buckets"),
    **{k: ("heads", k) for k in ("num_hashtags", "num_queries", "label_max_length", "gcn_hidden", "gcn_layers",
                                 "gcn_dropout", "label_init_prob")},
}


def apply_overrides(cfg: ModelConfig, overrides: Mapping[str, Any]) -> ModelConfig:
    """``cfg`` with ``overrides`` applied: top-level fields by name, a part by a dict of its fields (merged
    into the preset's part, e.g. ``{"audio": {"depth": 1}}``) or a whole dataclass. The result is checked
    by the ``__post_init__`` of every part."""
    top = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - top)
    if unknown:
        hints = [f"{k} -> {FLAT_FIELDS[k][0]}: {{{FLAT_FIELDS[k][1]}: ...}}" for k in unknown if k in FLAT_FIELDS]
        raise TypeError(f"unknown ModelConfig fields {unknown}" + (f" (the parts moved: {'; '.join(hints)})"
                                                                   if hints else "")
                        + f"; valid: {sorted(top)}")
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in PARTS and isinstance(value, Mapping):
            part = getattr(cfg, key)
            bad = sorted(set(value) - {f.name for f in dataclasses.fields(part)})
            if bad:
                raise TypeError(f"unknown {type(part).__name__} fields {bad} in ModelConfig.{key}; valid: "
                                f"{[f.name for f in dataclasses.fields(part)]}")
            value = dataclasses.replace(part, **value)
        changes[key] = value
    return dataclasses.replace(cfg, **changes)
