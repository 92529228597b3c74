"""Distributed strategies for the teacher that a YAML config can name.

FSDP needs to know which modules to shard as units (and, optionally, to recompute in backward); a
set of module classes cannot be written in YAML, so :class:`TeacherFSDPStrategy` fills them in with
the teacher's transformer blocks:

.. code-block:: yaml

    trainer:
      strategy:
        class_path: mmemb.lit.strategies.TeacherFSDPStrategy
        init_args:
          sharding_strategy: FULL_SHARD
          checkpoint_blocks: true

DDP needs nothing of the kind: ``trainer.strategy: ddp`` (see ``configs/strategies/``).
"""

from __future__ import annotations

from typing import Any, Literal

from pytorch_lightning.strategies import FSDPStrategy
from torch import nn

__all__ = ["teacher_blocks", "TeacherFSDPStrategy"]


def teacher_blocks() -> set[type[nn.Module]]:
    """The teacher's repeated blocks: timm ViT blocks, BERT layers, the audio tower's transformer
    layers and the fusion's cross-attention blocks."""
    from timm.models.vision_transformer import Block
    from transformers.models.bert.modeling_bert import BertLayer

    from ..models.fusion import CrossAttentionBlock

    return {Block, BertLayer, nn.TransformerEncoderLayer, CrossAttentionBlock}


class TeacherFSDPStrategy(FSDPStrategy):
    """:class:`~pytorch_lightning.strategies.FSDPStrategy` that wraps each of :func:`teacher_blocks`
    as an FSDP unit.

    Args:
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2), ``NO_SHARD`` (DDP-like)
            or ``HYBRID_SHARD``.
        checkpoint_blocks: recompute the blocks in backward (activation checkpointing).
        state_dict_type: ``full`` (one checkpoint file, loadable without FSDP) or ``sharded``.
        **kwargs: any other :class:`FSDPStrategy` argument.
    """

    def __init__(self, sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"]
                 = "FULL_SHARD", checkpoint_blocks: bool = False,
                 state_dict_type: Literal["full", "sharded"] = "full", **kwargs: Any) -> None:
        blocks = teacher_blocks()
        if kwargs.get("auto_wrap_policy") is None:  # (the CLI passes the parent's defaults, None, explicitly)
            kwargs["auto_wrap_policy"] = blocks
        if checkpoint_blocks and kwargs.get("activation_checkpointing_policy") is None:
            kwargs["activation_checkpointing_policy"] = blocks
        super().__init__(sharding_strategy=sharding_strategy, state_dict_type=state_dict_type, **kwargs)
