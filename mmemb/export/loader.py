"""``mmemb.load(DIR)``: an export folder -> a plain ``torch.nn.Module`` plus its preprocessing.

    >>> import mmemb
    >>> m = mmemb.load("exports/teacher")              # runtime="torch" (default) or "onnx"
    >>> q = m.embed_texts(["funny cat", "猫咪搞笑"])      # (2, D) float32, L2-normalised
    >>> v = m.embed_videos(["a.mp4", "b.webm"])         # (2, D); a clip that fails decodes to a zero row
    >>> batch = m.preprocess_clips(["a.mp4"]); v = m.encode_video(batch)   # the two steps apart

Nothing here imports Lightning, the LightningModule or the data module; the weights are read with
``safetensors`` (no pickle). Any problem with the folder (missing or corrupt file, another format
version, a ``config.json`` that does not match the weights) raises :class:`ExportError` naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from .format import (CONFIG_FILE, LABEL_KINDS, LABELS_DIR, TOKENIZER_DIR, WEIGHTS_FILE, ExportError, read_config,
                     read_json)
from .preprocess import Preprocessor

__all__ = ["ExportedModel", "load", "model_config_from_dict", "Runtime", "trim_text_batch"]

log = logging.getLogger(__name__)

Runtime = Literal["torch", "onnx"]


def _dataclass_from(cls: type, values: Any, path: Path, where: str):
    if not isinstance(values, dict):
        raise ExportError(f"{path}: {where} must be an object, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ExportError(f"{path}: {where} has fields this mmemb does not know: {unknown}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{path}: {where}: {exc}") from None


def model_config_from_dict(values: Any, path: Path):
    """The :class:`~mmemb.models.config.ModelConfig` of ``config.json``'s ``model`` section."""
    from ..models.config import PARTS, ModelConfig

    if not isinstance(values, dict):
        raise ExportError(f"{path}: 'model' must be an object")
    parts = {name: _dataclass_from(cls, values.get(name, {}), path, f"model.{name}") for name, cls in PARTS.items()}
    return _dataclass_from(ModelConfig, {**values, **parts}, path, "model")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ExportError(f"{path}: missing file of the export folder {path.parent}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: not a readable safetensors file ({exc})") from None


def build_model(config: dict, folder: Path):
    """The :class:`~mmemb.models.model.EmbeddingModel` of the folder, weights loaded, in eval mode."""
    from ..models.model import EmbeddingModel

    cfg = model_config_from_dict(config["model"], folder / CONFIG_FILE)
    cfg.vision.pretrained_path = None  # the weights file holds the ViT
    state = _read_weights(folder / WEIGHTS_FILE)
    model = EmbeddingModel(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"{folder / WEIGHTS_FILE}: the weights do not match the model of {folder / CONFIG_FILE} "
                          f"({detail[:400]})") from None
    return model.eval()


def _read_labels(folder: Path, files: dict) -> dict[str, list[str]]:
    labels = {}
    for kind in LABEL_KINDS:
        path = folder / files.get(kind, f"{LABELS_DIR}/{kind}.json")
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("labels"), list):
            raise ExportError(f"{path}: expected an object with a 'labels' list")
        labels[kind] = [str(x) for x in data["labels"]]
    return labels


_TOKEN_KEYS = ("text_ids", "text_attention", "text_field_ids")  # (B, L), padded at the end


