"""Keyword selection for keyword-mask prediction (the teacher's text objective).

Instead of BERT's random 15 % of tokens, the teacher masks the most informative whole words of a
text (highest IDF over the training texts) and predicts them from the video and the rest of the text.

* :func:`token_idf`: token-level IDF from the training texts' token ids;
* :func:`word_spans`: WordPiece tokens -> whole words (``##`` pieces join their word; runs of CJK
  characters, one token each, are segmented into words by ``jieba``, a dependency, or, with
  ``cjk="pairs"`` (to measure what the dictionary brings), cut into fixed 2-character spans);
* :func:`select_keywords`: the positions to mask and the target ids of each text;
* :func:`apply_mask` / :func:`gather_slots`: replace the chosen tokens by ``[MASK]``; pick the
  encoder's hidden states at the masked slots, aligned with the targets;
* :func:`keyword_targets`: the targets of positions chosen elsewhere (the dataset workers choose the
  positions with :func:`select_keywords`; the training step derives the targets on the device).
"""

from __future__ import annotations

import importlib
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Sequence

import torch

from mmemb.data.labels import label_idf
from mmemb.data.text import SPECIAL_TOKENS

__all__ = [
    "KeywordConfig",
    "token_idf",
    "word_spans",
    "select_keywords",
    "apply_mask",
    "gather_slots",
    "keyword_targets",
]

CjkSegmenter = Literal["jieba", "pairs"]
CJK_SEGMENTERS = ("jieba", "pairs")
PAIR_SPAN = 2  # characters per word of the "pairs" CJK segmentation


class _Tokenizer(Protocol):  # what select_keywords needs of mmemb.data.text.TextTokenizer
    def id_to_token(self, idx: int) -> str | None: ...


@dataclass
class KeywordConfig:
    """How :func:`select_keywords` chooses the words to mask."""

    max_keywords: int = 3  # whole words masked per text, at most
    mask_ratio: float = 0.3  # and at most this share of the text's real tokens (floor; short texts may get none)
    method: Literal["tfidf"] = "tfidf"  # rank words by IDF (a word's score is the max IDF of its tokens)
    min_idf: float = 0.0  # words scoring below this are never masked
    # CJK runs -> words: "jieba" (dictionary words) or "pairs" (fixed 2-character spans, the comparison).
    # "auto" (the default of earlier versions, saved in their checkpoints: jieba when installed) reads as "jieba"
    cjk: CjkSegmenter = "jieba"

    def __post_init__(self) -> None:
        if self.max_keywords < 0:
            raise ValueError(f"KeywordConfig.max_keywords must be >= 0, got {self.max_keywords}")
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise ValueError(f"KeywordConfig.mask_ratio must lie in [0, 1], got {self.mask_ratio}")
        if self.method != "tfidf":
            raise ValueError(f"KeywordConfig.method must be 'tfidf', got {self.method!r}")
        if self.cjk == "auto":
            self.cjk = "jieba"
        if self.cjk not in CJK_SEGMENTERS:
            raise ValueError(f"KeywordConfig.cjk must be 'jieba' or 'pairs', got {self.cjk!r}")


def token_idf(token_id_lists: Sequence[Sequence[int]], vocab_size: int) -> torch.Tensor:
    """Smoothed IDF per token id, float32 ``(vocab_size,)``: ``ln((1 + N) / (1 + df[t])) + 1`` with N
    the number of texts and df the texts containing token t (the formula of
    :func:`mmemb.data.labels.label_idf`). Pass the training texts' ids without special tokens (they
    are never masked anyway)."""
    return torch.from_numpy(label_idf(token_id_lists, vocab_size)).float()


# ----------------------------------------------------------------------------- words


def _is_cjk(token: str) -> bool:
    """A single CJK ideograph token (the characters the tokenizer's BertNormalizer splits one by one;
    kana and Hangul stay in word pieces)."""
    return len(token) == 1 and unicodedata.name(token, "").startswith(("CJK UNIFIED", "CJK COMPATIBILITY IDEOGRAPH"))


def _jieba() -> Any:
    """The ``jieba`` module (a dependency of mmemb; ``ImportError`` naming it when it is missing)."""
    try:
        module = importlib.import_module("jieba")
    except ImportError:
        raise ImportError("Chinese whole-word masking needs jieba, a dependency of mmemb: pip install jieba "
                          "(or KeywordConfig.cjk='pairs' for 2-character spans)") from None
    if hasattr(module, "setLogLevel"):
        module.setLogLevel(60)  # no "Building prefix dict..." chatter
    return module


