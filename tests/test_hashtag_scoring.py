"""Hashtag scores for models with and without a hashtag head (mmemb.lit.hashtag_scoring), and the label
names the module takes from the data's vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmemb.data.labels import LabelVocab
from mmemb.data.text import TextTokenizer
from mmemb.data.vocab import Vocabularies
from mmemb.lit.hashtag_scoring import name_token_ids
from mmemb.lit.module import EmbeddingModule

NAMES = ["美食", "舞蹈", "搞笑"]
COUNTS = [5, 9, 2]
QUERIES = ["好吃的", "跳舞"]


def _tokenizer() -> TextTokenizer:
    return TextTokenizer.train(["美食 舞蹈 搞笑 今天 吃饭", "舞蹈 跳舞 美食 好吃"] * 3, vocab_size=200, min_frequency=1)


def _vocabs(hashtags=NAMES, counts=COUNTS, queries=()) -> Vocabularies:
    return Vocabularies(tokenizer=_tokenizer(), hashtags=LabelVocab(list(hashtags), list(counts), 1),
                        queries=LabelVocab(list(queries), [1] * len(queries), 1),
                        hashtag_idf=np.ones(len(hashtags), np.float32), query_idf=np.ones(len(queries), np.float32),
                        categories=[], removed_hashtags={})


def _two_tower(**kwargs) -> EmbeddingModule:
    return EmbeddingModule(preset="two_tower_tiny", vocab_size=200, loss_weights={"clip_v2t": 0.5, "clip_t2v": 0.5},
                           **kwargs)


def _batch(module, b: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    size = module.config.vision.frame_size
    return {
        "frames": torch.randint(0, 255, (b, 2, 3, size, size), generator=g, dtype=torch.uint8),
        "video_mask": torch.ones(b, dtype=torch.bool),
        "text_ids": torch.randint(5, 50, (b, 6), generator=g),
        "text_attention": torch.ones(b, 6, dtype=torch.long),
        "text_mask": torch.ones(b, dtype=torch.bool),
        "mel": torch.randn(b, module.config.audio.n_mels, 40, generator=g),
    }


def test_name_token_ids_are_cls_name_sep_and_padded():
    tok = _tokenizer()
    ids, att = name_token_ids(tok, NAMES, 8)
    assert ids.shape == att.shape == (3, 8)
    row, _ = tok.encode_fields([NAMES[1]], 8)
    assert ids[1, : len(row)].tolist() == row and ids[1, len(row):].eq(0).all()
    assert att.sum(1).tolist() == [len(tok.encode_fields([n], 8)[0]) for n in NAMES]


def test_first_model_scores_hashtags_zero_shot():
    module = _two_tower(num_hashtags=3).eval()
    batch = _batch(module)
    with torch.no_grad():
        out = module(batch)
        assert module.hashtag_scores(out) is None  # names not known yet
        module.set_vocabularies(_vocabs())
        scores = module.hashtag_scores(out)
        ids, att = name_token_ids(_tokenizer(), NAMES, module.hashtag_name_ids.shape[1])
        names = module.model.encode_text({"text_ids": ids, "text_attention": att})  # (3, D)
    assert scores.shape == (4, 3)
    torch.testing.assert_close(scores, out["video"] @ names.T)  # cosines of unit vectors
    assert scores.abs().max() <= 1 + 1e-5
    assert _two_tower().hashtag_scores(out) is None  # no hashtags at all


def test_teacher_uses_its_head_and_zero_shot_without_it():
    tok = _tokenizer()
    with_head = EmbeddingModule(preset="teacher_tiny", vocab_size=200, num_hashtags=3).eval()
    without = EmbeddingModule(preset="teacher_tiny", vocab_size=200, num_hashtags=3,
                              overrides={"hashtag_head": False}).eval()
    for m in (with_head, without):
        m.set_vocabularies(_vocabs())
    ids, _ = name_token_ids(tok, NAMES, 8)
    assert torch.equal(with_head.model.hashtag_branch.name_ids, ids)  # the head's label names are set
    batch = _batch(with_head)
    with torch.no_grad():
        out = with_head(batch)
        assert with_head.hashtag_scores(out) is out["hashtag_logits"]
        out2 = without(batch)
        assert "hashtag_logits" not in out2
        names = without.model.encode_text({"text_ids": without.hashtag_name_ids,
                                           "text_attention": without.hashtag_name_attention})
        torch.testing.assert_close(without.hashtag_scores(out2), out2["video"] @ names.T)


def test_zero_shot_scores_a_video_without_a_clip_by_its_text():
    """Text-only data (KuaiRec): a row without a clip has a zero video embedding, which would tie every
    label; it is scored by its own text embedding instead, the other rows by their video embedding."""
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=200, num_hashtags=3,
                             overrides={"hashtag_head": False}).eval()
    module.set_vocabularies(_vocabs())
    batch = _batch(module)
    batch["video_mask"] = batch["audio_mask"] = torch.tensor([True, False, True, False])  # no clip: rows 1, 3
    with torch.no_grad():
        out = module(batch)
        names = module.model.encode_text({"text_ids": module.hashtag_name_ids,
                                          "text_attention": module.hashtag_name_attention})  # (3, D)
        scores = module.hashtag_scores(out)
    assert out["video"][1].eq(0).all() and out["video_mask"].tolist() == [True, False, True, False]
    torch.testing.assert_close(scores[[0, 2]], out["video"][[0, 2]] @ names.T)
    torch.testing.assert_close(scores[[1, 3]], out["text"][[1, 3]] @ names.T)
    assert scores[1].std() > 0  # not a tie


def test_hashtag_metrics_and_popularity_baseline_by_hand():
    from mmemb.lit.hashtag_scoring import hashtag_metrics

    counts = torch.tensor(COUNTS, dtype=torch.float32)  # popularity order: 舞蹈 (9), 美食 (5), 搞笑 (2)
    targets = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)  # row 3 has no label
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]])
    m = hashtag_metrics(scores, targets, counts)
    # model: row 1 ranks its label 2nd (AP 1/2), row 2 ranks it 1st (AP 1) -> mAP 0.75, P@1 0.5
    assert m["hashtag_map"] == pytest.approx(0.75) and m["hashtag_p1"] == pytest.approx(0.5)
    assert m["hashtag_n_samples"] == 2 and m["hashtag_n_excluded"] == 1
    # popularity: row 1's label is 1st (AP 1), row 2's is 3rd (AP 1/3) -> mAP 2/3
    assert m["hashtag_map_popularity"] == pytest.approx(2 / 3)


def test_hashtag_names_travel_with_the_checkpoint(tmp_path):
    module = _two_tower(num_hashtags=3)
    module.set_vocabularies(_vocabs())
    path = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    back = EmbeddingModule.from_checkpoint_weights(str(path))
    assert torch.equal(back.hashtag_name_ids, module.hashtag_name_ids)
    assert back.hashtag_train_counts.tolist() == COUNTS


@pytest.mark.parametrize("preset, hashtag_head", [("teacher_tiny", True), ("teacher_tiny", False),
                                                  ("two_tower_tiny", False)])
def test_a_hashtag_vocabulary_of_another_size_is_an_error(preset, hashtag_head):
    """The names of a module built for 3 hashtags cannot come from a vocabulary of 2: they would stay
    placeholders (the head's, or the zero-shot names), so this raises instead of skipping silently."""
    module = EmbeddingModule(preset=preset, vocab_size=200, num_hashtags=3,
                             overrides={} if hashtag_head else {"hashtag_head": False})
    with pytest.raises(ValueError, match="the data has 2 hashtags but the model was built for 3"):
        module.set_vocabularies(_vocabs(NAMES[:2], COUNTS[:2]))


def test_a_query_vocabulary_of_another_size_is_an_error():
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=200, num_hashtags=3, num_queries=3)
    with pytest.raises(ValueError, match="the data has 2 queries but the model was built for 3"):
        module.set_vocabularies(_vocabs(queries=QUERIES))
    module = EmbeddingModule(preset="teacher_tiny", vocab_size=200, num_hashtags=3, num_queries=2)
    module.set_vocabularies(_vocabs(queries=QUERIES))
    ids, _ = name_token_ids(_tokenizer(), QUERIES, 8)
    assert torch.equal(module.model.query_branch.name_ids, ids)
