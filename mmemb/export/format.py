"""The export folder's layout, its format name and version, and reading its ``config.json``.

An export folder (written by :func:`mmemb.export.writer.export_checkpoint`, read by
:func:`mmemb.export.loader.load`)::

    config.json          format name + version, the ModelConfig, preprocessing, files, parity summary
    model.safetensors    the EmbeddingModel's state dict (label-name buffers and tag graph included)
    tokenizer/           the run's tokenizer (tokenizer.json, vocab.txt, mmemb_tokenizer.json)
    labels/hashtags.json the label vocabularies in id order ({"labels", "counts", "min_freq"})
    labels/queries.json
    video_encoder.onnx   frames (+ log-mel) and masks -> ``video`` (dynamic batch)
    text_encoder.onnx    token ids, attention, field ids (+ n-gram ids) -> ``text`` (dynamic batch and lengths)
    parity.json          eager vs safetensors reload vs ONNX Runtime on fixed inputs
    README.md            the model card

This module imports neither Lightning nor the training code (only the standard library): the loader
reads it first to refuse a folder of another format or version with a message naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "TOKENIZER_DIR", "LABELS_DIR",
           "VIDEO_ONNX", "TEXT_ONNX", "PARITY_FILE", "CARD_FILE", "ExportError", "read_json", "read_config",
           "LABEL_KINDS"]

FORMAT_NAME = "mmemb-export"
FORMAT_VERSION = 1  # raise on any change that an older loader would misread

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
LABELS_DIR = "labels"
VIDEO_ONNX = "video_encoder.onnx"
TEXT_ONNX = "text_encoder.onnx"
PARITY_FILE = "parity.json"
CARD_FILE = "README.md"
LABEL_KINDS = ("hashtags", "queries")


class ExportError(InputError):
    """An export folder or one of its files cannot be used (missing, corrupt, another format version,
    a config that does not match the weights); the message names the file."""


def read_json(path: Path) -> Any:
    """The JSON content of ``path``; a missing file or bad JSON is an :class:`ExportError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: missing file of the export folder {path.parent}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of the export folder, checked for the format name and version and the sections
    the loader reads."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such export folder (write one with `mmemb export --ckpt CKPT --out DIR`)")
    path = folder / CONFIG_FILE
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ExportError(f"{path}: not an mmemb export (format {found!r}, expected {FORMAT_NAME!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(f"{path}: export format version {version!r}, but this mmemb reads version "
                          f"{FORMAT_VERSION}; re-export the checkpoint with this mmemb (`mmemb export`) or "
                          f"load it with the mmemb that wrote it ({config.get('mmemb_version', 'unknown')})")
    missing = [k for k in ("model", "preprocessing", "files") if not isinstance(config.get(k), dict)]
    if missing:
        raise ExportError(f"{path}: missing sections {missing}")
    return config
