"""Loss functions of tensors returning named terms (no Lightning). Distillation: :mod:`.distill`."""

from .distill import DISTILL_TERMS, embedding_alignment, label_distillation, relational_kl

__all__ = ["DISTILL_TERMS", "embedding_alignment", "relational_kl", "label_distillation"]
