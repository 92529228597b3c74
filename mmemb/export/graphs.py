"""The two encoders of an :class:`~mmemb.models.model.EmbeddingModel` as plain modules of tensors, their
ONNX export (dynamic batch axis, and token / n-gram lengths) and fixed example inputs.

* :class:`VideoEncoder`: ``frames`` uint8 ``(B, T, 3, S, S)``, ``video_mask`` bool ``(B,)`` and, with
  an audio tower, ``mel`` float32 ``(B, M, F)``, ``audio_mask`` bool ``(B,)`` and ``mel_valid`` int64
  ``(B,)`` (log-mel frames from real audio: a clip shorter than the window is zero-padded, and the
  padding is masked as in training; exports before it lack this input, see :func:`legacy_video_spec`) -> ``video``
  ``(B, D)`` (:meth:`EmbeddingModel.encode_video`: L2-normalised, zero rows where nothing is available);
* :class:`TextEncoder`: ``text_ids``, ``text_attention``, ``text_field_ids`` int64 ``(B, L)`` and,
  with the n-gram bag, ``text_ngrams`` int64 ``(B, G)`` -> ``text`` ``(B, D)``
  (:meth:`EmbeddingModel.encode_text`; a row without attended tokens is a zero row).

The frames are normalised inside the graph (ImageNet mean/std), so the graph takes decoded uint8 RGB.
Graphs are exported by ``torch.onnx.export(dynamo=True)`` (``torch.export``): the TorchScript exporter
does not handle the audio tower's in-place mask update.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.config import ModelConfig
from ..models.model import EmbeddingModel

__all__ = ["GraphSpec", "VideoEncoder", "TextEncoder", "graph_specs", "legacy_video_spec", "example_inputs",
           "export_onnx",
           "eager_attention", "OPSET"]

OPSET = 18


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its file, inputs (names in call order, dtypes, symbolic shapes) and output."""

    file: str
    inputs: tuple[tuple[str, str, tuple[str, ...]], ...]  # (name, dtype, shape symbols)
    output: str

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.inputs]

    def as_dict(self) -> dict:
        return {"file": self.file, "output": self.output,
                "inputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in self.inputs]}


def graph_specs(cfg: ModelConfig) -> dict[str, GraphSpec]:
    """``{"video": ..., "text": ...}``: the graphs of a model of config ``cfg``."""
    video = [("frames", "uint8", ("B", "T", "3", "S", "S")), ("video_mask", "bool", ("B",))]
    if cfg.use_audio:
        video += [("mel", "float32", ("B", "M", "F")), ("audio_mask", "bool", ("B",)), ("mel_valid", "int64", ("B",))]
    text = [("text_ids", "int64", ("B", "L")), ("text_attention", "int64", ("B", "L")),
            ("text_field_ids", "int64", ("B", "L"))]
    if cfg.has_ngram_bag:
        text.append(("text_ngrams", "int64", ("B", "G")))
    return {"video": GraphSpec("video_encoder.onnx", tuple(video), "video"),
            "text": GraphSpec("text_encoder.onnx", tuple(text), "text")}


def legacy_video_spec(spec: GraphSpec) -> GraphSpec:
    """The video graph of an export made before ``mel_valid`` was an input: the same without it (such a
    graph reads a clip shorter than the audio window with its zero padding unmasked)."""
    return GraphSpec(spec.file, tuple(i for i in spec.inputs if i[0] != "mel_valid"), spec.output)


class VideoEncoder(nn.Module):
    """``EmbeddingModel.encode_video`` as a function of tensors (the inputs of ``graph_specs(cfg)["video"]``)."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, video_mask: torch.Tensor, mel: torch.Tensor | None = None,
                audio_mask: torch.Tensor | None = None, mel_valid: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"frames": frames, "video_mask": video_mask}
        if mel is not None:
            batch.update(mel=mel, audio_mask=audio_mask)
        if mel_valid is not None:
            batch["mel_valid"] = mel_valid
        return self.model.encode_video(batch)  # (B, D)


class TextEncoder(nn.Module):
    """``EmbeddingModel.encode_text`` as a function of tensors (the inputs of ``graph_specs(cfg)["text"]``)."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, text_ids: torch.Tensor, text_attention: torch.Tensor, text_field_ids: torch.Tensor,
                text_ngrams: torch.Tensor | None = None) -> torch.Tensor:
        batch = {"text_ids": text_ids, "text_attention": text_attention, "text_field_ids": text_field_ids}
        if text_ngrams is not None:
            batch["text_ngrams"] = text_ngrams
        return self.model.encode_text(batch)  # (B, D)


def encoder_modules(model: EmbeddingModel) -> dict[str, nn.Module]:
    """``{"video": VideoEncoder, "text": TextEncoder}`` of ``model``."""
    return {"video": VideoEncoder(model), "text": TextEncoder(model)}


