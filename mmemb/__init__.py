"""mmemb: multimodal short-video embeddings.

``mmemb.load(DIR)`` loads an export folder (``mmemb export``) without the training code; it is
imported on first use (:func:`mmemb.export.loader.load`), so ``import mmemb`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from .export.loader import load

        return load
    raise AttributeError(f"module 'mmemb' has no attribute {name!r}")
