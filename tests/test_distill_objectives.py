"""The distillation terms (mmemb.objectives.distill) against values computed by hand."""

import math

import pytest
import torch

from mmemb.objectives.distill import embedding_alignment, label_distillation, relational_kl

E = math.e


def test_embedding_alignment_is_one_minus_cosine_per_row_and_name():
    s = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    out = embedding_alignment({"video": s}, {"video": t})
    # row 0: orthogonal -> 1; row 1: cos 45 degrees -> 1 - 1/sqrt(2)
    assert out["distill_embed"].item() == pytest.approx((1.0 + 1.0 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    out["distill_embed"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher is a target
    # a masked row is left out; a name with no kept row adds 0 to the mean over names
    masked = embedding_alignment({"video": s, "text": s}, {"video": t, "text": t},
                                 {"video": torch.tensor([True, False]), "text": torch.tensor([False, False])})
    assert masked["distill_embed"].item() == pytest.approx((1.0 + 0.0) / 2, abs=1e-6)
    # equal directions (any scale) give 0
    same = embedding_alignment({"text": torch.tensor([[3.0, 4.0]])}, {"text": torch.tensor([[0.6, 0.8]])})
    assert same["distill_embed"].item() == pytest.approx(0.0, abs=1e-6)


def test_embedding_alignment_needs_equal_widths_and_the_teacher_names():
    with pytest.raises(ValueError, match="project the student"):
        embedding_alignment({"video": torch.ones(2, 3)}, {"video": torch.ones(2, 4)})
    with pytest.raises(KeyError, match="multimodal"):
        embedding_alignment({"multimodal": torch.ones(2, 3)}, {"video": torch.ones(2, 3)})


def test_relational_kl_both_directions_by_hand():
    sv = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    st = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tv = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # another width: only the similarities count
    tt = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # student similarities I; teacher [[1, 1], [0, 0]]; temperature 1
    # v2t: teacher rows uniform, student rows softmax([1, 0]) / softmax([0, 1]): KL = ln(1+e) - ln 2 - 1/2 each
    v2t = math.log(1 + E) - math.log(2) - 0.5
    # t2v: teacher columns both softmax([1, 0]); student columns softmax([1, 0]) (KL 0) and softmax([0, 1])
    a, b = E / (1 + E), 1 / (1 + E)
    t2v = 0.5 * (0.0 + (a - b) * 1.0)
    out = relational_kl(sv, st, tv, tt, temperature=1.0)
    assert out["distill_relation"].item() == pytest.approx(0.5 * (v2t + t2v), abs=1e-6)
    out["distill_relation"].backward()
    assert sv.grad.abs().sum() > 0
    # a dropped pair is neither a query nor a candidate: adding one masked row changes nothing
    pad = lambda x: torch.cat([x, torch.randn(1, x.shape[1])])  # noqa: E731
    masked = relational_kl(pad(sv.detach()), pad(st), pad(tv), pad(tt), 1.0, torch.tensor([True, True, False]))
    assert masked["distill_relation"].item() == pytest.approx(0.5 * (v2t + t2v), abs=1e-6)
    # the temperature divides the cosines: halving it is doubling the embeddings' similarities' spread
    hot = relational_kl(sv.detach(), st, tv, tt, temperature=0.5)["distill_relation"].item()
    v2t_hot = math.log(1 + E ** 2) - math.log(2) - 1.0
    a2, b2 = E ** 2 / (1 + E ** 2), 1 / (1 + E ** 2)
    assert hot == pytest.approx(0.5 * (v2t_hot + 0.5 * (a2 - b2) * 2.0), abs=1e-6)
    # the teacher's own similarities give 0; no kept pair gives a zero with a gradient
    assert relational_kl(tv, tt, tv, tt, 0.1)["distill_relation"].item() == pytest.approx(0.0, abs=1e-6)
    none = relational_kl(sv, st, tv, tt, 1.0, torch.tensor([False, False]))["distill_relation"]
    assert none.item() == 0.0 and none.requires_grad


def test_label_distillation_sigmoid_is_the_binary_kl_per_label():
    teacher = torch.tensor([[0.0, 2.0]])
    student = torch.tensor([[math.log(3.0), 2.0]], requires_grad=True)
    # label 0: p = 1/2, q = 3/4 -> 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3); label 1 matches -> 0; mean over 2 labels
    out = label_distillation({"hashtag": student}, {"hashtag": teacher}, temperature=1.0)
    assert out["distill_label"].item() == pytest.approx(0.25 * math.log(4 / 3), abs=1e-6)
    out["distill_label"].backward()
    assert student.grad[0, 0] > 0 and student.grad[0, 1].abs() < 1e-7  # pushed down towards p, the match untouched
    # the temperature divides both logits: T = 2 on doubled logits is the same value
    hot = label_distillation({"hashtag": 2 * student.detach()}, {"hashtag": 2 * teacher}, temperature=2.0)
    assert hot["distill_label"].item() == pytest.approx(0.25 * math.log(4 / 3), abs=1e-6)


def test_label_distillation_softmax_mask_and_heads():
    teacher = torch.tensor([[0.0, 0.0], [5.0, -1.0]])
    student = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    # row 0: p = (1/2, 1/2), q = (3/4, 1/4) -> 1/2 ln(4/3); row 1 masked out
    mask = torch.tensor([True, False])
    out = label_distillation({"hashtag": student}, {"hashtag": teacher}, 1.0, mask, form="softmax")
    assert out["distill_label"].item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    # two heads: the mean of their terms (the query head matches the teacher: 0)
    both = label_distillation({"hashtag": student, "query": teacher}, {"hashtag": teacher, "query": teacher}, 1.0,
                              mask, form="softmax")
    assert both["distill_label"].item() == pytest.approx(0.25 * math.log(4 / 3), abs=1e-6)
    with pytest.raises(ValueError, match="same label vocabulary"):
        label_distillation({"hashtag": torch.zeros(2, 3)}, {"hashtag": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="temperature"):
        label_distillation({"hashtag": student}, {"hashtag": teacher}, temperature=0.0)


def test_objectives_import_without_lightning():
    import subprocess
    import sys

    code = ("import sys, mmemb.objectives.distill, mmemb.models.registry; "
            "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