def _segment_cjk(run: str, cjk: CjkSegmenter) -> list[int]:
    """Word lengths (in characters) of a run of CJK characters: jieba's dictionary words, or fixed
    2-character spans for ``"pairs"`` (also, as a safeguard, for a run that jieba's words would not
    cover exactly)."""
    if cjk == "jieba":
        lengths = [len(w) for w in _jieba().lcut(run, HMM=False) if w]
        if sum(lengths) == len(run):
            return lengths
    return [min(PAIR_SPAN, len(run) - i) for i in range(0, len(run), PAIR_SPAN)]


def word_spans(token_strings: Sequence[str], cjk: CjkSegmenter = "jieba") -> list[tuple[int, int]]:
    """Whole words of a WordPiece token sequence as ``(start, end)`` position spans (end exclusive).

    * a ``##`` piece joins the word before it (unless that is a special token);
    * consecutive single-character CJK tokens form a run, cut into words by ``jieba.lcut(run,
      HMM=False)`` (``cjk="jieba"``) or, with ``cjk="pairs"`` (no dictionary), into fixed spans of 2
      characters from the start of the run (the last may have 1): ``视频搞笑`` -> ``视频`` ``搞笑``,
      ``猫咪很`` -> ``猫咪`` ``很``. Pairs cut some words wrongly but keep the mask unit close to the
      typical 2-character Chinese word;
    * any other token (a Latin word start, a digit run, punctuation, an emoji) starts a word;
    * special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``, ``[UNK]``) belong to no word and split runs.

    Every non-special token lies in exactly one span; spans are in order.
    """
    specials = set(SPECIAL_TOKENS)
    spans: list[tuple[int, int]] = []
    run_start: int | None = None

    def close_run(end: int) -> None:
        nonlocal run_start
        if run_start is None:
            return
        start = run_start
        for n in _segment_cjk("".join(token_strings[run_start:end]), cjk):
            spans.append((start, start + n))
            start += n
        run_start = None

    for i, tok in enumerate(token_strings):
        if tok in specials:
            close_run(i)
            continue
        if _is_cjk(tok):
            if run_start is None:
                run_start = i
            continue
        close_run(i)
        if tok.startswith("##") and spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    close_run(len(token_strings))
    return spans


def _has_word_char(tokens: Sequence[str]) -> bool:
    """True when some character is a letter or a digit (not only punctuation, symbols or emoji)."""
    return any(unicodedata.category(ch)[0] in ("L", "N") for tok in tokens for ch in tok.removeprefix("##"))


# ----------------------------------------------------------------------------- selection


