"""Text tower: a BERT encoder built from a config (never downloaded), field ids as token types."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .config import ModelConfig

__all__ = ["TextEncoder", "bert_config"]


def bert_config(cfg: ModelConfig) -> BertConfig:
    """The :class:`transformers.BertConfig` of the text tower of ``cfg``."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.text_width,
        num_hidden_layers=cfg.text_depth,
        num_attention_heads=cfg.text_heads,
        intermediate_size=4 * cfg.text_width,
        max_position_embeddings=cfg.text_max_length,
        type_vocab_size=cfg.num_text_fields,  # token_type_ids = text_field_ids: a learned embedding per field
        hidden_dropout_prob=cfg.text_dropout,
        attention_probs_dropout_prob=cfg.text_dropout,
        pad_token_id=0,
    )


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` -> pooled text features ``(B, text_width)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bert = BertModel(bert_config(cfg), add_pooling_layer=False)
        self.pool = cfg.text_pool
        self.max_length = cfg.text_max_length
        self.num_fields = cfg.num_text_fields

    def forward_features(self, ids: torch.Tensor, attention: torch.Tensor,
                         field_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token features ``(B, L, W)``."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds text_max_length={self.max_length}; "
                             "raise the model's text_max_length or lower the data's text.max_length")
        if field_ids is not None:
            field_ids = field_ids.clamp(0, self.num_fields - 1)
        out = self.bert(input_ids=ids, attention_mask=attention, token_type_ids=field_ids)
        return out.last_hidden_state  # (B, L, W)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor,
                field_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.forward_features(ids, attention, field_ids)  # (B, L, W)
        if self.pool == "cls":
            return x[:, 0]  # (B, W)
        weights = attention.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, W)
