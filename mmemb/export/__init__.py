"""Export a checkpoint into a self-contained folder and load it without the training code.

* :func:`export_checkpoint` (``mmemb export --ckpt CKPT --out DIR``): weights (safetensors),
  ``config.json``, tokenizer, label vocabularies, ONNX graphs of the video and text encoders, a parity
  report and a model card (:mod:`.writer`, :mod:`.graphs`, :mod:`.parity`, :mod:`.card`);
* :func:`load` (also ``mmemb.load``): the folder -> :class:`ExportedModel`, a plain ``torch.nn.Module``
  (or ONNX Runtime sessions) plus its preprocessing (:mod:`.loader`, :mod:`.preprocess`).

Nothing in this package imports Lightning. Names are imported on first use, so that
``import mmemb.export`` stays light and loading never pulls in the export machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["export_checkpoint", "load", "ExportedModel", "ExportError", "FORMAT_NAME", "FORMAT_VERSION"]

_WHERE = {"export_checkpoint": ".writer", "load": ".loader", "ExportedModel": ".loader", "ExportError": ".format",
          "FORMAT_NAME": ".format", "FORMAT_VERSION": ".format"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
