"""The teacher: visual, audio and text towers, multi-scale fusion, channel attention and label heads.

Data flow (``B`` videos, ``T`` frames)::

    frames -> ViT (tokens of the blocks ``fusion_depths`` and of the last block)
           -> per-frame [CLS] of the last block -> TemporalAttentionPool -> visual channel
    mel    -> AudioEncoder tokens -> masked mean                           -> audio channel
    text   -> BERT tokens -> masked mean                                   -> text channel
    text_ngrams -> NgramBag (hashed char-3-grams, mean)                    -> ngram channel (ngram_buckets > 0)
    channel vectors -> Linear to embed_dim each (the bag is embed_dim wide already)

    video      = ChannelAttention(visual, audio)       never reads text (text->video retrieval is fair)
    text       = ChannelAttention(text, ngram)         the text tower alone (video-text retrieval);
                                                       the text channel alone without the bag
    multimodal = ChannelAttention(fused text, fused visual, fused audio)   with ``use_fusion="multiscale"``
               = ChannelAttention(visual, audio, text)                     with ``use_fusion="none"``

    hashtag / query logits = LabelHead(multimodal, label embeddings)
        label embeddings = TagGCN(text-tower embeddings of the label names, tag graph)   (use_gcn)
                         = Linear(text-tower embeddings of the label names)             (not use_gcn)
    keyword logits (B, K, V): the fused text tokens at the masked keyword positions (see
        :func:`mmemb.models.keywords.gather_slots`) + the multimodal vector -> MLP -> a decoder tied to
        BERT's word embeddings. *Choice*: predicting from the fused tokens at the masked positions (as
        BERT's MLM head) rather than from K learned slot queries: the slots are aligned with the
        targets by position, no extra attention layer is needed, and with fusion the masked tokens have
        attended to the video and audio, which is what the objective is meant to train.

The fusion (and so ``multimodal`` and every head) may read a *masked* copy of the text
(``fusion_text_ids``: the keywords replaced by ``[MASK]``), while the ``text`` channel always reads the
clean text; one ViT and one fusion pass serve every objective. The n-gram bag joins only the ``text``
embedding: the bag of the clean text would show the fusion (and so the keyword head) the masked
keywords.

Missing modalities (``video_mask``/``audio_mask``/``text_mask`` False) are masked everywhere: a
channel missing in a row gets channel weight 0, and an embedding with no available channel is a zero
row (never NaN).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .audio import AudioConfig, AudioEncoder
from .config import ModelConfig
from .fusion import ChannelAttentionFusion, FusionConfig, MultiScaleFusion, masked_mean
from .gcn import LabelHead, TagGCN, TagGCNConfig
from .keywords import gather_slots
from .ngram import NgramBag
from .temporal import TemporalAttentionPool
from .text import TextEncoder
from .visual import FrameEncoder, normalize_frames
from .vit_features import vit_multiscale_tokens

__all__ = ["TeacherConfig", "TeacherModel", "LabelInputs"]


@dataclass
class TeacherConfig:
    """Architecture of :class:`TeacherModel`.

    The widths that the nested configs take from the towers (``fusion.text_width``,
    ``fusion.visual_width``, ``fusion.audio_width``, ``fusion.num_layers``, ``fusion.modalities``) are
    *derived* and set by ``__post_init__``; pass the nested configs as dataclasses or dicts.
    """

    # --- visual tower: a timm ViT per frame (as ModelConfig)
    frame_size: int = 32  # frames are (S, S); must equal the data's decode.frame_size
    patch_size: int = 8  # ViT patch side; frame_size must be a multiple of it
    vision_width: int = 64  # ViT embed_dim
    vision_depth: int = 2  # ViT blocks
    vision_heads: int = 2  # attention heads; must divide vision_width
    vision_mlp_ratio: float = 4.0  # MLP hidden = ratio * width
    drop_path: float = 0.0  # stochastic depth rate of the ViT
    vision_pretrained_path: Optional[str] = None  # local timm ViT weights; never downloaded
    # ViT blocks (0-based, strictly increasing) whose tokens are fused, one per fusion layer
    fusion_depths: list[int] = field(default_factory=lambda: [0, 1])
    fusion_visual_tokens: Literal["cls", "all"] = "cls"  # tokens per depth: the T frame [CLS], or all T*N
    grad_checkpointing: bool = False  # recompute the ViT blocks in backward (memory for compute)

    # --- text tower: BERT from a config (as ModelConfig)
    vocab_size: int = 8000  # tokenizer size, linked from the data (``data.vocab_size``)
    text_width: int = 64  # hidden size
    text_depth: int = 2  # encoder layers
    text_heads: int = 2  # attention heads; must divide text_width
    text_max_length: int = 128  # position embeddings; >= the data's text max_length
    num_text_fields: int = 5  # token_type vocabulary (0 [CLS]/pad, 1 caption, 2 cover, 3 asr, 4 comments)
    text_dropout: float = 0.0  # hidden and attention dropout of BERT
    # "minilm": start the text tower from all-MiniLM-L6-v2 (mmemb.models.text_init) once the data's
    # tokenizer is known; needs text_width 384, text_depth 6, text_heads 12 and data.text.base_vocab: minilm
    text_init: Literal["random", "minilm"] = "random"
    # hashed char-n-gram bag channel (mmemb.models.ngram): its buckets, linked from the data
    # (``data.ngram_buckets``; the batches then carry ``text_ngrams``); 0 = no bag channel
    ngram_buckets: int = 0
    use_ngram_bag: bool = True  # the bag channel (also needs ngram_buckets > 0)

    # --- audio tower and fusion
    audio: AudioConfig = field(default_factory=lambda: AudioConfig(width=64, heads=2))
    fusion: FusionConfig = field(default_factory=lambda: FusionConfig(width=64, heads=2))

    # --- labels: tag GCN and heads
    num_hashtags: int = 0  # hashtag vocabulary size, linked from the data; 0 disables the hashtag head
    num_queries: int = 0  # query vocabulary size, linked from the data; 0 disables the query head
    label_max_length: int = 8  # tokens per label name ([CLS] name [SEP], 0-padded)
    gcn_hidden: int = 128  # hidden width of the TagGCN
    gcn_layers: int = 2  # GCNConv layers
    gcn_dropout: float = 0.0  # dropout between GCN layers
    label_init_prob: float = 0.01  # every label starts at this probability (bias = -log((1-p)/p))

    # --- shared space
    embed_dim: int = 64  # dimension of the L2-normalised embeddings
    init_temperature: float = 0.07  # CLIP logit scale starts at 1 / init_temperature
    max_logit_scale: float = 100.0  # the logit scale is clamped at this value
    learn_logit_scale: bool = True  # False freezes the temperature

    # --- component switches (ablations)
    use_audio: bool = True  # the audio tower and channel
    use_fusion: Literal["multiscale", "none"] = "multiscale"  # cross-attention fusion, or channel attention only
    use_gcn: bool = True  # label embeddings by the TagGCN over the tag graph (else a Linear of the names)
    hashtag_head: bool = True  # hashtag logits (also needs num_hashtags > 0)
    query_head: bool = True  # query logits (also needs num_queries > 0)
    keyword_head: bool = True  # masked keyword prediction logits

    def __post_init__(self) -> None:
        if isinstance(self.audio, Mapping):
            self.audio = AudioConfig(**self.audio)
        if isinstance(self.fusion, Mapping):
            self.fusion = FusionConfig(**self.fusion)
        self.fusion_depths = [int(d) for d in self.fusion_depths]
        positive = ("frame_size", "patch_size", "vision_width", "vision_depth", "vision_heads", "vocab_size",
                    "text_width", "text_depth", "text_heads", "text_max_length", "num_text_fields", "embed_dim",
                    "label_max_length", "gcn_hidden", "gcn_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TeacherConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_hashtags < 0 or self.num_queries < 0:
            raise ValueError("TeacherConfig.num_hashtags and num_queries must be >= 0")
        if self.ngram_buckets < 0:
            raise ValueError(f"TeacherConfig.ngram_buckets must be >= 0 (0 = no n-gram bag), got {self.ngram_buckets}")
        if self.frame_size % self.patch_size:
            raise ValueError(f"frame_size {self.frame_size} is not a multiple of patch_size {self.patch_size}")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"vision_width {self.vision_width} is not divisible by vision_heads {self.vision_heads}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}")
        if self.use_fusion not in ("multiscale", "none"):
            raise ValueError(f"use_fusion must be 'multiscale' or 'none', got {self.use_fusion!r}")
        if self.fusion_visual_tokens not in ("cls", "all"):
            raise ValueError(f"fusion_visual_tokens must be 'cls' or 'all', got {self.fusion_visual_tokens!r}")
        if not self.fusion_depths:
            raise ValueError("fusion_depths must name at least one ViT block")
        resolved = []
        for d in self.fusion_depths:
            if not -self.vision_depth <= d < self.vision_depth:
                raise ValueError(f"fusion_depths: block {d} is out of range for vision_depth={self.vision_depth}")
            resolved.append(d % self.vision_depth)
        if any(a >= b for a, b in zip(resolved, resolved[1:])):
            raise ValueError(f"fusion_depths must be strictly increasing blocks, got {self.fusion_depths}")
        if self.init_temperature <= 0 or 1 / self.init_temperature > self.max_logit_scale:
            raise ValueError(f"init_temperature must be > 0 and 1 / init_temperature <= max_logit_scale "
                             f"({self.max_logit_scale}), got {self.init_temperature}")
        if not (0 <= self.drop_path < 1 and 0 <= self.text_dropout < 1 and 0 <= self.gcn_dropout < 1):
            raise ValueError("drop_path, text_dropout and gcn_dropout must lie in [0, 1)")
        if not 0 < self.label_init_prob < 1:
            raise ValueError(f"label_init_prob must lie in (0, 1), got {self.label_init_prob}")
        # derived fields of the fusion
        modalities = ("text", "visual", "audio") if self.use_audio else ("text", "visual")
        self.fusion = dataclasses.replace(self.fusion, text_width=self.text_width, visual_width=self.vision_width,
                                          audio_width=self.audio.width, num_layers=len(self.fusion_depths),
                                          modalities=modalities)

    def tower_config(self) -> ModelConfig:
        """The :class:`ModelConfig` whose visual and text fields build the ViT and BERT towers."""
        return ModelConfig(
            frame_size=self.frame_size, patch_size=self.patch_size, vision_width=self.vision_width,
            vision_depth=self.vision_depth, vision_heads=self.vision_heads, vision_mlp_ratio=self.vision_mlp_ratio,
            vision_pool="token", drop_path=self.drop_path, vision_pretrained_path=self.vision_pretrained_path,
            vocab_size=self.vocab_size, text_width=self.text_width, text_depth=self.text_depth,
            text_heads=self.text_heads, text_max_length=self.text_max_length, num_text_fields=self.num_text_fields,
            text_pool="mean", text_dropout=self.text_dropout, embed_dim=self.embed_dim,
        )

    @property
    def has_ngram_bag(self) -> bool:
        return self.use_ngram_bag and self.ngram_buckets > 0

    @property
    def has_hashtag_head(self) -> bool:
        return self.hashtag_head and self.num_hashtags > 0

    @property
    def has_query_head(self) -> bool:
        return self.query_head and self.num_queries > 0


@dataclass
class LabelInputs:
    """Label names as token ids and the tag graph of one label vocabulary (hashtags or queries)."""

    name_ids: torch.Tensor  # (N, label_max_length) int64: [CLS] name [SEP], 0-padded
    name_attention: torch.Tensor  # (N, label_max_length) int64
    edge_index: Optional[torch.Tensor] = None  # (2, E) int64 (mmemb.models.gcn.graph_tensors); None = no edges
    edge_weight: Optional[torch.Tensor] = None  # (E,) float32


class _LabelBranch(nn.Module):
    """Label-name features -> label embeddings (TagGCN or Linear) + :class:`LabelHead`.

    The label names (token ids) and the graph are persistent buffers (they travel with checkpoints);
    their sizes may change on load (a different graph): ``_load_from_state_dict`` resizes them.
    """

    def __init__(self, cfg: TeacherConfig, num_labels: int):
        super().__init__()
        self.register_buffer("name_ids", torch.zeros(num_labels, cfg.label_max_length, dtype=torch.long))
        self.register_buffer("name_attention", torch.zeros(num_labels, cfg.label_max_length, dtype=torch.long))
        self.name_attention[:, 0] = 1  # placeholder: a lone [PAD] token until set_inputs
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))
        if cfg.use_gcn:
            self.embed = TagGCN(TagGCNConfig(in_dim=cfg.text_width, hidden=cfg.gcn_hidden, out_dim=cfg.embed_dim,
                                             num_layers=cfg.gcn_layers, dropout=cfg.gcn_dropout))
        else:
            self.embed = nn.Linear(cfg.text_width, cfg.embed_dim)
        p = cfg.label_init_prob
        self.head = LabelHead(num_labels, init_bias=-math.log((1 - p) / p))
        self.use_gcn = cfg.use_gcn

    def set_inputs(self, inputs: LabelInputs) -> None:
        n, length = self.name_ids.shape
        if tuple(inputs.name_ids.shape) != (n, length) or inputs.name_attention.shape != inputs.name_ids.shape:
            raise ValueError(f"label names must be ({n}, {length}) ids and attention, got "
                             f"{tuple(inputs.name_ids.shape)} and {tuple(inputs.name_attention.shape)}")
        dev = self.name_ids.device
        self.name_ids = inputs.name_ids.to(dev, torch.long)
        self.name_attention = inputs.name_attention.to(dev, torch.long)
        if inputs.edge_index is not None:
            self.edge_index = inputs.edge_index.to(dev, torch.long).reshape(2, -1)
            weight = inputs.edge_weight
            self.edge_weight = (torch.ones(self.edge_index.shape[1]) if weight is None else weight).to(dev).float()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("edge_index", "edge_weight"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def label_embeddings(self, text: TextEncoder) -> torch.Tensor:
        """``(N, embed_dim)``: the text tower's mean-pooled name embeddings through the GCN (or Linear)."""
        names = text(self.name_ids, self.name_attention)  # (N, text_width)
        if self.use_gcn:
            return self.embed(names, self.edge_index, self.edge_weight)  # (N, D)
        return self.embed(names)  # (N, D)

    def forward(self, x: torch.Tensor, text: TextEncoder) -> torch.Tensor:
        return self.head(x, self.label_embeddings(text))  # (B, N)


