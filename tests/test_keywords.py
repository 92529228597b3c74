"""Keyword selection for keyword-mask prediction."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from mmemb.data.text import SPECIAL_TOKENS, TextTokenizer
from mmemb.models import keywords as kw
from mmemb.models.keywords import (
    KeywordConfig,
    apply_mask,
    gather_slots,
    keyword_targets,
    select_keywords,
    token_idf,
    word_spans,
)

VOCAB = list(SPECIAL_TOKENS) + ["the", "cat", "play", "##ing", "##s", "dog", "!",
                                 "视", "频", "搞", "笑", "猫", "咪"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> TextTokenizer:
    path = tmp_path_factory.mktemp("kw") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return TextTokenizer.from_vocab(path)


@pytest.fixture()
def no_jieba(monkeypatch):
    """Make ``import jieba`` fail even where it is installed."""
    monkeypatch.setitem(sys.modules, "jieba", None)


def _batch(tok: TextTokenizer, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tok.encode_fields([t], length)[0] for t in texts]
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    att = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
    return ids, att


def _idf(**by_token: float) -> torch.Tensor:
    idf = torch.ones(len(VOCAB))
    for token, value in by_token.items():
        idf[VOCAB.index(token)] = value
    return idf


def test_word_spans_wordpiece_cjk_and_specials():
    tokens = ["[CLS]", "play", "##ing", "the", "##s", "!", "视", "频", "搞", "笑", "猫", "[SEP]", "咪", "[PAD]"]
    assert word_spans(tokens, cjk="pairs") == [(1, 3), (3, 5), (5, 6), (6, 8), (8, 10), (10, 11), (12, 13)]
    assert word_spans(["##ing", "cat"]) == [(0, 1), (1, 2)]  # a leading piece is its own word
    assert word_spans(["[CLS]", "##s"]) == [(1, 2)]  # no joining across a special token
    assert word_spans([]) == []


def test_word_spans_uses_jieba_when_present(monkeypatch):
    fake = types.ModuleType("jieba")
    fake.lcut = lambda text, HMM=False: ["视频", "搞笑猫"] if text == "视频搞笑猫" else list(text)
    monkeypatch.setitem(sys.modules, "jieba", fake)
    tokens = ["[CLS]", "视", "频", "搞", "笑", "猫", "[SEP]"]
    assert word_spans(tokens) == [(1, 3), (3, 6)]
    assert word_spans(tokens, cjk="pairs") == [(1, 3), (3, 5), (5, 6)]  # forced fallback


def test_jieba_is_the_default_segmenter_and_its_absence_an_error(no_jieba):
    with pytest.raises(ImportError, match="pip install jieba"):
        word_spans(["视", "频"])
    assert word_spans(["视", "频", "搞"], cjk="pairs") == [(0, 2), (2, 3)]  # no dictionary needed
    assert KeywordConfig().cjk == "jieba"
    assert KeywordConfig(cjk="auto").cjk == "jieba"  # the default of earlier versions' checkpoints
    with pytest.raises(ValueError, match="'jieba' or 'pairs'"):
        KeywordConfig(cjk="words")


def test_real_jieba_cuts_dictionary_words():
    pytest.importorskip("jieba")  # a dependency (setup.cfg); the check above covers its absence
    tokens = ["[CLS]", *"我喜欢看搞笑视频", "[SEP]"]
    assert word_spans(tokens) == [(1, 2), (2, 4), (4, 5), (5, 7), (7, 9)]  # 我 / 喜欢 / 看 / 搞笑 / 视频
    assert word_spans(tokens, cjk="pairs") == [(1, 3), (3, 5), (5, 7), (7, 9)]  # 我喜 / 欢看 / 搞笑 / 视频


def test_whole_words_masked_together_and_rarest_first(tok):
    ids, att = _batch(tok, ["the cat playing dogs"], 12)
    # tokens: [CLS] the cat play ##ing dog ##s [SEP]; "##s" is the rarest piece -> "dogs" first, then "playing"
    idf = _idf(the=1.0, cat=2.0, play=3.0, **{"##ing": 1.5, "dog": 2.5, "##s": 4.0})
    cfg = KeywordConfig(max_keywords=2, mask_ratio=1.0, cjk="pairs")
    positions, targets, valid = select_keywords(ids, att, idf, tok, cfg)
    tokens = [tok.id_to_token(i) for i in ids[0].tolist()]
    masked = [t for t, m in zip(tokens, positions[0].tolist()) if m]
    assert masked == ["play", "##ing", "dog", "##s"]
    assert targets.shape == (1, 4) and valid.all()
    assert [tok.id_to_token(i) for i in targets[0].tolist()] == ["play", "##ing", "dog", "##s"]
    # one keyword: the rarest whole word
    positions, targets, valid = select_keywords(ids, att, idf, tok, KeywordConfig(max_keywords=1, mask_ratio=1.0))
    assert [t for t, m in zip(tokens, positions[0].tolist()) if m] == ["dog", "##s"]
    # min_idf excludes everything below it
    positions, _, valid = select_keywords(ids, att, idf, tok, KeywordConfig(max_keywords=3, mask_ratio=1.0,
                                                                            min_idf=10.0))
    assert not positions.any() and valid.shape == (1, 1) and not valid.any()


def test_budget_skips_words_that_do_not_fit(tok):
    ids, att = _batch(tok, ["the cat playing dogs"], 12)  # 6 real tokens
    idf = _idf(the=1.0, cat=2.0, play=3.0, **{"##ing": 1.5, "dog": 2.5, "##s": 4.0})
    # budget floor(0.34 * 6) = 2: "dogs" (2 tokens) fits, "playing" does not, "cat" would need a 3rd token
    positions, targets, valid = select_keywords(ids, att, idf, tok, KeywordConfig(max_keywords=3, mask_ratio=0.34))
    assert positions.sum().item() == 2
    # budget 1: the two-token words are skipped, "cat" (the best one-token word) is taken
    positions, _, _ = select_keywords(ids, att, idf, tok, KeywordConfig(max_keywords=3, mask_ratio=0.2))
    assert positions[0].nonzero().flatten().tolist() == [2]


def test_special_tokens_and_padding_never_masked(tok):
    ids, att = _batch(tok, ["cat!", "视频搞笑 the cat", "dog"], 10)
    idf = torch.full((len(VOCAB),), 5.0)  # everything is "rare", specials included
    cfg = KeywordConfig(max_keywords=10, mask_ratio=1.0, cjk="pairs")
    positions, targets, valid = select_keywords(ids, att, idf, tok, cfg)
    special_ids = {tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id, tok.unk_id}
    for b in range(3):
        for i in range(10):
            if ids[b, i].item() in special_ids or att[b, i] == 0:
                assert not positions[b, i]
    assert not positions[0, ids[0].tolist().index(VOCAB.index("!"))]  # punctuation is no keyword
    assert positions[1].sum() == valid[1].sum() == 6  # 视频, 搞笑, the, cat
    assert targets.shape == (3, 6) and valid.sum(dim=1).tolist() == [1, 6, 1]
    assert torch.equal(targets[valid], ids[positions])  # targets follow position order


def test_pairs_segmenter_masks_char_pairs(tok, no_jieba):
    ids, att = _batch(tok, ["视频搞笑猫"], 10)
    # tokens: [CLS] 视 频 搞 笑 猫 [SEP]; pair words 视频 / 搞笑 / 猫; 笑 is rarest
    idf = _idf(**{"视": 1.0, "频": 1.0, "搞": 2.0, "笑": 6.0, "猫": 3.0})
    cfg = KeywordConfig(max_keywords=1, mask_ratio=1.0, cjk="pairs")
    positions, targets, _ = select_keywords(ids, att, idf, tok, cfg)
    assert positions[0].nonzero().flatten().tolist() == [3, 4]
    assert [tok.id_to_token(i) for i in targets[0].tolist()] == ["搞", "笑"]


def test_deterministic_and_apply_mask_and_gather(tok):
    ids, att = _batch(tok, ["the cat playing dogs", "视频搞笑猫咪", "dog"], 12)
    idf = token_idf([[5, 6], [6, 7, 8], [6]], len(VOCAB))
    first = select_keywords(ids, att, idf, tok)
    for _ in range(3):
        again = select_keywords(ids, att, idf, tok)
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    positions, targets, valid = first
    masked = apply_mask(ids, positions, tok.mask_id)
    assert torch.equal(masked[positions], torch.full((int(positions.sum()),), tok.mask_id))
    assert torch.equal(masked[~positions], ids[~positions]) and not torch.equal(masked, ids)
    hidden = ids.unsqueeze(-1).float().expand(-1, -1, 3)  # hidden state = the token id
    slots = gather_slots(hidden, positions, targets.shape[1])  # (B, K, 3)
    assert torch.equal(slots[..., 0].long()[valid], targets[valid])


def test_token_idf_and_config_checks():
    idf = token_idf([[1, 2], [2], [2, 2]], 4)
    assert idf.dtype == torch.float32 and idf.shape == (4,)
    assert idf[2].item() == pytest.approx(1.0) and idf[1] > idf[2] and idf[0] == idf[3]
    with pytest.raises(ValueError, match="mask_ratio"):
        KeywordConfig(mask_ratio=1.5)
    with pytest.raises(ValueError, match="method"):
        KeywordConfig(method="random")  # type: ignore[arg-type]
    assert kw.PAIR_SPAN == 2


def test_keyword_targets_of_given_positions_match_select_keywords(tok):
    """The training step derives the targets of positions chosen in the loader workers; they equal
    what select_keywords returns with the positions."""
    ids, att = _batch(tok, ["the cat playing dogs", "视频搞笑猫咪", "dog", "!"], 12)
    idf = token_idf([[5, 6], [6, 7, 8], [6]], len(VOCAB))
    positions, targets, valid = select_keywords(ids, att, idf, tok)
    assert positions.any() and not positions[3].any()  # a text without a keyword: no slot
    again_targets, again_valid = keyword_targets(ids, positions)
    assert torch.equal(again_targets, targets) and torch.equal(again_valid, valid)
    none_targets, none_valid = keyword_targets(ids, torch.zeros_like(positions))
    assert none_targets.shape == (4, 1) and not none_valid.any()
    with pytest.raises(ValueError, match="keyword_targets"):
        keyword_targets(ids, positions[:, :3])
