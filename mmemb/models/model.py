"""The embedding model: visual, audio and text towers, multi-scale fusion, channel attention and label heads.

Every preset of :mod:`mmemb.models.registry` is this model: the full one (``teacher_*``) and the
first two-tower model (``two_tower_*``: the ViT and BERT towers alone, frames mean-pooled over time).

Data flow (``B`` videos, ``T`` frames)::

    frames -> ViT (tokens of the blocks ``vision.fusion_depths`` and of the last block)
           -> per-frame [CLS] of the last block -> TemporalAttentionPool (or mean) -> visual channel
    mel    -> AudioEncoder tokens -> masked mean                           -> audio channel
    text   -> BERT tokens -> masked mean                                   -> text channel
    text_ngrams -> NgramBag (hashed char-3-grams, mean)                    -> ngram channel (text.ngram_buckets > 0)
    channel vectors -> Linear to embed_dim each (the bag is embed_dim wide already)

    video      = ChannelAttention(visual, audio)       never reads text (text->video retrieval is fair);
                                                       the visual channel alone without audio
    text       = ChannelAttention(text, ngram)         the text tower alone (video-text retrieval);
                                                       the text channel alone without the bag
    multimodal = ChannelAttention(fused text, fused visual, fused audio)   with ``use_fusion="multiscale"``
               = ChannelAttention(visual, audio, text)                     with ``use_fusion="none"``
                 (only when a head reads it: hashtag, query or keyword head on; with
                 ``heads_read_ngram`` the bag is one more channel, in the clean pass only)

    hashtag / query logits = LabelHead(multimodal, label embeddings)
        label embeddings = TagGCN(text-tower embeddings of the label names, tag graph)   (use_gcn)
                         = Linear(text-tower embeddings of the label names)             (not use_gcn)
        + pooled over the clean text's n-grams, a label-score vector per bucket          (wide_ngram_heads)
          (mean, or sublinear tf at unit L2 norm: wide_pooling; also returned alone as
          ``<name>_wide_logits`` for a term of its own: wide_loss="bce")
    keyword logits (B, K, V): from a second pass over the keyword-masked text (below), the fused text
        tokens at the masked keyword positions (see :func:`mmemb.models.keywords.gather_slots`) + that
        pass's multimodal vector -> MLP -> a decoder tied to BERT's word embeddings. *Choice*: predicting from the fused tokens at the masked positions (as
        BERT's MLM head) rather than from K learned slot queries: the slots are aligned with the
        targets by position, no extra attention layer is needed, and with fusion the masked tokens have
        attended to the video and audio, which is what the objective is meant to train.

Clean and masked passes: ``multimodal``, the hashtag and query heads and every embedding read the
*clean* text, in training as in evaluation (so the heads learn from the words they are scored with).
Given a keyword-masked copy of the text (``masked_text_ids``: the keywords replaced by ``[MASK]``), a
second text + fusion pass over it feeds the keyword head alone (its fused tokens at the masked
positions and its own multimodal vector as context, so no path shows the head the masked words). The
ViT and audio tower outputs are computed once and serve both fusion passes; the extra cost is one BERT
and one fusion pass. The n-gram bag joins the ``text`` embedding, and with ``heads_read_ngram`` the clean
pass's multimodal vector (what the label heads read); never the keyword pass: the bag of the clean text
would show it the masked keywords.

Label-name cache: the label embeddings need the text tower's encoding of all N label names. With
``heads.label_refresh_steps = k > 1`` the training forward recomputes them (with gradients into the
text tower) only when the caller asks (``refresh_labels=True``, every k-th step) and reuses a detached
copy in between (the GCN/Linear on top still trains every step). Evaluation mode always encodes them
fresh (no cache is read or written), so scores never depend on when the cache was filled.

Missing modalities (``video_mask``/``audio_mask``/``text_mask`` False) are masked everywhere: a
channel missing in a row gets channel weight 0, and an embedding with no available channel is a zero
row (never NaN). An embedding of a single channel is that channel (weight 1 where available): channel
attention over one channel would learn nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .audio import AudioEncoder
from .config import ModelConfig
from .fusion import ChannelAttentionFusion, MultiScaleFusion, masked_mean
from .gcn import LabelHead, TagGCN, TagGCNConfig
from .keywords import gather_slots
from .ngram import NgramBag
from .temporal import TemporalAttentionPool
from .text import TextEncoder
from .visual import FrameEncoder, normalize_frames
from .vit_features import vit_multiscale_tokens

__all__ = ["EmbeddingModel", "LabelInputs"]


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

    def __init__(self, cfg: ModelConfig, num_labels: int):
        super().__init__()
        heads = cfg.heads
        self.register_buffer("name_ids", torch.zeros(num_labels, heads.label_max_length, dtype=torch.long))
        self.register_buffer("name_attention", torch.zeros(num_labels, heads.label_max_length, dtype=torch.long))
        self.name_attention[:, 0] = 1  # placeholder: a lone [PAD] token until set_inputs
        self.register_buffer("edge_index", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("edge_weight", torch.zeros(0))
        if cfg.use_gcn:
            self.embed = TagGCN(TagGCNConfig(in_dim=cfg.text.width, hidden=heads.gcn_hidden, out_dim=cfg.embed_dim,
                                             num_layers=heads.gcn_layers, dropout=heads.gcn_dropout))
        else:
            self.embed = nn.Linear(cfg.text.width, cfg.embed_dim)
        p = heads.label_init_prob
        self.head = LabelHead(num_labels, init_bias=-math.log((1 - p) / p))
        self.use_gcn = cfg.use_gcn
        self._name_cache: torch.Tensor | None = None  # (N, text.width) detached text-tower name encodings

    def set_inputs(self, inputs: LabelInputs) -> None:
        n, length = self.name_ids.shape
        if tuple(inputs.name_ids.shape) != (n, length) or inputs.name_attention.shape != inputs.name_ids.shape:
            raise ValueError(f"label names must be ({n}, {length}) ids and attention, got "
                             f"{tuple(inputs.name_ids.shape)} and {tuple(inputs.name_attention.shape)}")
        dev = self.name_ids.device
        self._name_cache = None
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
        self._name_cache = None  # new weights or names: encode afresh
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def name_features(self, text: TextEncoder, refresh: bool = True) -> torch.Tensor:
        """``(N, text.width)``: the text tower's mean-pooled name encodings. In training mode they are
        recomputed (with gradients) when ``refresh`` or nothing is cached, and a detached copy is kept;
        otherwise the copy is returned. Evaluation mode always recomputes and neither reads nor writes the
        copy."""
        if not self.training:
            return text(self.name_ids, self.name_attention)  # (N, text.width)
        cache = self._name_cache
        if refresh or cache is None or cache.device != self.name_ids.device:
            names = text(self.name_ids, self.name_attention)  # (N, text.width)
            self._name_cache = names.detach()
            return names
        return cache

    def label_embeddings(self, text: TextEncoder, refresh: bool = True) -> torch.Tensor:
        """``(N, embed_dim)``: the text tower's mean-pooled name embeddings (:meth:`name_features`)
        through the GCN (or Linear)."""
        names = self.name_features(text, refresh)  # (N, text.width)
        if self.use_gcn:
            return self.embed(names, self.edge_index, self.edge_weight)  # (N, D)
        return self.embed(names)  # (N, D)

    def forward(self, x: torch.Tensor, text: TextEncoder, refresh: bool = True) -> torch.Tensor:
        return self.head(x, self.label_embeddings(text, refresh))  # (B, N)


def _masked_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x * mask.to(x.dtype).unsqueeze(-1)


def _channel_attention(width: int, channels: tuple[str, ...]) -> ChannelAttentionFusion | None:
    """Channel attention over ``channels``; None for a single channel (see :func:`_combine`)."""
    return ChannelAttentionFusion(width, channels) if len(channels) > 1 else None


def _wide_part(cfg: ModelConfig, kind: str) -> NgramBag | None:
    """The wide part of the ``kind`` label head (``ModelConfig.wide_ngram_heads``): an n-gram bag whose
    vectors are label scores, zero at the start (the head starts as the deep head alone)."""
    if not cfg.has_wide_head(kind):
        return None
    num_labels = cfg.heads.num_hashtags if kind == "hashtags" else cfg.heads.num_queries
    wide = NgramBag(cfg.text.ngram_buckets, num_labels, lr_scale=cfg.wide_lr_scale, pooling=cfg.wide_pooling,
                    bias=cfg.wide_bias, adam_beta2=cfg.wide_adam_beta2)
    nn.init.zeros_(wide.bag.weight)
    return wide


def _combine(attention: ChannelAttentionFusion | None, vectors: Mapping[str, torch.Tensor],
             available: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused vector ``(B, D)`` and channel weights ``(B, C)`` of named channel vectors; without an
    attention (one channel) the channel itself, weight 1 where available."""
    if attention is not None:
        return attention(vectors, available)
    (name, vec), = vectors.items()
    return vec, available[name].to(vec.dtype).unsqueeze(1)  # (B, D), (B, 1)


