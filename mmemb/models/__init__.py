"""Models (plain PyTorch, no Lightning): the typed config, the presets and the embedding model."""

from .config import (AudioConfig, FusionConfig, HeadsConfig, ModelConfig, TextEncoderConfig, VisionConfig,
                     apply_overrides)
from .model import EmbeddingModel, LabelInputs
from .registry import create_model, get_model_config, list_models, register_model
from .text import TextEncoder
from .visual import FrameEncoder, load_vit_weights

__all__ = [
    "ModelConfig",
    "VisionConfig",
    "TextEncoderConfig",
    "AudioConfig",
    "FusionConfig",
    "HeadsConfig",
    "apply_overrides",
    "EmbeddingModel",
    "LabelInputs",
    "FrameEncoder",
    "TextEncoder",
    "load_vit_weights",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