def example_inputs(cfg: ModelConfig, sizes: dict[str, int], batch: int,
                   seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Fixed inputs of both graphs (``{"video": {name: tensor}, "text": {...}}``), the same for a given
    ``seed`` and ``batch``: random uint8 frames and log-mel, random token and n-gram ids with varied
    lengths; with ``batch >= 3`` the second row lacks audio (and its text), the third its video, so the
    masking paths are compared too. ``sizes``: ``T``, ``S``, ``M``, ``F``, ``L``, ``G`` (frames, frame
    side, mel bands, mel frames, tokens, n-grams). With audio, the first row's log-mel is half padding
    (``mel_valid`` F/2), so the padding mask is compared too."""
    g = torch.Generator().manual_seed(seed * 1000 + batch)
    t, s, m, f, length, grams = (sizes[k] for k in ("T", "S", "M", "F", "L", "G"))
    video = {"frames": torch.randint(0, 256, (batch, t, 3, s, s), generator=g, dtype=torch.uint8),
             "video_mask": torch.ones(batch, dtype=torch.bool)}
    if cfg.use_audio:
        video["mel"] = torch.randn(batch, m, f, generator=g) * 2 - 6  # log-mel-like values
        video["audio_mask"] = torch.ones(batch, dtype=torch.bool)
        video["mel_valid"] = torch.full((batch,), f, dtype=torch.long)
        video["mel_valid"][0] = max(1, f // 2)  # the first clip shorter than the window: half is padding
    vocab = cfg.text.vocab_size
    ids = torch.randint(5, vocab, (batch, length), generator=g) if vocab > 5 else torch.ones(batch, length,
                                                                                               dtype=torch.long)
    lengths = torch.randint(2, length + 1, (batch,), generator=g)  # (B,)
    attention = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (B, L)
    fields = torch.randint(1, cfg.text.num_fields, (batch, length), generator=g) if cfg.text.num_fields > 1 else \
        torch.zeros(batch, length, dtype=torch.long)
    text = {"text_ids": ids * attention, "text_attention": attention, "text_field_ids": fields * attention}
    if cfg.has_ngram_bag:
        ngram_len = torch.randint(1, grams + 1, (batch,), generator=g)  # (B,)
        keep = (torch.arange(grams).unsqueeze(0) < ngram_len.unsqueeze(1)).long()  # (B, G)
        text["text_ngrams"] = torch.randint(1, cfg.text.ngram_buckets + 1, (batch, grams), generator=g) * keep
    if batch >= 3:
        if cfg.use_audio:
            video["audio_mask"][1] = False
        video["video_mask"][2] = False
        video["frames"][2] = 0
        for key in text:
            text[key][1] = 0  # a row without text
    return {"video": video, "text": text}


# Axes that stay symbolic in the graphs: the batch, and the text's token and n-gram lengths (a search
# query is a few tokens: the text graph runs on the batch trimmed to its longest row, see
# mmemb.export.loader.trim_text_batch); frame count and size, mel size are fixed by the preprocessing.
_DYNAMIC_AXES = {"B": ("batch", 65536), "L": ("tokens", 65536), "G": ("ngrams", 65536)}


@contextlib.contextmanager
def eager_attention(model: EmbeddingModel):
    """The text tower's attention as plain matmuls and a softmax for the duration (Hugging Face's
    ``eager`` implementation instead of SDPA; the same function). Its ONNX graph has fewer nodes (165
    instead of 189 for 2 layers), and a search query's time in ONNX Runtime is mostly per-node overhead.
    A transformers version that cannot switch leaves the attention as it is."""
    bert = model.text.bert
    setter = getattr(bert, "set_attn_implementation", None)
    previous = getattr(bert.config, "_attn_implementation", None)
    if setter is None or previous in (None, "eager"):
        yield
        return
    setter("eager")
    try:
        yield
    finally:
        setter(previous)


def export_onnx(model: EmbeddingModel, name: str, inputs: dict[str, torch.Tensor], spec: GraphSpec,
                path: Path) -> Path:
    """Export the ``name`` encoder of ``model`` (``"video"`` or ``"text"``) to ``path`` with dynamic batch,
    token and n-gram axes, tracing it on ``inputs`` (batch >= 2, the preprocessing's full lengths)."""
    module = encoder_modules(model)[name].eval()
    args = tuple(inputs[n] for n in spec.input_names)
    if args[0].shape[0] < 2:
        raise ValueError("trace the ONNX graphs on a batch of >= 2 rows (a batch of 1 specialises the batch axis)")
    dims = {symbol: torch.export.Dim(name, min=1, max=high) for symbol, (name, high) in _DYNAMIC_AXES.items()}
    dynamic = tuple({axis: dims[symbol] for axis, symbol in enumerate(shape) if symbol in dims}
                    for _, _, shape in spec.inputs)
    path = Path(path)
    chatter = io.StringIO()  # the exporter prints its steps and optimiser notes; errors still raise
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter), \
            contextlib.redirect_stderr(chatter), eager_attention(model):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # the ONNX optimiser logs notes (skipped constant folding) as warnings
        try:
            torch.onnx.export(module, args, str(path), input_names=spec.input_names, output_names=[spec.output],
                              dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True, external_data=False,
                              verbose=False)
        finally:
            logging.disable(logging.NOTSET)
    return path