def _masked_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * mask.to(x.dtype).unsqueeze(-1)


class TeacherModel(nn.Module):
    """The multimodal teacher (see the module docstring).

    Args:
        cfg: the architecture.
        hashtags, queries: label names and tag graphs (:class:`LabelInputs`); may be set later with
            :meth:`set_label_inputs` (e.g. once the data's vocabularies are known) or loaded from a
            state dict; until then the names are placeholders.
    """

    def __init__(self, cfg: TeacherConfig, hashtags: LabelInputs | None = None, queries: LabelInputs | None = None):
        super().__init__()
        self.cfg = cfg
        towers = cfg.tower_config()
        self.visual = FrameEncoder(towers)
        self.text = TextEncoder(towers)
        self.temporal_pool = TemporalAttentionPool(cfg.vision_width, cfg.vision_heads)
        self.audio = AudioEncoder(cfg.audio) if cfg.use_audio else None
        d = cfg.embed_dim
        self.visual_proj = nn.Linear(cfg.vision_width, d)
        self.text_proj = nn.Linear(cfg.text_width, d)
        self.audio_proj = nn.Linear(cfg.audio.width, d) if cfg.use_audio else None
        self.video_channels = ("visual", "audio") if cfg.use_audio else ("visual",)
        self.video_attention = ChannelAttentionFusion(d, self.video_channels)
        mm_channels = ("text",) + self.video_channels
        if cfg.use_fusion == "multiscale":
            self.fusion = MultiScaleFusion(cfg.fusion)
            self.fused_proj = nn.ModuleDict({m: nn.Linear(cfg.fusion.width, d) for m in mm_channels})
            token_width = cfg.fusion.width
        else:
            self.fusion = None
            self.fused_proj = None
            token_width = cfg.text_width
        self.multimodal_attention = ChannelAttentionFusion(d, mm_channels)
        self.ngram_bag = NgramBag(cfg.ngram_buckets, d) if cfg.has_ngram_bag else None
        self.text_channels = ("text", "ngram") if cfg.has_ngram_bag else ("text",)
        self.text_attention = ChannelAttentionFusion(d, self.text_channels) if cfg.has_ngram_bag else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)),
                                        requires_grad=cfg.learn_logit_scale)
        self.hashtag_branch = _LabelBranch(cfg, cfg.num_hashtags) if cfg.has_hashtag_head else None
        self.query_branch = _LabelBranch(cfg, cfg.num_queries) if cfg.has_query_head else None
        if cfg.keyword_head:
            self.keyword_token = nn.Linear(token_width, cfg.text_width)
            self.keyword_context = nn.Linear(d, cfg.text_width)
            self.keyword_norm = nn.LayerNorm(cfg.text_width)
            self.keyword_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.set_label_inputs(hashtags, queries)

    # ------------------------------------------------------------------ labels

    def set_label_inputs(self, hashtags: LabelInputs | None = None, queries: LabelInputs | None = None) -> None:
        """Set the label names (token ids) and tag graphs; ``None`` leaves a vocabulary as it is."""
        for inputs, branch in ((hashtags, self.hashtag_branch), (queries, self.query_branch)):
            if inputs is not None and branch is not None:
                branch.set_inputs(inputs)

    # ------------------------------------------------------------------ towers

    def _visual_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Visual channel ``(B, Wv)``, fusion tokens per depth ``[(B, Nv, Wv)]`` and their mask ``(B, Nv)``."""
        cfg = self.cfg
        frames = batch["frames"]
        b, t = frames.shape[:2]
        if tuple(frames.shape[-2:]) != (cfg.frame_size, cfg.frame_size):
            raise ValueError(f"frames are {tuple(frames.shape[-2:])} but the teacher's frame_size is "
                             f"{cfg.frame_size}: make the data's decode.frame_size and frame_size equal")
        x = normalize_frames(frames).reshape(b * t, *frames.shape[2:])  # (B*T, 3, S, S)
        fuse = cfg.use_fusion == "multiscale"
        last = cfg.vision_depth - 1
        depths = sorted({d % cfg.vision_depth for d in cfg.fusion_depths} | {last}) if fuse else [last]
        outs = vit_multiscale_tokens(self.visual.vit, x, depths, norm="all",
                                     grad_checkpointing=cfg.grad_checkpointing)  # [(B*T, N, Wv)]
        by_depth = dict(zip(depths, outs))
        video_mask = batch.get("video_mask")
        video_mask = torch.ones(b, dtype=torch.bool, device=frames.device) if video_mask is None else video_mask.bool()
        frame_mask = video_mask.view(b, 1).expand(b, t)  # (B, T)
        if batch.get("frame_mask") is not None:
            frame_mask = frame_mask & batch["frame_mask"].bool()
        cls = by_depth[last][:, 0].reshape(b, t, -1)  # (B, T, Wv)
        channel = self.temporal_pool(cls, frame_mask)  # (B, Wv); zeros without frames
        tokens: list[torch.Tensor] = []
        token_mask = frame_mask
        if fuse:
            for d in cfg.fusion_depths:
                out = by_depth[d % cfg.vision_depth]  # (B*T, N, Wv)
                if cfg.fusion_visual_tokens == "cls":
                    tokens.append(out[:, 0].reshape(b, t, -1))  # (B, T, Wv)
                else:
                    tokens.append(out.reshape(b, t * out.shape[1], -1))  # (B, T*N, Wv)
            if cfg.fusion_visual_tokens == "all":
                token_mask = frame_mask.repeat_interleave(outs[0].shape[1], dim=1)  # (B, T*N)
        return channel, tokens, token_mask

    def _text_tokens(self, batch: Mapping[str, Any],
                     ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT tokens ``(B, L, Wt)`` and the token mask ``(B, L)`` (attention and ``text_mask``)."""
        ids = batch["text_ids"] if ids is None else ids
        tokens = self.text.forward_features(ids, batch["text_attention"], batch.get("text_field_ids"))
        mask = batch["text_attention"].bool()
        if batch.get("text_mask") is not None:
            mask = mask & batch["text_mask"].bool().unsqueeze(1)
        return tokens, mask

    def _text_embedding(self, batch: Mapping[str, Any], tokens: torch.Tensor, token_mask: torch.Tensor,
                        text_ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text embedding ``(B, D)`` (not normalised) and its channel weights ``(B, C_t)``: the
        transformer channel, with the n-gram bag channel through channel attention when there is one.
        A batch without ``text_ngrams`` leaves the bag channel unavailable."""
        vec = _masked_rows(self.text_proj(masked_mean(tokens, token_mask)), text_ok)  # (B, D)
        if self.ngram_bag is None:
            return vec, text_ok.to(vec.dtype).unsqueeze(1)  # (B, 1)
        ngrams = batch.get("text_ngrams")
        if ngrams is None:
            ngram_vec, ngram_ok = torch.zeros_like(vec), torch.zeros_like(text_ok)
        else:
            ngram_vec, ngram_ok = self.ngram_bag(ngrams)  # (B, D), (B,)
            ngram_ok = ngram_ok & text_ok
        return self.text_attention({"text": vec, "ngram": _masked_rows(ngram_vec, ngram_ok)},
                                   {"text": text_ok, "ngram": ngram_ok})

    # ------------------------------------------------------------------ features

    def forward_features(self, batch: Mapping[str, Any], fusion_text_ids: torch.Tensor | None = None,
                         need_text: bool = True) -> dict[str, Any]:
        """Per-channel vectors, fused embeddings (not normalised) and channel weights.

        Returns a dict with ``visual``, ``audio``, ``text`` (channel vectors ``(B, D)``, zeros where
        missing; ``audio`` absent without the audio tower), ``video`` ``(B, D)`` (visual+audio only),
        ``video_weights`` ``(B, C_v)``, ``available`` (name -> ``(B,)`` bool), and when ``need_text``:
        ``text`` is the text embedding (the transformer channel, with the n-gram bag by channel attention)
        and ``text_weights`` ``(B, C_t)`` its channel weights; ``multimodal`` ``(B, D)``,
        ``multimodal_weights`` ``(B, C_m)``, ``text_tokens`` ``(B, L, W)`` (fused when ``use_fusion="multiscale"``, read from ``fusion_text_ids`` when given, the clean
        text otherwise) and ``text_token_mask`` ``(B, L)``.
        """
        cfg = self.cfg
        b = batch["frames"].shape[0]
        dev = batch["frames"].device
        ones = torch.ones(b, dtype=torch.bool, device=dev)
        available = {
            "visual": batch["video_mask"].bool() if batch.get("video_mask") is not None else ones,
            "text": batch["text_mask"].bool() if batch.get("text_mask") is not None else ones,
        }
        visual_vec, visual_tokens, visual_token_mask = self._visual_tokens(batch)
        out: dict[str, Any] = {"visual": _masked_rows(self.visual_proj(visual_vec), available["visual"])}
        audio_tokens = audio_token_mask = None
        if self.audio is not None:
            audio_mask = batch["audio_mask"].bool() if batch.get("audio_mask") is not None else ones
            audio_tokens, audio_token_mask = self.audio.forward_tokens(batch["mel"], batch.get("mel_valid"),
                                                                       audio_mask)  # (B, Na, Wa), (B, Na)
            available["audio"] = audio_token_mask.any(dim=-1)
            out["audio"] = _masked_rows(self.audio_proj(masked_mean(audio_tokens, audio_token_mask)),
                                        available["audio"])
        out["video"], out["video_weights"] = self.video_attention(
            {c: out[c] for c in self.video_channels}, {c: available[c] for c in self.video_channels})
        out["available"] = available
        if not need_text:
            return out

        clean_tokens, text_token_mask = self._text_tokens(batch)  # (B, L, Wt)
        out["text"], out["text_weights"] = self._text_embedding(batch, clean_tokens, text_token_mask,
                                                                available["text"])  # (B, D), (B, C_t)
        if fusion_text_ids is not None:
            fusion_tokens, _ = self._text_tokens(batch, fusion_text_ids)  # (B, L, Wt)
        else:
            fusion_tokens = clean_tokens
        mm_channels = self.multimodal_attention.channels
        if self.fusion is not None:
            fused = self.fusion(fusion_tokens, text_token_mask, visual_tokens, visual_token_mask,
                                audio_tokens, audio_token_mask)
            vectors = {m: _masked_rows(self.fused_proj[m](fused.pooled[m]), available[m]) for m in mm_channels}
            out["text_tokens"] = fused.tokens["text"]  # (B, L, Wf)
        else:  # the text channel of the (possibly keyword-masked) fusion text, without the bag
            fusion_text = _masked_rows(self.text_proj(masked_mean(fusion_tokens, text_token_mask)), available["text"])
            vectors = {**{m: out[m] for m in self.video_channels}, "text": fusion_text}
            out["text_tokens"] = fusion_tokens  # (B, L, Wt)
        out["text_token_mask"] = text_token_mask
        out["multimodal"], out["multimodal_weights"] = self.multimodal_attention(
            vectors, {m: available[m] for m in mm_channels})
        return out

    # ------------------------------------------------------------------ embeddings

    def _video_available(self, available: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([available[c] for c in self.video_channels]).any(dim=0)  # (B,)

    def encode_video(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """L2-normalised video embeddings ``(B, D)`` from the visual and audio channels only (no text);
        zero rows where neither is available."""
        f = self.forward_features(batch, need_text=False)
        return _masked_rows(F.normalize(f["video"], dim=-1), self._video_available(f["available"]))

    def encode_text(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """L2-normalised text-tower embeddings ``(B, D)``; zero rows where ``text_mask`` is False."""
        tokens, mask = self._text_tokens(batch)
        text_ok = batch["text_mask"].bool() if batch.get("text_mask") is not None else mask.any(dim=1)
        x, _ = self._text_embedding(batch, tokens, mask, text_ok)
        return _masked_rows(F.normalize(x, dim=-1), text_ok)

    def get_logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def keyword_logits(self, text_tokens: torch.Tensor, positions: torch.Tensor, k: int,
                       context: torch.Tensor) -> torch.Tensor:
        """``(B, K, vocab_size)`` scores at the masked ``positions`` ``(B, L)`` (slot order as
        :func:`mmemb.models.keywords.select_keywords`' targets); ``context`` ``(B, D)``."""
        if not self.cfg.keyword_head:
            raise RuntimeError("the keyword head is off (TeacherConfig.keyword_head=False)")
        slots = gather_slots(text_tokens, positions, k)  # (B, K, W)
        h = self.keyword_token(slots) + self.keyword_context(context).unsqueeze(1)  # (B, K, Wt)
        h = self.keyword_norm(F.gelu(h))
        words = self.text.bert.embeddings.word_embeddings.weight  # (V, Wt): tied decoder
        return h @ words.T + self.keyword_bias  # (B, K, V)

    def forward(self, batch: Mapping[str, Any], masked_text_ids: torch.Tensor | None = None,
                keyword_positions: torch.Tensor | None = None, num_keywords: int | None = None) -> dict[str, Any]:
        """Every output: ``video``, ``text``, ``multimodal`` (L2-normalised, zero rows where nothing is
        available), ``logit_scale``, ``video_weights``, ``text_weights``, ``multimodal_weights``, and when the heads are
        on ``hashtag_logits`` ``(B, H)``, ``query_logits`` ``(B, Q)``, ``keyword_logits`` ``(B, K, V)``
        (the latter only given ``masked_text_ids``, ``keyword_positions`` and ``num_keywords``: the
        fusion then reads the masked text)."""
        f = self.forward_features(batch, fusion_text_ids=masked_text_ids)
        avail = f["available"]
        video_ok = self._video_available(avail)
        mm_ok = video_ok | avail["text"]
        out = {
            "video": _masked_rows(F.normalize(f["video"], dim=-1), video_ok),
            "text": _masked_rows(F.normalize(f["text"], dim=-1), avail["text"]),
            "multimodal": _masked_rows(F.normalize(f["multimodal"], dim=-1), mm_ok),
            "logit_scale": self.get_logit_scale(),
            "video_weights": f["video_weights"],
            "text_weights": f["text_weights"],
            "multimodal_weights": f["multimodal_weights"],
            "multimodal_mask": mm_ok,
        }
        if self.hashtag_branch is not None:
            out["hashtag_logits"] = self.hashtag_branch(f["multimodal"], self.text)
        if self.query_branch is not None:
            out["query_logits"] = self.query_branch(f["multimodal"], self.text)
        if self.cfg.keyword_head and keyword_positions is not None and num_keywords is not None:
            out["keyword_logits"] = self.keyword_logits(f["text_tokens"], keyword_positions, num_keywords,
                                                        f["multimodal"])
        return out

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay besides 1-D ones."""
        return {f"visual.vit.{n}" for n in self.visual.vit.no_weight_decay()} | {"audio.pos_embed"}