def select_keywords(
    text_ids: torch.Tensor,
    attention: torch.Tensor,
    idf: torch.Tensor,
    tokenizer: _Tokenizer,
    cfg: KeywordConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose the keywords to mask in each text of a batch.

    Args:
        text_ids, attention: ``(B, L)`` as in the batch contract (``[CLS] ... [SEP]``, 0-padded).
        idf: ``(V,)`` token IDF (:func:`token_idf`).
        tokenizer: a :class:`~mmemb.data.text.TextTokenizer` (only ``id_to_token`` is used).
        cfg: :class:`KeywordConfig`.

    Per text: the words of :func:`word_spans` over the real tokens (``attention == 1``; special tokens
    are in no word) that contain a letter or digit are scored by the max IDF of their tokens, and
    taken greedily from the highest score (ties: the earlier word) while fewer than
    ``max_keywords`` are taken; a word whose tokens would exceed the budget of
    ``floor(mask_ratio * n)`` masked tokens (``n`` = the text's real non-special tokens) is skipped
    for the next one. Words scoring below ``min_idf`` are never taken. All tokens of a taken word are
    masked. The result depends only on the inputs (no randomness).

    Returns:
        ``positions (B, L)`` bool: the masked tokens; ``target_ids (B, K)`` int64: their original ids
        in position order, padded with 0; ``valid (B, K)`` bool: real slots. ``K`` is the most
        masked tokens of a text in the batch, at least 1 (so that the shapes are never empty).
    """
    cfg = cfg or KeywordConfig()
    if text_ids.shape != attention.shape or text_ids.dim() != 2:
        raise ValueError(f"select_keywords: text_ids and attention must both be (B, L), got "
                         f"{tuple(text_ids.shape)} and {tuple(attention.shape)}")
    ids_rows = text_ids.detach().cpu().tolist()
    att_rows = attention.detach().cpu().tolist()
    idf_list = idf.detach().cpu().float().tolist()
    token_cache: dict[int, str] = {}
    positions = torch.zeros(text_ids.shape, dtype=torch.bool)
    chosen_rows: list[list[int]] = []
    for b, (ids, att) in enumerate(zip(ids_rows, att_rows)):
        tokens = []
        for idx, a in zip(ids, att):
            if not a:
                tokens.append("[PAD]")  # padding: special, in no word
                continue
            if idx not in token_cache:
                token_cache[idx] = tokenizer.id_to_token(idx) or "[UNK]"
            tokens.append(token_cache[idx])
        n_real = sum(1 for t in tokens if t not in SPECIAL_TOKENS)
        budget = int(cfg.mask_ratio * n_real)
        scored = []
        for start, end in word_spans(tokens, cfg.cjk):
            if not _has_word_char(tokens[start:end]):
                continue
            score = max(idf_list[ids[i]] if 0 <= ids[i] < len(idf_list) else 0.0 for i in range(start, end))
            if score >= cfg.min_idf:
                scored.append((-score, start, end))
        scored.sort()
        picked: list[int] = []
        words = 0
        for _, start, end in scored:
            if words >= cfg.max_keywords:
                break
            if len(picked) + (end - start) > budget:
                continue
            picked.extend(range(start, end))
            words += 1
        picked.sort()
        positions[b, picked] = True
        chosen_rows.append(picked)
    k = max([1] + [len(p) for p in chosen_rows])
    target_ids = torch.zeros(text_ids.shape[0], k, dtype=torch.long)
    valid = torch.zeros(text_ids.shape[0], k, dtype=torch.bool)
    for b, picked in enumerate(chosen_rows):
        target_ids[b, : len(picked)] = torch.tensor([ids_rows[b][i] for i in picked], dtype=torch.long)
        valid[b, : len(picked)] = True
    device = text_ids.device
    return positions.to(device), target_ids.to(device), valid.to(device)


def apply_mask(text_ids: torch.Tensor, positions: torch.Tensor, mask_id: int) -> torch.Tensor:
    """``text_ids (B, L)`` with the tokens at ``positions (B, L)`` replaced by ``mask_id`` (a copy)."""
    return text_ids.masked_fill(positions.to(device=text_ids.device, dtype=torch.bool), mask_id)


def gather_slots(hidden: torch.Tensor, positions: torch.Tensor, k: int) -> torch.Tensor:
    """The rows of ``hidden (B, L, D)`` at the masked ``positions (B, L)``, in position order and
    aligned with :func:`select_keywords`' ``target_ids``: ``(B, K)`` slots of ``(D,)``; padding slots
    hold position 0's row (mask them with ``valid``)."""
    b, length = positions.shape
    pos = positions.to(torch.bool)
    # sort key: masked positions first, in order; then the rest
    key = torch.where(pos, 0, length) + torch.arange(length, device=pos.device)  # (B, L)
    order = key.argsort(dim=1)[:, :k]  # (B, K)
    index = torch.where(torch.gather(pos, 1, order), order, 0)  # (B, K): padding slots -> position 0
    return torch.gather(hidden, 1, index.unsqueeze(-1).expand(b, index.shape[1], hidden.shape[-1]))  # (B, K, D)


def keyword_targets(text_ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets of already chosen keyword ``positions`` ``(B, L)`` bool, as :func:`select_keywords`
    returns them: ``target_ids (B, K)`` int64 (the original ids in position order, 0-padded) and
    ``valid (B, K)`` bool, ``K`` the most masked tokens of a row (at least 1). Runs on the tensors'
    device (one scalar is read back for ``K``)."""
    if text_ids.shape != positions.shape or text_ids.dim() != 2:
        raise ValueError(f"keyword_targets: text_ids and positions must both be (B, L), got "
                         f"{tuple(text_ids.shape)} and {tuple(positions.shape)}")
    pos = positions.to(torch.bool)
    counts = pos.sum(dim=1)  # (B,)
    k = max(1, int(counts.max()) if pos.numel() else 1)
    slots = gather_slots(text_ids.unsqueeze(-1), pos, k).squeeze(-1)  # (B, K)
    valid = torch.arange(k, device=pos.device).unsqueeze(0) < counts.unsqueeze(1)  # (B, K)
    return slots.masked_fill(~valid, 0), valid
