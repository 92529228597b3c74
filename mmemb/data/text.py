"""Text tokenization for Chinese and English short-video text, and stable char-n-gram hashing.

:class:`TextTokenizer` wraps a Hugging Face ``tokenizers`` WordPiece model (Rust, fast, picklable):

* normalizer: NFKC (full-width ``ＡＢＣ１２３！`` -> ``ABC123!``), then ``BertNormalizer``: control
  characters dropped, every CJK ideograph surrounded by spaces, lowercased, accents stripped;
* pre-tokenizer: ``BertPreTokenizer`` (whitespace and punctuation), then every remaining character that is
  neither a letter, a digit nor a combining mark (emoji, symbols) isolated as its own token, so
  ``ok😂`` gives ``ok`` + ``😂`` instead of a single ``[UNK]``;
* model: WordPiece (``##`` continuation pieces); so CJK text becomes one token per character and Latin
  words become lowercased word pieces.

It is either trained on a corpus (:meth:`TextTokenizer.train`) or built from a BERT ``vocab.txt``
(:meth:`TextTokenizer.from_vocab`, e.g. all-MiniLM-L6-v2's), optionally extended with the corpus'
characters that the vocabulary lacks (appended as new rows, so a pretrained embedding table keeps its ids).

:func:`strip_hashtags` removes the ``#hashtag`` words of a text field (they are the video's labels).

:func:`char_ngrams` / :func:`hash_ngrams` turn a short text (a search query) into hashed character
n-grams with a hash that is the same in every process and on every machine (BLAKE2b, never ``hash()``).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

__all__ = [
    "SPECIAL_TOKENS",
    "TextTokenizer",
    "TokenizerError",
    "char_ngrams",
    "hash_ngrams",
    "hash_field_ngrams",
    "hash_field_ngrams_with_fields",
    "stable_hash",
    "strip_hashtags",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in a trained vocabulary
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
META_FILE = "mmemb_tokenizer.json"
_MAX_CHARS_PER_WORD = 100  # longer "words" (URLs, repeated emoji) become [UNK], as in BERT

# Han ideographs (BMP, extension A, compatibility, extensions B-F), kana and Hangul syllables.
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0002fa1f"
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
_SEGMENT = re.compile(f"[{_CJK_RANGES}]+|[^\\W_{_CJK_RANGES}]+")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK_RANGES}]) (?=[{_CJK_RANGES}])")


class TokenizerError(ValueError):
    """A tokenizer file is missing pieces or cannot be read; the message names the file."""


# ----------------------------------------------------------------------------- the pipeline pieces


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([
        normalizers.NFKC(),
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True),
    ])


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(r"[^\p{L}\p{N}\p{M}]"), behavior="isolated"),
    ])


def _configure(tk: Tokenizer) -> Tokenizer:
    tk.normalizer = _normalizer()
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tk


def _texts(texts: Iterable[str | None]) -> Iterable[str]:
    return (t for t in texts if t)


# ----------------------------------------------------------------------------- tokenizer


class TextTokenizer:
    """WordPiece tokenizer for mixed Chinese/English text (see the module docstring).

    Build it with :meth:`train`, :meth:`from_vocab` or :meth:`load`. Attributes: ``vocab_size`` and the
    ids of the special tokens ``pad_id``, ``unk_id``, ``cls_id``, ``sep_id``, ``mask_id``;
    ``added_tokens`` lists the rows :meth:`from_vocab` appended to a pretrained vocabulary.
    """

    def __init__(self, tokenizer: Tokenizer, added_tokens: Sequence[str] = (), source: str = "<memory>"):
        self._tk = tokenizer
        self.added_tokens: list[str] = list(added_tokens)
        self._source = source
        ids = {}
        for token in SPECIAL_TOKENS:
            idx = tokenizer.token_to_id(token)
            if idx is None:
                raise TokenizerError(f"{source}: the vocabulary lacks the special token {token}")
            ids[token] = idx
        self.pad_id: int = ids["[PAD]"]
        self.unk_id: int = ids["[UNK]"]
        self.cls_id: int = ids["[CLS]"]
        self.sep_id: int = ids["[SEP]"]
        self.mask_id: int = ids["[MASK]"]

    # ------------------------------------------------------------------------- construction

    @classmethod
    def train(cls, texts: Iterable[str | None], vocab_size: int = 8000, min_frequency: int = 2) -> "TextTokenizer":
        """Train a WordPiece vocabulary of at most ``vocab_size`` tokens on ``texts`` (``None``/empty skipped).

        The special tokens get ids 0..4 in :data:`SPECIAL_TOKENS` order. Every character of the corpus
        enters the alphabet; word pieces must occur ``min_frequency`` times to be merged. The result
        depends only on the corpus and the arguments (same vocabulary and ids in every run).
        """
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ValueError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
        corpus = list(_texts(texts))
        # Determinism: the Rust trainer gives ids to '##c' pieces in hash-map order, and those ids break
        # ties between equally frequent merges, so two runs can learn different vocabularies
        # (huggingface/tokenizers#1794). Registering every '##c' up front, sorted, fixes their ids.
        continuing = sorted(t for t in _char_piece_counts(corpus, max_word_chars=None) if t.startswith("##"))
        tk = _configure(Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=_MAX_CHARS_PER_WORD)))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS) + continuing,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tk.train_from_iterator(corpus, trainer=trainer)
        # Rebuild from the learned vocabulary so that only the real specials are special tokens.
        vocab = tk.get_vocab(with_added_tokens=False)
        out = _configure(Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]",
                                                    max_input_chars_per_word=_MAX_CHARS_PER_WORD)))
        out.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(out, source="<trained>")

    @classmethod
    def from_vocab(
        cls, vocab_file: str | Path, extend_with: Iterable[str | None] | None = None, min_frequency: int = 2
    ) -> "TextTokenizer":
        """A tokenizer over a BERT-style ``vocab.txt`` (one token per line, the line number is the id).

        With ``extend_with`` (a corpus), every single character of the corpus seen at least
        ``min_frequency`` times that the vocabulary cannot produce is appended as a new row after the
        last id (existing ids are unchanged): ``c`` where the character starts a word (every CJK
        character and symbol), ``##c`` where it continues one. New rows are ordered by count (desc), then
        token, and listed in ``added_tokens``.
        """
        path = Path(vocab_file)
        if not path.exists():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        vocab: dict[str, int] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            token = line.rstrip("\r")
            if not token.strip():
                raise TokenizerError(f"{path}:{lineno}: empty token")
            if token in vocab:
                raise TokenizerError(f"{path}:{lineno}: duplicate token {token!r} (first on line {vocab[token] + 1})")
            vocab[token] = len(vocab)
        added: list[str] = []
        if extend_with is not None:
            if min_frequency < 1:
                raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
            counts = _char_piece_counts(extend_with)
            missing = [(n, t) for t, n in counts.items() if n >= min_frequency and t not in vocab]
            added = [t for _, t in sorted(missing, key=lambda x: (-x[0], x[1]))]
            for token in added:
                vocab[token] = len(vocab)
        if "[UNK]" not in vocab:
            raise TokenizerError(f"{path}: the vocabulary lacks the special token [UNK]")
        tk = _configure(Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]",
                                                   max_input_chars_per_word=_MAX_CHARS_PER_WORD)))
        tk.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
        return cls(tk, added_tokens=added, source=str(path))

    # ------------------------------------------------------------------------- encoding

    def encode(self, text: str | None, max_length: int) -> list[int]:
        """Token ids of ``text`` (no special tokens added), cut to ``max_length``; ``None``/empty -> ``[]``."""
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        if not text:
            return []
        return self._tk.encode(text, add_special_tokens=False).ids[:max_length]

    def encode_fields(self, fields: Sequence[str | None], max_length: int) -> tuple[list[int], list[int]]:
        """Encode several text fields as ``[CLS] f0 [SEP] f1 [SEP] ...``, at most ``max_length`` tokens.

        ``None`` and fields without tokens are skipped. The token budget (``max_length`` minus ``[CLS]``
        and one ``[SEP]`` per field) is shared fairly: short fields keep all their tokens and the rest is
        split evenly between the longer ones, each cut at its end. When not even one token per field
        fits, the last fields are dropped. Returns ``(ids, field_ids)`` where ``field_ids[i]`` is 1 +
        the index in ``fields`` of the field token ``i`` (or its ``[SEP]``) belongs to, 0 for ``[CLS]``.
        """
        return self.encode_fields_batch([fields], max_length)[0]

    def encode_fields_batch(self, rows: Sequence[Sequence[str | None]], max_length: int,
                            ) -> list[tuple[list[int], list[int]]]:
        """:meth:`encode_fields` of each row of fields, with one tokenizer call for all of them (the
        per-call cost dominates short texts)."""
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1 (room for [CLS]), got {max_length}")
        present = [[(i, f) for i, f in enumerate(fields) if f] for fields in rows]
        flat = [f for row in present for _, f in row]
        encoded = iter(self._tk.encode_batch(flat, add_special_tokens=False) if flat else [])
        out = []
        for row in present:
            parts = [(i, enc.ids) for (i, _), enc in zip(row, encoded) if enc.ids]
            parts = parts[: (max_length - 1) // 2]  # each kept field needs one token and one [SEP]
            budget = max_length - 1 - len(parts)
            share = _fair_share([len(ids) for _, ids in parts], budget)
            ids, field_ids = [self.cls_id], [0]
            for (i, piece), n in zip(parts, share):
                ids += piece[:n] + [self.sep_id]
                field_ids += [i + 1] * (n + 1)
            out.append((ids, field_ids))
        return out

    def tokens(self, text: str | None) -> list[str]:
        """The tokens (strings) of ``text``, no special tokens added."""
        if not text:
            return []
        return self._tk.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (special tokens dropped, ``##`` pieces joined, no spaces between CJK characters)."""
        text = self._tk.decode([int(i) for i in ids], skip_special_tokens=True)
        return _SPACE_BETWEEN_CJK.sub("", text)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string, ``None`` when it is not in the vocabulary."""
        return self._tk.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        """Token string of an id, ``None`` when out of range."""
        return self._tk.id_to_token(int(idx))

    def get_vocab(self) -> dict[str, int]:
        """Token -> id for the whole vocabulary."""
        return self._tk.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Number of ids (rows of an embedding table)."""
        return self._tk.get_vocab_size(with_added_tokens=True)

    def coverage(self, texts: Iterable[str | None]) -> float:
        """Share of the non-space characters of ``texts`` that do not end up inside an ``[UNK]`` token.

        Characters the normalizer drops (control characters, accents) count as covered. 1.0 when the
        texts have no non-space character.
        """
        batch = [t for t in _texts(texts)]
        total = unknown = 0
        for text, enc in zip(batch, self._tk.encode_batch(batch, add_special_tokens=False)):
            total += sum(1 for ch in text if not ch.isspace())
            for idx, (start, end) in zip(enc.ids, enc.offsets):
                if idx == self.unk_id:
                    unknown += sum(1 for ch in text[start:end] if not ch.isspace())
        return 1.0 if total == 0 else 1.0 - unknown / total

    # ------------------------------------------------------------------------- files and pickling

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` (Hugging Face format), ``vocab.txt`` (one token per id) and
        ``mmemb_tokenizer.json`` (``added_tokens``) into ``directory``; returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tk.save(str(directory / TOKENIZER_FILE))
        by_id = sorted(self.get_vocab().items(), key=lambda kv: kv[1])
        (directory / VOCAB_FILE).write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
        meta = {"format": 1, "added_tokens": self.added_tokens}
        (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TextTokenizer":
        """Read what :meth:`save` wrote (``directory`` or the ``tokenizer.json`` itself).

        Raises ``FileNotFoundError`` or :class:`TokenizerError` naming the file when it is missing or
        cannot be parsed.
        """
        path = Path(directory)
        if path.is_dir() or path.suffix != ".json":
            path = path / TOKENIZER_FILE
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            tk = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a plain Exception with serde's message
            raise TokenizerError(f"{path}: not a valid tokenizer file ({exc})") from None
        added: list[str] = []
        meta_path = path.parent / META_FILE
        if meta_path.exists():
            try:
                added = list(json.loads(meta_path.read_text(encoding="utf-8"))["added_tokens"])
            except (ValueError, KeyError, TypeError) as exc:
                raise TokenizerError(f"{meta_path}: not a valid tokenizer metadata file ({exc})") from None
        return cls(tk, added_tokens=added, source=str(path))

    def __getstate__(self) -> dict:
        return {"tokenizer": self._tk.to_str(), "added_tokens": self.added_tokens, "source": self._source}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Tokenizer.from_str(state["tokenizer"]), state["added_tokens"], state["source"])

    def __repr__(self) -> str:
        return (f"TextTokenizer(vocab_size={self.vocab_size}, added_tokens={len(self.added_tokens)}, "
                f"source={self._source!r})")


def _fair_share(lengths: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` tokens between fields of the given lengths: short fields get everything, the
    longer ones an even share of the rest (earlier fields first when it does not divide evenly)."""
    share = [0] * len(lengths)
    remaining = max(budget, 0)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], -i))
    for pos, i in enumerate(order):
        share[i] = min(lengths[i], remaining // (len(lengths) - pos))
        remaining -= share[i]
    return share


def _char_piece_counts(
    texts: Iterable[str | None], max_word_chars: int | None = _MAX_CHARS_PER_WORD
) -> collections.Counter:
    """Count the single-character pieces WordPiece needs for ``texts``: ``c`` for a character that
    starts a pre-token, ``##c`` for one that continues it (after normalization). Pre-tokens longer
    than ``max_word_chars`` are skipped (they become ``[UNK]`` anyway)."""
    norm, pre = _normalizer(), _pre_tokenizer()
    counts: collections.Counter = collections.Counter()
    for text in _texts(texts):
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            if max_word_chars is not None and len(word) > max_word_chars:
                continue
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    return counts


# ----------------------------------------------------------------------------- hashtag words

# A hashtag body: word characters (CJK, letters, digits, underscore) plus the few other characters real
# KuaiRec tags contain (middle dot as in 中医·中药, emoji variation selector and keycap as in 0️⃣0️⃣后创业).
_TAG_CHARS = r"\w\u00b7\u30fb\ufe0f\u20e3\u200d"
# '#' or its full-width form '＃' (a run of them, as in '##lisa'), then the body (possibly empty: stray '#').
_HASHTAG = re.compile(rf"[#\uff03]+([{_TAG_CHARS}]*)")
_BODY_ENDS_AS_TAG = re.compile(rf"[{_TAG_CHARS}]+(?=\s|[#\uff03]|$)")
_HASHTAG_SPACES = re.compile(r"\s+")


def strip_hashtags(caption: str, tags: Sequence[str] = ()) -> str:
    """Remove the ``#hashtag`` words of a text (caption, cover text, ASR, a comment); no ``#`` (nor
    full-width ``＃``) is left.

    A hashtag starts at ``#``/``＃`` and runs over word characters (CJK, letters, digits, ``_``, ``·``),
    so it ends at whitespace (NBSP included), another ``#``, emoji or punctuation (``#搞笑，真好笑`` keeps
    ``，真好笑``). Two cases need care:

    * closing ``#`` (``#情感视频# 更新了``): after ``#tag#`` the text up to the next boundary is a
      second tag only when it ends at whitespace, ``#`` or the end (``#猴子#可爱#萌宠``), or when it
      is one of ``tags``; otherwise the ``#`` closed the first tag and the text is content
      (``#快递小哥#容易吗？还要帮`` keeps ``容易吗？还要帮``).
    * a tag glued to the following text (``#王一博和大婷牵手，``): when the run is not one of ``tags``
      but starts with one, only that known tag is removed.

    ``tags`` are the video's own hashtags (``topic_tag``), matched case-insensitively. Removed words
    leave a space behind; the result has its whitespace collapsed and stripped.
    """
    known = {t.lower() for t in tags}
    known_by_length = sorted(known, key=len, reverse=True)
    pieces: list[str] = []
    pos = 0  # caption[pos:] is not yet copied
    previous_end = -1  # end of the previous hashtag that had a body (for the closing-'#' case)
    for m in _HASHTAG.finditer(caption):
        body, body_start = m.group(1), m.start(1)
        complete = _BODY_ENDS_AS_TAG.match(caption, body_start) is not None  # body ends at space, '#' or end
        pieces.append(caption[pos:m.start()])
        pieces.append(" ")
        if body and m.start() == previous_end and body.lower() not in known and not complete:
            pos, previous_end = body_start, -1  # a closing '#': drop it, keep the body as content
            continue
        end = m.end()
        if body and not complete and body.lower() not in known:
            prefix = next((t for t in known_by_length if body[: len(t)].lower() == t), None)
            if prefix:
                end = body_start + len(prefix)  # known tag glued to content: remove the tag only
        pos, previous_end = end, (end if body else -1)
    pieces.append(caption[pos:])
    return _HASHTAG_SPACES.sub(" ", "".join(pieces)).strip()


# ----------------------------------------------------------------------------- char n-gram hashing


def char_ngrams(text: str | None, n: int = 3, min_n: int | None = None) -> list[str]:
    """Character n-grams of ``text``, in order, duplicates kept: of ``n`` characters, or of every length
    from ``min_n`` to ``n`` (segment by segment, shortest first).

    The text is NFKC-normalized and lowercased, then split into segments: runs of CJK characters and
    words of letters/digits (punctuation, emoji and ``_`` separate them and are dropped).

    * a word gets boundary markers and its n-grams: ``"Cat"`` -> ``#cat#`` -> ``#ca``, ``cat``, ``at#``
      (a marked word shorter than ``n`` is one gram: ``"a"`` -> ``#a#``);
    * a CJK run gets the n-grams of the run itself: ``"搞笑视频"`` -> ``搞笑视``, ``笑视频`` (a run
      shorter than ``n`` is one gram: ``"猫"`` -> ``猫``).

    With ``min_n``, each length ``k`` adds the segment's k-grams, and a segment shorter than ``min_n`` is one
    gram: ``char_ngrams("猫咪", 3, min_n=1)`` -> ``猫``, ``咪``, ``猫咪``.
    """
    min_n = n if min_n is None else min_n
    if not 1 <= min_n <= n:
        raise ValueError(f"need 1 <= min_n <= n, got min_n={min_n}, n={n}")
    if not text:
        return []
    grams: list[str] = []
    for m in _SEGMENT.finditer(unicodedata.normalize("NFKC", text).lower()):
        seg = m.group()
        if not _CJK_CHAR.match(seg):
            seg = f"#{seg}#"
        if len(seg) < min_n:
            grams.append(seg)
            continue
        for k in range(min_n, min(n, len(seg)) + 1):  # (a segment of k <= n characters is its one k-gram)
            grams.extend(seg[i:i + k] for i in range(len(seg) - k + 1))
    return grams


def stable_hash(value: str, seed: int = 0) -> int:
    """A 64-bit hash of ``value`` that is the same in every process and on every machine.

    BLAKE2b of the UTF-8 bytes with ``seed`` as salt (unlike Python's ``hash()``, which is salted per
    process). ``seed`` must be in ``[0, 2**64)``.
    """
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8, salt=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little")


# Hashes of recently seen n-grams (an LRU cache; the ids are those of stable_hash). A BLAKE2b call
# costs about 1 us from Python and a caption has up to ``ngram_max_length`` n-grams, while the
# n-grams of a corpus' texts and of search queries repeat (common CJK 3-grams, frequent words), within
# an epoch and from one epoch to the next. Each DataLoader worker and server process has its own.
_HASH_CACHE_SIZE = 2 ** 17


@functools.lru_cache(maxsize=_HASH_CACHE_SIZE)
def _cached_hash(value: str, seed: int) -> int:
    return stable_hash(value, seed)


def hash_ngrams(text: str | None, n: int = 3, num_buckets: int = 2 ** 18, seed: int = 0,
                min_n: int | None = None) -> list[int]:
    """Bucket ids in ``[0, num_buckets)`` of the :func:`char_ngrams` of ``text`` (``n``, ``min_n``; same order,
    duplicates kept), by :func:`stable_hash` modulo ``num_buckets`` (hashes of recent n-grams are cached)."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return [_cached_hash(g, seed) % num_buckets for g in char_ngrams(text, n, min_n)]


def hash_field_ngrams(fields: Sequence[str | None], max_length: int, n: int = 3, num_buckets: int = 2 ** 18,
                      seed: int = 0, min_n: int | None = None) -> list[int]:
    """:func:`hash_ngrams` of several text fields, at most ``max_length`` bucket ids in all.

    The budget is shared as :meth:`TextTokenizer.encode_fields` shares tokens: short fields keep all
    their n-grams and the longer ones an even share of the rest, each cut at its end; the fields'
    ids follow each other in field order (``None``/empty fields add nothing).
    """
    return hash_field_ngrams_with_fields(fields, max_length, n, num_buckets, seed, min_n)[0]


def hash_field_ngrams_with_fields(fields: Sequence[str | None], max_length: int, n: int = 3,
                                  num_buckets: int = 2 ** 18, seed: int = 0,
                                  min_n: int | None = None) -> tuple[list[int], list[int]]:
    """:func:`hash_field_ngrams` and, for each id, 1 + the index in ``fields`` of the field it comes from
    (the numbering of :meth:`TextTokenizer.encode_fields`' field ids): a view of one field keeps the ids
    of its number."""
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    parts = [(i + 1, hash_ngrams(f, n, num_buckets, seed, min_n)) for i, f in enumerate(fields) if f]
    share = _fair_share([len(ids) for _, ids in parts], max_length)
    ids = [g for (_, grams), k in zip(parts, share) for g in grams[:k]]
    field_ids = [field for (field, grams), k in zip(parts, share) for _ in grams[:k]]
    return ids, field_ids