def trim_text_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its token axis cut after the last attended column and its n-gram axis after the
    last non-padding id (at least one column each); other keys unchanged.

    The preprocessing pads every text to ``max_length`` tokens and ``ngram_max_length`` n-grams, but a
    search query is a few tokens: the padding is masked (attention, the bag's padding id) and
    positions are absolute, so the embeddings are the same, and the encoder does a few tokens' work
    instead of ``max_length``'s."""
    out = dict(batch)
    attention = batch["text_attention"]  # (B, L)
    columns = attention.bool().any(dim=0).nonzero()  # (L', 1)
    length = max(int(columns[-1]) + 1 if len(columns) else 1, 1)
    if length < attention.shape[1]:
        for key in _TOKEN_KEYS:
            out[key] = batch[key][:, :length]  # (B, length)
    ngrams = batch.get("text_ngrams")
    if ngrams is not None:
        columns = (ngrams != 0).any(dim=0).nonzero()  # (G', 1)
        grams = max(int(columns[-1]) + 1 if len(columns) else 1, 1)
        if grams < ngrams.shape[1]:
            out["text_ngrams"] = ngrams[:, :grams]  # (B, grams)
    return out


@dataclass
class ExportedModel:
    """A loaded export: the model (``runtime="torch"``) or ONNX Runtime sessions (``runtime="onnx"``),
    its preprocessing and its label vocabularies.

    Attributes: ``model`` (the :class:`~mmemb.models.model.EmbeddingModel`, a plain ``nn.Module`` in
    eval mode; ``None`` with the onnx runtime), ``preprocessor``, ``config`` (``config.json``),
    ``model_config``, ``hashtags`` / ``queries`` (label names in id order), ``embed_dim``, ``runtime``.
    """

    folder: Path
    config: dict
    model_config: Any  # ModelConfig
    preprocessor: Preprocessor
    hashtags: list[str]
    queries: list[str]
    runtime: Runtime = "torch"
    model: Any = None  # EmbeddingModel with runtime="torch"
    sessions: dict[str, Any] = field(default_factory=dict)  # "video"/"text" -> onnxruntime session
    device: torch.device = torch.device("cpu")
    # whether the text encoder takes any token / n-gram length (the torch model does, and so do ONNX
    # graphs exported with symbolic lengths; older graphs fix them at the preprocessing's lengths): the
    # text batch is then trimmed to its longest row (:func:`trim_text_batch`)
    trim_text: bool = True
    int8_text: bool = False  # the text session runs the int8 graph (mmemb.export.quantize)
    _graph_specs: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def embed_dim(self) -> int:
        return int(self.model_config.embed_dim)

    # ------------------------------------------------------------------ preprocessing

    def preprocess_texts(self, texts: Sequence[str | None], trim: bool = False) -> dict[str, torch.Tensor]:
        """The text batch of single texts (each as the caption field); see :meth:`Preprocessor.texts`
        (``trim``: token and n-gram axes cut at the longest row)."""
        return self.preprocessor.texts(texts, trim)

    def preprocess_clips(self, sources: Sequence[Any]) -> dict[str, Any]:
        """The video batch of clips (paths, bytes, file objects); see :meth:`Preprocessor.clips`."""
        return self.preprocessor.clips(sources)

    def preprocess_records(self, records: Sequence[Any]) -> dict[str, Any]:
        """Both batches of manifest records (:class:`mmemb.data.manifest.VideoRecord`)."""
        return self.preprocessor.records(records)

    # ------------------------------------------------------------------ encoders

    def _run(self, name: str, batch: dict[str, Any]) -> torch.Tensor:
        spec = self._specs()[name]
        missing = [n for n in spec.input_names if n not in batch]
        if missing:
            raise KeyError(f"the {name} encoder needs the batch keys {missing}")
        if name == "text" and self.trim_text:
            batch = trim_text_batch(batch)
        if self.runtime == "onnx":
            from .parity import run_onnx

            return torch.from_numpy(run_onnx(self.sessions[name], spec, batch))
        inputs = {n: batch[n].to(self.device) for n in spec.input_names}
        with torch.inference_mode():
            if name == "video":
                return self.model.encode_video(inputs).float().cpu()
            return self.model.encode_text(inputs).float().cpu()

    def _specs(self) -> dict[str, Any]:
        from .graphs import graph_specs

        if self._graph_specs is None:
            self._graph_specs = graph_specs(self.model_config)
        return self._graph_specs

    def encode_video(self, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, D)`` L2-normalised video embeddings of a :meth:`preprocess_clips` batch; zero rows where
        neither frames nor audio are available (their masks say so)."""
        return self._run("video", batch)

    def encode_text(self, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, D)`` L2-normalised text embeddings of a :meth:`preprocess_texts` batch; zero rows without text."""
        return self._run("text", batch)

    def embed_texts(self, texts: Sequence[str | None]) -> torch.Tensor:
        """``(B, D)``: :meth:`preprocess_texts` then :meth:`encode_text`. With ONNX Runtime and a graph of
        symbolic lengths, the texts go straight into numpy arrays of the batch's longest row and to the
        session (the search-query path: no padding, no tensors, no trimming afterwards)."""
        if self.runtime == "onnx" and self.trim_text:
            prep = self.preprocessor
            arrays = prep.text_arrays(prep.single_text_rows(texts), trim=True)
            spec = self._specs()["text"]
            feed = {name: arrays[name] for name in spec.input_names}
            return torch.from_numpy(self.sessions["text"].run([spec.output], feed)[0])  # (B, D)
        return self.encode_text(self.preprocess_texts(texts, trim=self.trim_text))

    def embed_videos(self, sources: Sequence[Any]) -> torch.Tensor:
        """``(B, D)``: :meth:`preprocess_clips` then :meth:`encode_video`."""
        return self.encode_video(self.preprocess_clips(sources))

    def to(self, device: str | torch.device) -> "ExportedModel":
        """Move the torch model to ``device`` (the onnx runtime stays on the CPU)."""
        self.device = torch.device(device)
        if self.model is not None:
            self.model.to(self.device)
        return self


def load(folder: str | Path, runtime: Runtime = "torch", device: str | torch.device = "cpu",
         threads: int | None = None, int8_text: bool = False) -> ExportedModel:
    """Load the export folder ``folder`` (written by ``mmemb export``).

    ``runtime="torch"``: the :class:`~mmemb.models.model.EmbeddingModel` with the safetensors weights
    (on ``device``); ``runtime="onnx"``: ONNX Runtime CPU sessions of ``video_encoder.onnx`` and
    ``text_encoder.onnx`` (``threads`` intra-op threads each, default 1); with ``int8_text`` the text
    session runs the int8 graph (``text_encoder.int8.onnx``, written by ``mmemb export --int8-text``; its
    embeddings differ from the float model's, see :mod:`mmemb.export.quantize`). Raises
    :class:`ExportError` naming the file for a folder that cannot be used."""
    from ..data.decode import DecodeConfig
    from ..data.text import TextTokenizer, TokenizerError
    from ..data.vocab import TextConfig

    if runtime not in ("torch", "onnx"):
        raise ExportError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if int8_text and runtime != "onnx":
        raise ExportError("int8_text runs the int8 text graph in ONNX Runtime: use runtime='onnx'")
    folder = Path(folder)
    config = read_config(folder)
    path = folder / CONFIG_FILE
    files = config["files"]
    prep = config["preprocessing"]
    decode = _dataclass_from(DecodeConfig, prep.get("decode"), path, "preprocessing.decode")
    text = _dataclass_from(TextConfig, prep.get("text"), path, "preprocessing.text")
    model_config = model_config_from_dict(config["model"], path)
    tok_dir = folder / files.get("tokenizer", TOKENIZER_DIR)
    try:
        tokenizer = TextTokenizer.load(tok_dir)
    except FileNotFoundError as exc:
        raise ExportError(f"{exc}: missing file of the export folder {folder}") from None
    except TokenizerError as exc:
        raise ExportError(str(exc)) from None
    if tokenizer.vocab_size != model_config.text.vocab_size:
        raise ExportError(f"{tok_dir}: the tokenizer has {tokenizer.vocab_size} tokens but {path} says "
                          f"text.vocab_size={model_config.text.vocab_size}")
    labels = _read_labels(folder, files)
    preprocessor = Preprocessor(decode, text, tokenizer, use_audio=model_config.use_audio,
                                use_ngrams=model_config.has_ngram_bag)
    out = ExportedModel(folder, config, model_config, preprocessor, labels["hashtags"], labels["queries"], runtime)
    if runtime == "torch":
        out.model = build_model(config, folder)
        out.to(device)
    else:
        from .graphs import graph_specs, legacy_video_spec
        from .parity import onnx_session

        specs = graph_specs(model_config)
        out._graph_specs = specs  # the sessions' inputs (an older video graph lacks mel_valid)
        for name, spec in list(specs.items()):
            onnx_path = folder / files.get(f"{name}_encoder", spec.file)
            if name == "text" and int8_text:
                if "text_encoder_int8" not in files:
                    raise ExportError(f"{path}: this export has no int8 text graph (export it with "
                                      f"`mmemb export --int8-text`)")
                onnx_path = folder / files["text_encoder_int8"]
                out.int8_text = True
            if not onnx_path.is_file():
                raise ExportError(f"{onnx_path}: missing file of the export folder {folder}")
            try:
                session = onnx_session(onnx_path, threads or 1)
            except Exception as exc:  # onnxruntime raises its own exception types for a bad graph
                raise ExportError(f"{onnx_path}: not a loadable ONNX graph ({' '.join(str(exc).split())[:300]})") \
                    from None
            names = [i.name for i in session.get_inputs()]
            if name == "video" and names != spec.input_names and names == legacy_video_spec(spec).input_names:
                log.warning("%s: exported before the graph took mel_valid: a clip shorter than the audio window "
                            "is read with its zero padding unmasked (re-export it with `mmemb export`)", onnx_path)
                spec = specs["video"] = legacy_video_spec(spec)
            if names != spec.input_names:
                raise ExportError(f"{onnx_path}: graph inputs {names} do not match the model of {path} "
                                  f"({spec.input_names})")
            out.sessions[name] = session
            if name == "text":  # a graph with fixed lengths (an older export) needs the padded batch
                out.trim_text = all(isinstance(i.shape[1], str) for i in session.get_inputs())
    return out