class EmbeddingModel(nn.Module):
    """The embedding model of every preset (see the module docstring).

    Args:
        cfg: the architecture.
        hashtags, queries: label names and tag graphs (:class:`LabelInputs`); may be set later with
            :meth:`set_label_inputs` (e.g. once the data's vocabularies are known) or loaded from a
            state dict; until then the names are placeholders.
    """

    def __init__(self, cfg: ModelConfig, hashtags: LabelInputs | None = None, queries: LabelInputs | None = None):
        super().__init__()
        self.cfg = cfg
        vision, text = cfg.vision, cfg.text
        self.visual = FrameEncoder(vision)
        self.text = TextEncoder(text)
        self.temporal_pool = (TemporalAttentionPool(vision.width, vision.heads)
                              if vision.temporal_pool == "attention" else None)  # None: mean over frames
        self.audio = AudioEncoder(cfg.audio) if cfg.use_audio else None
        d = cfg.embed_dim
        self.visual_proj = nn.Linear(vision.width, d)
        self.text_proj = nn.Linear(text.width, d)
        self.audio_proj = nn.Linear(cfg.audio.width, d) if cfg.use_audio else None
        self.video_channels = ("visual", "audio") if cfg.use_audio else ("visual",)
        self.video_attention = _channel_attention(d, self.video_channels)
        fused_channels = ("text",) + self.video_channels
        mm_channels = fused_channels + (("ngram",) if cfg.multimodal_reads_ngram else ())
        self.fusion = MultiScaleFusion(cfg.fusion) if cfg.use_fusion == "multiscale" else None
        self.fused_proj = (nn.ModuleDict({m: nn.Linear(cfg.fusion.width, d) for m in fused_channels})
                           if self.fusion is not None else None)
        token_width = cfg.fusion.width if self.fusion is not None else text.width
        self.multimodal_attention = ChannelAttentionFusion(d, mm_channels) if cfg.has_multimodal else None
        self.ngram_bag = NgramBag(text.ngram_buckets, d) if cfg.has_ngram_bag else None
        self.text_channels = ("text", "ngram") if cfg.has_ngram_bag else ("text",)
        self.text_attention = _channel_attention(d, self.text_channels)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)),
                                        requires_grad=cfg.learn_logit_scale)
        self.hashtag_branch = _LabelBranch(cfg, cfg.heads.num_hashtags) if cfg.has_hashtag_head else None
        self.query_branch = _LabelBranch(cfg, cfg.heads.num_queries) if cfg.has_query_head else None
        self.hashtag_wide = _wide_part(cfg, "hashtags")
        self.query_wide = _wide_part(cfg, "queries")
        if cfg.keyword_head:
            self.keyword_token = nn.Linear(token_width, text.width)
            self.keyword_context = nn.Linear(d, text.width)
            self.keyword_norm = nn.LayerNorm(text.width)
            self.keyword_bias = nn.Parameter(torch.zeros(text.vocab_size))
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
        vision = self.cfg.vision
        frames = batch["frames"]
        b, t = frames.shape[:2]
        if tuple(frames.shape[-2:]) != (vision.frame_size, vision.frame_size):
            raise ValueError(f"frames are {tuple(frames.shape[-2:])} but the model's vision.frame_size is "
                             f"{vision.frame_size}: make the data's decode.frame_size and vision.frame_size equal")
        x = normalize_frames(frames).reshape(b * t, *frames.shape[2:])  # (B*T, 3, S, S)
        fuse = self.fusion is not None
        last = vision.depth - 1
        depths = sorted(set(vision.fusion_blocks) | {last}) if fuse else [last]
        # without fusion only the [CLS] token of the last block is read: its other tokens are not computed
        outs = vit_multiscale_tokens(self.visual.vit, x, depths, norm="all",
                                     grad_checkpointing=vision.grad_checkpointing,
                                     prefix_only_last=not fuse)  # [(B*T, N, Wv)]; without fusion [(B*T, 1, Wv)]
        by_depth = dict(zip(depths, outs))
        video_mask = batch.get("video_mask")
        video_mask = torch.ones(b, dtype=torch.bool, device=frames.device) if video_mask is None else video_mask.bool()
        frame_mask = video_mask.view(b, 1).expand(b, t)  # (B, T)
        if batch.get("frame_mask") is not None:
            frame_mask = frame_mask & batch["frame_mask"].bool()
        cls = by_depth[last][:, 0].reshape(b, t, -1)  # (B, T, Wv)
        if self.temporal_pool is not None:
            channel = self.temporal_pool(cls, frame_mask)  # (B, Wv); zeros without frames
        else:
            channel = masked_mean(cls, frame_mask)  # (B, Wv); zeros without frames
        tokens: list[torch.Tensor] = []
        token_mask = frame_mask
        if fuse:
            for d in vision.fusion_blocks:
                out = by_depth[d]  # (B*T, N, Wv)
                if vision.fusion_tokens == "cls":
                    tokens.append(out[:, 0].reshape(b, t, -1))  # (B, T, Wv)
                else:
                    tokens.append(out.reshape(b, t * out.shape[1], -1))  # (B, T*N, Wv)
            if vision.fusion_tokens == "all":
                token_mask = frame_mask.repeat_interleave(outs[0].shape[1], dim=1)  # (B, T*N)
        return channel, tokens, token_mask

    def text_tower(self) -> dict[str, nn.Module]:
        """The modules of the ``text`` embedding (:meth:`encode_text`) by attribute name: the transformer
        ``text``, ``text_proj`` and, with the n-gram bag, ``ngram_bag`` and ``text_attention`` (the label
        heads read the transformer too, for the label names)."""
        tower: dict[str, nn.Module] = {"text": self.text, "text_proj": self.text_proj}
        if self.ngram_bag is not None:
            tower.update(ngram_bag=self.ngram_bag, text_attention=self.text_attention)
        return tower

    def _text_tokens(self, batch: Mapping[str, Any],
                     ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT tokens ``(B, L, Wt)`` and the token mask ``(B, L)`` (attention and ``text_mask``)."""
        ids = batch["text_ids"] if ids is None else ids
        tokens = self.text.forward_features(ids, batch["text_attention"], batch.get("text_field_ids"))
        mask = batch["text_attention"].bool()
        if batch.get("text_mask") is not None:
            mask = mask & batch["text_mask"].bool().unsqueeze(1)
        return tokens, mask

    def _text_embedding(
        self, batch: Mapping[str, Any], tokens: torch.Tensor, token_mask: torch.Tensor, text_ok: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The text embedding ``(B, D)`` (not normalised), its channel weights ``(B, C_t)`` and the n-gram
        bag channel it used (``(B, D)`` vectors and ``(B,)`` availability; None without a bag): the
        transformer channel, with the bag channel through channel attention when there is one. A batch
        without ``text_ngrams`` leaves the bag channel unavailable."""
        vec = _masked_rows(self.text_proj(masked_mean(tokens, token_mask)), text_ok)  # (B, D)
        if self.ngram_bag is None:
            return (*_combine(None, {"text": vec}, {"text": text_ok}), None)
        ngram_vec, ngram_ok = self._ngram_channel(batch, text_ok, vec)
        return (*_combine(self.text_attention, {"text": vec, "ngram": ngram_vec}, {"text": text_ok, "ngram": ngram_ok}),
                (ngram_vec, ngram_ok))

    def _ngram_channel(self, batch: Mapping[str, Any], text_ok: torch.Tensor,
                       like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The n-gram bag channel ``(B, D)`` (zero rows where missing) and its availability ``(B,)``; a batch
        without ``text_ngrams`` leaves it unavailable."""
        ngrams = batch.get("text_ngrams")
        if ngrams is None:
            return torch.zeros_like(like), torch.zeros_like(text_ok)
        ngram_vec, ngram_ok = self.ngram_bag(ngrams)  # (B, D), (B,)
        ngram_ok = ngram_ok & text_ok
        return _masked_rows(ngram_vec, ngram_ok), ngram_ok

    # ------------------------------------------------------------------ features

    def forward_features(self, batch: Mapping[str, Any], fusion_text_ids: torch.Tensor | None = None,
                         need_text: bool = True) -> dict[str, Any]:
        """Per-channel vectors, fused embeddings (not normalised) and channel weights.

        Returns a dict with ``visual``, ``audio``, ``text`` (channel vectors ``(B, D)``, zeros where
        missing; ``audio`` absent without the audio tower), ``video`` ``(B, D)`` (visual+audio only),
        ``video_weights`` ``(B, C_v)``, ``available`` (name -> ``(B,)`` bool), and when ``need_text``:
        ``text`` is the text embedding (the transformer channel, with the n-gram bag by channel attention)
        and ``text_weights`` ``(B, C_t)`` its channel weights; when a head reads them (``has_multimodal``):
        ``multimodal`` ``(B, D)``, ``multimodal_weights`` ``(B, C_m)``, ``text_tokens`` ``(B, L, W)`` (fused
        when ``use_fusion="multiscale"``) of the clean text and ``text_token_mask`` ``(B, L)``; given
        ``fusion_text_ids`` (the keyword-masked text) also ``masked_multimodal`` ``(B, D)`` and
        ``masked_text_tokens`` ``(B, L, W)``: a second text + fusion pass over the masked text that reuses
        the visual and audio tower outputs.
        """
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
        out["video"], out["video_weights"] = _combine(
            self.video_attention, {c: out[c] for c in self.video_channels}, {c: available[c] for c in self.video_channels})
        out["available"] = available
        if not need_text:
            return out

        clean_tokens, text_token_mask = self._text_tokens(batch)  # (B, L, Wt)
        out["text"], out["text_weights"], ngram = self._text_embedding(batch, clean_tokens, text_token_mask,
                                                                       available["text"])  # (B, D), (B, C_t)
        if self.multimodal_attention is None:
            return out
        if "ngram" in self.multimodal_attention.channels:  # the bag as a channel of the clean pass
            out["ngram"], available["ngram"] = ngram
        towers = (visual_tokens, visual_token_mask, audio_tokens, audio_token_mask)
        out["multimodal"], out["multimodal_weights"], out["text_tokens"] = self._fuse(
            out, available, clean_tokens, text_token_mask, *towers)
        out["text_token_mask"] = text_token_mask
        if fusion_text_ids is not None:  # the keyword pass: masked text, the same visual/audio tower outputs
            masked_tokens, _ = self._text_tokens(batch, fusion_text_ids)  # (B, L, Wt)
            no_bag = {**available, "ngram": torch.zeros_like(available["text"])}  # the bag shows the masked words
            out["masked_multimodal"], _, out["masked_text_tokens"] = self._fuse(
                out, no_bag, masked_tokens, text_token_mask, *towers)
        return out

    def _fuse(self, out: Mapping[str, Any], available: Mapping[str, torch.Tensor], text_tokens: torch.Tensor,
              text_token_mask: torch.Tensor, visual_tokens: list[torch.Tensor], visual_token_mask: torch.Tensor,
              audio_tokens: torch.Tensor | None,
              audio_token_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One fusion pass over ``text_tokens`` ``(B, L, Wt)`` and the tower outputs: the multimodal vector
        ``(B, D)`` (not normalised), its channel weights ``(B, C_m)`` and the text tokens the keyword head
        reads ``(B, L, W)`` (fused with ``use_fusion="multiscale"``, the BERT tokens otherwise)."""
        mm_channels = self.multimodal_attention.channels
        if self.fusion is not None:
            fused = self.fusion(text_tokens, text_token_mask, visual_tokens, visual_token_mask,
                                audio_tokens, audio_token_mask)
            vectors = {m: _masked_rows(self.fused_proj[m](fused.pooled[m]), available[m]) for m in self.fused_proj}
            tokens = fused.tokens["text"]  # (B, L, Wf)
        else:  # the text channel of these tokens, without the bag
            text_vec = _masked_rows(self.text_proj(masked_mean(text_tokens, text_token_mask)), available["text"])
            vectors = {**{m: out[m] for m in self.video_channels}, "text": text_vec}
            tokens = text_tokens  # (B, L, Wt)
        if "ngram" in mm_channels:  # (B, D), its rows zero where unavailable (e.g. in the keyword pass)
            vectors["ngram"] = _masked_rows(out["ngram"], available["ngram"])
        multimodal, weights = self.multimodal_attention(vectors, {m: available[m] for m in mm_channels})
        return multimodal, weights, tokens

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
        x, _, _ = self._text_embedding(batch, tokens, mask, text_ok)
        return _masked_rows(F.normalize(x, dim=-1), text_ok)

    def get_logit_scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def keyword_logits(self, text_tokens: torch.Tensor, positions: torch.Tensor, k: int,
                       context: torch.Tensor) -> torch.Tensor:
        """``(B, K, vocab_size)`` scores at the masked ``positions`` ``(B, L)`` (slot order as
        :func:`mmemb.models.keywords.select_keywords`' targets); ``context`` ``(B, D)``."""
        if not self.cfg.keyword_head:
            raise RuntimeError("the keyword head is off (ModelConfig.keyword_head=False)")
        slots = gather_slots(text_tokens, positions, k)  # (B, K, W)
        h = self.keyword_token(slots) + self.keyword_context(context).unsqueeze(1)  # (B, K, Wt)
        h = self.keyword_norm(F.gelu(h))
        words = self.text.bert.embeddings.word_embeddings.weight  # (V, Wt): tied decoder
        return h @ words.T + self.keyword_bias  # (B, K, V)

    def forward(self, batch: Mapping[str, Any], masked_text_ids: torch.Tensor | None = None,
                keyword_positions: torch.Tensor | None = None, num_keywords: int | None = None,
                refresh_labels: bool = True) -> dict[str, Any]:
        """Every output: ``video``, ``text`` (L2-normalised, zero rows where nothing is available),
        ``video_mask`` ``(B,)`` (a video channel is available), ``logit_scale``, ``video_weights``,
        ``text_weights``; when a head reads it (``ModelConfig.has_multimodal``) ``multimodal`` (as the
        others), ``multimodal_weights`` and ``multimodal_mask``; and when the heads are on
        ``hashtag_logits`` ``(B, H)``, ``query_logits`` ``(B, Q)``, ``keyword_logits`` ``(B, K, V)`` (the
        latter only given ``masked_text_ids``, ``keyword_positions`` and ``num_keywords``: read from a
        second fusion pass over the masked text; everything else reads the clean text).
        ``refresh_labels=False`` lets a training forward reuse the cached label-name encodings (see the
        module docstring); evaluation mode ignores it."""
        f = self.forward_features(batch, fusion_text_ids=masked_text_ids)
        avail = f["available"]
        video_ok = self._video_available(avail)
        out = {
            "video": _masked_rows(F.normalize(f["video"], dim=-1), video_ok),
            "text": _masked_rows(F.normalize(f["text"], dim=-1), avail["text"]),
            "video_mask": video_ok,
            "logit_scale": self.get_logit_scale(),
            "video_weights": f["video_weights"],
            "text_weights": f["text_weights"],
        }
        if "multimodal" not in f:
            return out
        mm_ok = video_ok | avail["text"]
        out.update(multimodal=_masked_rows(F.normalize(f["multimodal"], dim=-1), mm_ok),
                   multimodal_weights=f["multimodal_weights"], multimodal_mask=mm_ok)
        for name, branch, wide in (("hashtag", self.hashtag_branch, self.hashtag_wide),
                                   ("query", self.query_branch, self.query_wide)):
            if branch is not None:
                out.update(self._head_logits(name, branch(f["multimodal"], self.text, refresh_labels), wide, batch))
        if (self.cfg.keyword_head and masked_text_ids is not None and keyword_positions is not None
                and num_keywords is not None):
            out["keyword_logits"] = self.keyword_logits(f["masked_text_tokens"], keyword_positions, num_keywords,
                                                        f["masked_multimodal"])
        return out

    def _head_logits(self, name: str, logits: torch.Tensor, wide: NgramBag | None,
                     batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """``{name}_logits``: the deep head's ``logits`` ``(B, N)`` plus the wide part's pooled n-gram label
        scores (``wide_ngram_heads``) of the batch's clean-text n-grams, which are also returned alone as
        ``{name}_wide_logits``; the deep logits alone without a wide part or without ``text_ngrams``. With
        ``wide_loss="bce"`` the sum carries no gradient into the wide part (its own term trains it)."""
        ngrams = batch.get("text_ngrams")
        if wide is None or ngrams is None:
            return {f"{name}_logits": logits}
        scores, _ = wide(ngrams.to(logits.device))  # (B, N); rows without n-grams: the bias alone, or zeros
        summed = logits + (scores.detach() if self.cfg.wide_loss == "bce" else scores)  # (B, N)
        return {f"{name}_logits": summed, f"{name}_wide_logits": scores}

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay besides 1-D ones."""
        return {f"visual.vit.{n}" for n in self.visual.vit.no_weight_decay()} | {"audio.pos_embed"}
