"""Distillation objectives: a student's outputs against a frozen teacher's, each a named term.

* :func:`embedding_alignment` (``distill_embed``): ``1 - cos`` between the student's and the teacher's
  embeddings, per row, for ``video``, ``text`` and ``multimodal`` (the caller projects the student's
  embeddings to the teacher's width where they differ);
* :func:`relational_kl` (``distill_relation``): KL between the teacher's and the student's in-batch
  video-to-text and text-to-video similarity distributions (softmax of cosines over a temperature),
  both directions;
* :func:`label_distillation` (``distill_label``): the student's hashtag / query logits against the
  teacher's probabilities at a temperature: binary KL per label (``sigmoid``, for the multi-label BCE
  heads) or KL of the softmax distributions (``softmax``, for heads trained with soft-target
  cross-entropy).

Every term is 0 when the student's outputs equal the teacher's, and a zero that still backpropagates
when no row is kept. The teacher's tensors are targets: the functions detach them.
"""

from __future__ import annotations

from typing import Literal, Mapping

import torch
import torch.nn.functional as F

__all__ = ["DISTILL_TERMS", "embedding_alignment", "relational_kl", "label_distillation"]

# the names of the terms, the keys of their weights in ``loss_weights``
DISTILL_TERMS = ("distill_embed", "distill_relation", "distill_label")


