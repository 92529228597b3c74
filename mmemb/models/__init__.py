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
    "TeacherConfig",
    "TeacherModel",
    "LabelInputs",
    "create_teacher",
    "get_teacher_config",
    "list_teachers",
    "register_teacher",
]

# The teacher (issue #3) imports torch_geometric (slow to import): its names load on first use.
_LAZY = {
    "TeacherConfig": ".teacher", "TeacherModel": ".teacher", "LabelInputs": ".teacher",
    "create_teacher": ".teacher_registry", "get_teacher_config": ".teacher_registry",
    "list_teachers": ".teacher_registry", "register_teacher": ".teacher_registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
