"""Text tower: a BERT encoder built from a config (never downloaded), field ids as token types."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from .config import TextEncoderConfig

__all__ = ["TextEncoder", "bert_config"]


def bert_config(cfg: TextEncoderConfig) -> BertConfig:
    """The :class:`transformers.BertConfig` of the text tower ``cfg``."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.width,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn_ratio * cfg.width,
        max_position_embeddings=cfg.max_length,
        type_vocab_size=cfg.num_fields,  # token_type_ids = text_field_ids: a learned embedding per field
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        pad_token_id=0,
    )


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` -> token features ``(B, L, width)`` or their mean ``(B, width)``."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.bert = BertModel(bert_config(cfg), add_pooling_layer=False)
        self.max_length = cfg.max_length
        self.num_fields = cfg.num_fields

    def forward_features(self, ids: torch.Tensor, attention: torch.Tensor,
                         field_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token features ``(B, L, W)``."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds the model's text.max_length={self.max_length}; "
                             "raise the model's text.max_length or lower the data's text.max_length")
        if field_ids is not None:
            field_ids = field_ids.clamp(0, self.num_fields - 1)
        out = self.bert(input_ids=ids, attention_mask=attention, token_type_ids=field_ids)
        return out.last_hidden_state  # (B, L, W)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor,
                field_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of the token features over the attended tokens ``(B, W)``."""
        x = self.forward_features(ids, attention, field_ids)  # (B, L, W)
        weights = attention.to(x.dtype).unsqueeze(-1)  # (B, L, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, W)