def _row_mask(n: int, device: torch.device, mask: torch.Tensor | None) -> torch.Tensor:
    """``(n,)`` bool: ``mask`` or all True."""
    if mask is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if mask.shape != (n,):
        raise ValueError(f"mask must be ({n},), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def embedding_alignment(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                        masks: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Cosine alignment of the student's embeddings to the teacher's.

    Args:
        student: name (``video``, ``text``, ``multimodal``) -> ``(B, D)`` student embeddings, already
            projected to the teacher's width where the widths differ.
        teacher: the same names -> ``(B, D)`` teacher embeddings (detached here).
        masks: name -> ``(B,)`` bools; ``False`` rows (the modality missing for the student or the
            teacher) are left out. A name without a mask keeps every row.

    Returns:
        ``{"distill_embed": mean over the names n of mean over the kept rows i of (1 - cos(s_ni, t_ni))}``;
        a name with no kept row adds 0 to that mean.
    """
    if not student:
        raise ValueError("embedding_alignment: no embeddings given")
    missing = sorted(set(student) - set(teacher))
    if missing:
        raise KeyError(f"embedding_alignment: the teacher has no {missing} (it has {sorted(teacher)})")
    per_name = []
    for name, s in student.items():
        t = teacher[name].detach().to(s.dtype)
        if s.shape != t.shape or s.dim() != 2:
            raise ValueError(f"embedding_alignment: {name!r} student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                             "must both be (B, D): project the student's embeddings to the teacher's width")
        keep = _row_mask(s.shape[0], s.device, None if masks is None else masks.get(name)).to(s.dtype)  # (B,)
        cos = F.cosine_similarity(s, t, dim=-1, eps=1e-8)  # (B,)
        # no host sync: with no kept row the numerator is 0 and the clamp gives an exact 0 with grad
        per_name.append(((1.0 - cos) * keep).sum() / keep.sum().clamp(min=1.0))
    return {"distill_embed": torch.stack(per_name).mean()}


def _kl_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` of every row ``(P, N)`` -> ``(P,)``."""
    log_q = F.log_softmax(student_logits, dim=-1)  # (P, N)
    log_p = F.log_softmax(teacher_logits, dim=-1)  # (P, N)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (P,)


def relational_kl(student_video: torch.Tensor, student_text: torch.Tensor, teacher_video: torch.Tensor,
                  teacher_text: torch.Tensor, temperature: float,
                  mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Relational distillation: the student's in-batch similarity distributions against the teacher's.

    Args:
        student_video, student_text: ``(B, Ds)`` student embeddings (any width: only the ``B x B``
            similarities are compared); L2-normalised here.
        teacher_video, teacher_text: ``(B, Dt)`` teacher embeddings (detached, normalised here).
        temperature: the cosines are divided by it before the softmax (> 0).
        mask: ``(B,)`` bools; the kept pairs (video and text available for both models). A dropped
            row is neither a query nor a candidate.

    Returns:
        ``{"distill_relation": (KL_v2t + KL_t2v) / 2}`` over the ``P`` kept pairs, with
        ``S = v t^T / temperature`` (``P x P``) of each model, ``KL_v2t`` the mean over rows ``i`` of
        ``KL(softmax(S_teacher[i]) || softmax(S_student[i]))`` (each video over the texts) and
        ``KL_t2v`` the same over the columns (each text over the videos).
    """
    if temperature <= 0:
        raise ValueError(f"relational_kl: temperature must be > 0, got {temperature}")
    b = student_video.shape[0]
    for name, x in (("student_text", student_text), ("teacher_video", teacher_video), ("teacher_text", teacher_text)):
        if x.dim() != 2 or x.shape[0] != b:
            raise ValueError(f"relational_kl: {name} must be ({b}, D), got {tuple(x.shape)}")
    keep = _row_mask(b, student_video.device, mask)  # (B,)
    sv, st = F.normalize(student_video[keep], dim=-1), F.normalize(student_text[keep], dim=-1)  # (P, Ds)
    tv = F.normalize(teacher_video.detach()[keep].to(sv.dtype), dim=-1)  # (P, Dt)
    tt = F.normalize(teacher_text.detach()[keep].to(sv.dtype), dim=-1)  # (P, Dt)
    if sv.shape[0] == 0:
        return {"distill_relation": (student_video.sum() + student_text.sum()) * 0.0}
    s_logits = sv @ st.T / temperature  # (P, P): videos x texts
    t_logits = tv @ tt.T / temperature  # (P, P)
    v2t = _kl_rows(s_logits, t_logits).mean()
    t2v = _kl_rows(s_logits.T, t_logits.T).mean()
    return {"distill_relation": 0.5 * (v2t + t2v)}


def label_distillation(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                       temperature: float = 1.0, mask: torch.Tensor | None = None,
                       form: Literal["sigmoid", "softmax"] = "sigmoid") -> dict[str, torch.Tensor]:
    """Label distillation: the student's label logits against the teacher's probabilities.

    Args:
        student: head name (``hashtag``, ``query``) -> ``(B, N)`` student logits.
        teacher: the same names -> ``(B, N)`` teacher logits (detached here).
        temperature: both models' logits are divided by it (> 0); higher = softer targets.
        mask: ``(B,)`` bools; ``False`` rows are left out.
        form: ``sigmoid`` (independent labels, the heads trained with BCE): with
            ``p = sigmoid(z_t / T)`` and ``q = sigmoid(z_s / T)``, the binary KL
            ``p log(p/q) + (1-p) log((1-p)/(1-q))`` averaged over the ``N`` labels (= the BCE of ``q``
            against ``p`` minus the entropy of ``p``: the same gradient, 0 at a match);
            ``softmax`` (one distribution over the labels, the heads trained with soft-target
            cross-entropy): ``KL(softmax(z_t / T) || softmax(z_s / T))``.

    Returns:
        ``{"distill_label": mean over the heads of the mean over the kept rows}``.
    """
    if temperature <= 0:
        raise ValueError(f"label_distillation: temperature must be > 0, got {temperature}")
    if form not in ("sigmoid", "softmax"):
        raise ValueError(f"label_distillation: form must be 'sigmoid' or 'softmax', got {form!r}")
    if not student:
        raise ValueError("label_distillation: no logits given")
    missing = sorted(set(student) - set(teacher))
    if missing:
        raise KeyError(f"label_distillation: the teacher has no {missing} logits (it has {sorted(teacher)})")
    per_head = []
    for name, s in student.items():
        t = teacher[name].detach().to(s.dtype)
        if s.shape != t.shape or s.dim() != 2:
            raise ValueError(f"label_distillation: {name!r} student {tuple(s.shape)} and teacher {tuple(t.shape)} "
                             "logits must both be (B, N) over the same label vocabulary")
        zs, zt = s / temperature, t / temperature  # (B, N)
        if form == "sigmoid":
            log_p, log_1p = F.logsigmoid(zt), F.logsigmoid(-zt)  # (B, N): log p, log (1 - p)
            kl = log_p.exp() * (log_p - F.logsigmoid(zs)) + log_1p.exp() * (log_1p - F.logsigmoid(-zs))  # (B, N)
            rows = kl.mean(dim=-1)  # (B,)
        else:
            rows = _kl_rows(zs, zt)  # (B,)
        keep = _row_mask(s.shape[0], s.device, mask).to(s.dtype)  # (B,)
        per_head.append((rows * keep).sum() / keep.sum().clamp(min=1.0))
    return {"distill_label": torch.stack(per_head).mean()}
