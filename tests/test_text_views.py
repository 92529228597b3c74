"""The text-side contrastive views: caption alone vs cover text alone of the same video."""

from __future__ import annotations

import pytest
import torch

from mmemb.data.text import hash_field_ngrams, hash_field_ngrams_with_fields
from mmemb.lit.module import CAPTION_FIELD, COVER_FIELD, text_field_view
from mmemb.losses import nt_xent, text_view_infonce


def test_field_ngram_ids_follow_the_fields_and_the_shared_budget():
    fields = ["abcdef", None, "xyz12", "q"]
    ids, field_ids = hash_field_ngrams_with_fields(fields, 5, n=3, num_buckets=97)
    assert ids == hash_field_ngrams(fields, 5, n=3, num_buckets=97)
    # 6, 5 and 1 boundary-padded grams share 5 places: "#q#" keeps its one, the others 2 each; field 2 is absent
    assert field_ids == [1, 1, 3, 3, 4]


def _batch():
    # row 0: [CLS] c c [SEP] v [SEP]; row 1: [CLS] c [SEP] (no cover text); pads are field 0, attention 0
    fields = torch.tensor([[0, 1, 1, 1, 2, 2], [0, 1, 1, 0, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    return {"text_ids": torch.arange(12).view(2, 6), "text_attention": attention, "text_field_ids": fields,
            "text_ngrams": torch.tensor([[5, 6, 7, 0], [8, 0, 0, 0]]),
            "text_ngram_field_ids": torch.tensor([[1, 2, 2, 0], [1, 0, 0, 0]])}


def test_a_field_view_keeps_cls_and_that_field_only():
    caption, cover = text_field_view(_batch(), CAPTION_FIELD), text_field_view(_batch(), COVER_FIELD)
    assert caption["text_attention"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]
    assert cover["text_attention"].tolist() == [[1, 0, 0, 0, 1, 1], [1, 0, 0, 0, 0, 0]]
    assert caption["text_mask"].tolist() == [True, True] and cover["text_mask"].tolist() == [True, False]
    assert caption["text_ngrams"].tolist() == [[5, 0, 0, 0], [8, 0, 0, 0]]
    assert cover["text_ngrams"].tolist() == [[0, 6, 7, 0], [0, 0, 0, 0]]
    del_fields = {k: v for k, v in _batch().items() if k != "text_ngram_field_ids"}
    assert "text_ngrams" not in text_field_view(del_fields, CAPTION_FIELD)  # no bag rather than a leak


def test_text_view_infonce_is_nt_xent_over_the_rows_with_both_views():
    torch.manual_seed(0)
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    keep = torch.tensor([True, False, True, True, False])
    term = text_view_infonce(a, b, 0.1, keep)["text_views"]
    assert term == pytest.approx(nt_xent(a[keep], b[keep], 0.1)["simclr"].item())
    aligned = text_view_infonce(a, a + 0.01 * b, 0.1, keep)["text_views"]
    assert aligned < term  # matching views score better


def test_the_term_encodes_only_the_rows_with_both_fields():
    """The module's ``text_views`` equals the loss over the rows that have both views, computed apart."""
    from mmemb.lit.module import EmbeddingModule

    torch.manual_seed(0)
    module = EmbeddingModule("teacher_tiny", vocab_size=40, ngram_buckets=64,
                             loss_weights={"text_views": 1.0}).eval()
    batch = _batch()
    three = {k: torch.cat([v, v[:1] + (1 if k == "text_ids" else 0)]) for k, v in batch.items()}  # rows 0 and 2 have both
    got = module._text_view_term(three)["text_views"]
    both = {k: v[[0, 2]] for k, v in three.items()}
    want = text_view_infonce(module.model.encode_text(text_field_view(both, CAPTION_FIELD)),
                             module.model.encode_text(text_field_view(both, COVER_FIELD)), 0.1)["text_views"]
    assert got.item() == pytest.approx(want.item()) and got.item() > 0
    none = {k: v[[1]] for k, v in three.items()}  # no cover text: a zero term
    assert module._text_view_term(none)["text_views"].item() == 0.0
