"""Models (plain PyTorch, no Lightning): configs, presets and the video-text dual encoder."""

from .config import ModelConfig, ModelOverrides, overrides_dict
from .embedder import VideoTextModel
from .registry import create_model, get_model_config, list_models, register_model
from .text import TextEncoder
from .visual import FrameEncoder, load_vit_weights

__all__ = [
    "ModelConfig",
    "ModelOverrides",
    "overrides_dict",
    "VideoTextModel",
    "FrameEncoder",
    "TextEncoder",
    "load_vit_weights",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
