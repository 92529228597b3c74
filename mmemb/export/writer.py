"""``mmemb export``: a checkpoint of any preset -> a self-contained export folder (see
:mod:`mmemb.export.format` for its layout).

Steps: read the checkpoint (``torch.load(weights_only=True)``, earlier layouts upgraded by
:func:`mmemb.models.checkpoint.read_checkpoint`, which imports no Lightning), rebuild its
:class:`~mmemb.models.model.EmbeddingModel` from the preset and the hyper-parameters, find the run's
``config.yaml`` (decode and text settings) and vocabularies, check that they fit the model, then write
the weights (safetensors), the tokenizer, the label vocabularies, the two ONNX graphs, ``parity.json``
(:mod:`mmemb.export.parity`), ``config.json`` and the model card. A parity check over the tolerance
fails the export (:class:`ExportError`, after ``parity.json`` is written; no ``config.json`` then, so
the folder does not load).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..models.config import ModelConfig, apply_overrides
from ..models.model import EmbeddingModel
from ..models.registry import get_model_config
from .format import (CARD_FILE, CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION, LABELS_DIR, PARITY_FILE, TEXT_ONNX,
                     TOKENIZER_DIR, VIDEO_ONNX, WEIGHTS_FILE, ExportError)
from .graphs import OPSET, example_inputs, export_onnx, graph_specs
from .quantize import INT8_TEXT_ONNX, MIN_COSINE, int8_report, quantize_text_graph

__all__ = ["export_checkpoint", "model_from_checkpoint", "model_config_from_hparams"]

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_config_from_hparams(hparams: dict[str, Any]) -> ModelConfig:
    """The model config a LightningModule of these hyper-parameters builds: the preset with its
    ``overrides`` and the sizes linked from the data (``vocab_size``, ``num_hashtags``, ``num_queries``,
    ``ngram_buckets``), as :class:`mmemb.lit.module.EmbeddingModule` does."""
    preset = hparams.get("preset")
    if not preset:
        raise ValueError("the checkpoint's hyper-parameters name no model preset")
    linked: dict[str, Any] = {"text": {"vocab_size": int(hparams.get("vocab_size", 8000))},
                              "heads": {"num_hashtags": int(hparams.get("num_hashtags", 0)),
                                        "num_queries": int(hparams.get("num_queries", 0))}}
    if hparams.get("ngram_buckets") is not None:
        linked["text"]["ngram_buckets"] = int(hparams["ngram_buckets"])
    return apply_overrides(get_model_config(str(preset), **dict(hparams.get("overrides") or {})), linked)


def model_from_checkpoint(ckpt: Path) -> tuple[EmbeddingModel, dict[str, Any]]:
    """The checkpoint's :class:`EmbeddingModel` (weights of its ``model.`` keys, eval mode) and its
    hyper-parameters."""
    from ..models.checkpoint import read_checkpoint  # torch and mmemb.models only, no Lightning

    try:
        hparams, state = read_checkpoint(str(ckpt))
    except (ValueError, KeyError, RuntimeError, EOFError, OSError) as exc:
        raise ExportError(f"{ckpt}: not a readable mmemb checkpoint ({' '.join(str(exc).split())[:300]})") from None
    try:
        cfg = model_config_from_hparams(hparams)
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{ckpt}: its hyper-parameters do not give a model: {exc}") from None
    cfg.vision.pretrained_path = None  # the checkpoint holds the ViT weights
    model = EmbeddingModel(cfg)
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    for name in ("video_attention", "text_attention"):  # channel attention over one channel: not built
        if getattr(model, name) is None:
            weights = {k: v for k, v in weights.items() if not k.startswith(f"{name}.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{ckpt}: its weights do not fit the preset {hparams.get('preset')!r} "
                          f"({' '.join(str(exc).split())[:300]})") from None
    return model.eval(), hparams


def _data_section(config: dict) -> dict:
    data = dict(config.get("data") or {})
    if "init_args" in data:  # subclass-mode layout
        data = dict(data["init_args"])
    return data


def _config_part(cls: type, values: Any, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ExportError(f"{where} must be a mapping, got {type(values).__name__}")
    if "init_args" in values:
        values = values["init_args"]
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def _check_fit(cfg: ModelConfig, decode, text, tokenizer, labels: dict[str, Any], where: str) -> None:
    """The run's data settings and vocabularies against the model: an :class:`ExportError` naming the
    mismatch."""
    problems = []
    if decode.frame_size != cfg.vision.frame_size:
        problems.append(f"data.decode.frame_size={decode.frame_size} but vision.frame_size={cfg.vision.frame_size}")
    if cfg.use_audio:
        if decode.n_mels != cfg.audio.n_mels:
            problems.append(f"data.decode.n_mels={decode.n_mels} but audio.n_mels={cfg.audio.n_mels}")
        tokens = -(-decode.mel_frames // cfg.audio.patch_frames)
        if tokens > cfg.audio.max_tokens:
            problems.append(f"{decode.mel_frames} log-mel frames make {tokens} audio tokens > audio.max_tokens="
                            f"{cfg.audio.max_tokens}")
    if text.max_length > cfg.text.max_length:
        problems.append(f"data.text.max_length={text.max_length} > text.max_length={cfg.text.max_length}")
    if cfg.has_ngram_bag and text.ngram_buckets != cfg.text.ngram_buckets:
        problems.append(f"data.text.ngram_buckets={text.ngram_buckets} but text.ngram_buckets="
                        f"{cfg.text.ngram_buckets}")
    if tokenizer.vocab_size != cfg.text.vocab_size:
        problems.append(f"the tokenizer has {tokenizer.vocab_size} tokens but text.vocab_size={cfg.text.vocab_size}")
    for kind, head, size in (("hashtags", cfg.has_hashtag_head, cfg.heads.num_hashtags),
                             ("queries", cfg.has_query_head, cfg.heads.num_queries)):
        if head and len(labels[kind]) != size:
            problems.append(f"the vocabulary has {len(labels[kind])} {kind} but the model's head {size}")
    if problems:
        raise ExportError(f"{where}: the run's data does not fit the checkpoint's model: " + "; ".join(problems))


def _preprocessing(cfg: ModelConfig, decode, text) -> dict[str, Any]:
    """``config.json``'s ``preprocessing`` section: the decode and text configs (what the loader
    rebuilds) and the facts a reimplementation needs, spelled out."""
    from ..models.visual import IMAGENET_MEAN, IMAGENET_STD
    from .preprocess import TEXT_FIELDS

    return {
        "decode": dataclasses.asdict(decode),
        "text": dataclasses.asdict(text),
        "frames": {"num_frames": decode.num_frames, "size": decode.frame_size, "resize_policy": decode.resize_policy,
                   "sampling": "uniform: T frame times evenly spaced over the clip (evaluation mode)",
                   "dtype": "uint8 RGB, layout (B, T, 3, S, S); normalised inside the model/graph",
                   "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                   "normalisation": "(x / 255 - mean) / std per channel"},
        "audio": None if not cfg.use_audio else {
            "sample_rate": decode.sample_rate, "channels": 1, "n_mels": decode.n_mels,
            "window_seconds": decode.audio_seconds, "win_ms": decode.win_ms, "hop_ms": decode.hop_ms,
            "n_fft": decode.n_fft, "win_length": decode.win_length, "hop_length": decode.hop_length,
            "mel_frames": decode.mel_frames, "log": "log(mel + 1e-6)",
            "window": "centred in the clip (evaluation mode); shorter audio zero-padded at the end",
            "mel_valid": "int64 (B,) input of the video graph: the log-mel frames from real audio "
                         "(samples // hop_length + 1, at most mel_frames); the padding after it is masked"},
        "tokenizer": {"files": TOKENIZER_DIR, "kind": "WordPiece (NFKC + BERT normaliser, lowercased, CJK split)",
                      "max_length": text.max_length, "fields": list(TEXT_FIELDS),
                      "layout": "[CLS] field [SEP] field [SEP] ...; field ids 0 for [CLS]/padding, 1 + field index",
                      "single_text": "a raw text (query) is the caption field"},
        "ngrams": None if not cfg.has_ngram_bag else {
            "n": text.ngram_n, "min_n": text.ngram_lengths[0], "buckets": text.ngram_buckets,
            "max_length": text.ngram_max_length,
            "hash": "BLAKE2b-64 (digest_size 8, salt = 8 zero bytes) of the UTF-8 n-gram, little-endian, modulo "
                    "buckets (mmemb.data.text.stable_hash / hash_field_ngrams)",
            "ids": "bucket + 1, 0-padded"},
        "embedding": {"dim": cfg.embed_dim, "normalisation": "L2 (unit norm)",
                      "missing": "zero row from the encoders where nothing is available"},
    }


def _gram_lengths(text) -> str:
    """``"3"`` or ``"1-3"``: the n-gram lengths of a :class:`TextConfig`."""
    low, high = text.ngram_lengths
    return f"{low}-{high}" if low != high else str(high)


def _count_manifest(path: str | None) -> int | None:
    if not path or not Path(path).exists():
        return None
    try:
        from ..data.manifest import read_manifest

        return len(read_manifest(path, strict=False))
    except Exception:  # noqa: BLE001 - the card then says the count is unknown
        return None


def _metrics(ckpt: Path) -> tuple[str | None, str | None]:
    path = ckpt.parent / "metrics.json"
    if not path.exists():
        return None, None
    try:
        from ..eval.checkpoint import markdown_table, nan_metrics

        data = json.loads(path.read_text(encoding="utf-8"))
        return markdown_table(nan_metrics(data["metrics"])), str(data.get("split", "test"))
    except (ValueError, KeyError, TypeError):
        return None, None


def _towers(cfg: ModelConfig) -> list[str]:
    v = cfg.vision
    video = f"video: ViT ({v.depth} blocks, width {v.width}, {v.frame_size} px frames, {v.temporal_pool} pooling)"
    if cfg.use_audio:
        video += f" + log-mel audio tower ({cfg.audio.depth} layers, width {cfg.audio.width})"
    text = f"text: BERT ({cfg.text.depth} layers, width {cfg.text.width})"
    if cfg.has_ngram_bag:
        text += f" + hashed char-n-gram bag ({cfg.text.ngram_buckets} buckets)"
    return [video, text]


def export_checkpoint(ckpt: str | Path, out: str | Path, config_path: str | Path | None = None,
                      vocab_dir: str | Path | None = None, progress: Progress | None = _stderr,
                      int8_text: bool = False) -> dict[str, Any]:
    """Export the checkpoint ``ckpt`` (a file, or a run folder: its best checkpoint) into the folder
    ``out``; ``config_path`` / ``vocab_dir`` default to the run's (found beside the checkpoint);
    ``int8_text`` also writes the int8 text graph (:mod:`mmemb.export.quantize`). Returns
    ``{"out", "files", "parity"}``; raises :class:`ExportError` (one line naming the file) for a
    missing or unusable input and when parity (or the int8 graph's check) fails."""
    import yaml

    from ..data.decode import DecodeConfig
    from ..data.labels import LabelVocab
    from ..data.text import TextTokenizer, TokenizerError
    from ..data.vocab import TextConfig
    from ..eval.loading import find_config, find_vocab_dir, resolve_checkpoint
    from .parity import onnx_session, parity_report

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    try:
        ckpt = resolve_checkpoint(ckpt)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from None
    say(f"[1/6] reading {ckpt}")
    model, hparams = model_from_checkpoint(ckpt)
    cfg = model.cfg
    try:
        config_path = Path(config_path) if config_path is not None else find_config(ckpt)
    except FileNotFoundError:
        raise ExportError(f"{ckpt}: no config.yaml of its run above it (the decode and text settings); pass "
                          f"--config") from None
    if not config_path.is_file():
        raise ExportError(f"{config_path}: no such run config")
    try:
        run_config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ExportError(f"{config_path}: not valid YAML ({' '.join(str(exc).split())})") from None
    data = _data_section(run_config)
    try:
        decode = _config_part(DecodeConfig, data.get("decode"), f"{config_path}: data.decode")
        text = _config_part(TextConfig, data.get("text"), f"{config_path}: data.text")
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{config_path}: {exc}") from None
    vocab_dir = Path(vocab_dir) if vocab_dir is not None else find_vocab_dir(ckpt, run_config)
    if vocab_dir is None or not (Path(vocab_dir) / "vocab.json").exists():
        raise ExportError(f"{ckpt}: no vocabulary of its run found (looked for vocab/vocab.json above it and in "
                          f"{config_path}'s data.vocab_dir); pass --vocab")
    vocab_dir = Path(vocab_dir)
    try:
        tokenizer = TextTokenizer.load(vocab_dir / "tokenizer")
        labels = {kind: LabelVocab.load(vocab_dir / f"{kind}.json") for kind in ("hashtags", "queries")}
    except TokenizerError as exc:
        raise ExportError(str(exc)) from None
    except (ValueError, KeyError) as exc:
        raise ExportError(f"{vocab_dir}: unreadable label vocabulary ({exc})") from None
    _check_fit(cfg, decode, text, tokenizer, {k: v.labels for k, v in labels.items()}, f"{ckpt} with {config_path}")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)  # a folder is loadable only once its export has passed
    say(f"[2/6] writing weights, tokenizer and label vocabularies to {out}")
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    tokenizer.save(out / TOKENIZER_DIR)
    for kind, vocab in labels.items():
        (out / LABELS_DIR).mkdir(exist_ok=True)
        vocab.save(out / LABELS_DIR / f"{kind}.json")

    specs = graph_specs(cfg)
    sizes = {"T": decode.num_frames, "S": decode.frame_size, "M": decode.n_mels, "F": decode.mel_frames,
             "L": text.max_length, "G": text.ngram_max_length}
    trace = example_inputs(cfg, sizes, batch=2, seed=1)
    for step, name in ((3, "video"), (4, "text")):
        say(f"[{step}/6] exporting {specs[name].file} (ONNX opset {OPSET}, dynamic axes)")
        export_onnx(model, name, trace[name], specs[name], out / specs[name].file)

    say("[5/6] parity: safetensors reload and ONNX Runtime vs the checkpoint's eager model")
    from .loader import build_model

    reloaded = build_model({"model": _model_dict(cfg)}, out)
    sessions = {name: onnx_session(out / spec.file) for name, spec in specs.items()}
    parity = parity_report(model, reloaded, specs, sessions, sizes, progress=say)
    (out / INT8_TEXT_ONNX).unlink(missing_ok=True)  # an earlier export's int8 graph is not this model's
    if int8_text:
        quantize_text_graph(out / specs["text"].file, out / INT8_TEXT_ONNX)
        parity["int8_text"] = int8_report(sessions["text"], onnx_session(out / INT8_TEXT_ONNX), specs["text"], cfg,
                                          sizes)
        say(f"int8 text graph {INT8_TEXT_ONNX}: lowest cosine to the float graph "
            f"{parity['int8_text']['min_cosine']:.4f} (at least {MIN_COSINE})")
    (out / PARITY_FILE).write_text(json.dumps(parity, indent=1), encoding="utf-8")
    if int8_text and not parity["int8_text"]["passed"]:
        report = parity["int8_text"]
        raise ExportError(f"{out / PARITY_FILE}: the int8 text graph is too far from the float graph (lowest "
                          f"cosine {report['min_cosine']:.4f} < {MIN_COSINE}, zero rows kept: "
                          f"{report['zero_rows_kept']}); export without --int8-text")
    if not parity["passed"]:
        bad = [f"{c['graph']}/{c['runtime']}/batch {c['batch']}: {c['max_abs_diff']:.2e}" for c in parity["checks"]
               if not c["passed"]]
        raise ExportError(f"{out / PARITY_FILE}: parity failed over the tolerance {parity['tolerance']:g} "
                          f"({'; '.join(bad)}); the folder has no {CONFIG_FILE} and does not load")

    say(f"[6/6] writing {CONFIG_FILE} and the model card")
    from .card import CardInfo, model_card

    manifest = data.get("manifest")
    # the demo builder leaves demo_config.json beside its manifest; no manifest means the demo corpus
    is_demo = manifest is None or (Path(str(manifest)).parent / "demo_config.json").exists()
    vocab_meta = json.loads((vocab_dir / "vocab.json").read_text(encoding="utf-8"))
    files = {"weights": WEIGHTS_FILE, "tokenizer": TOKENIZER_DIR, "video_encoder": VIDEO_ONNX,
             "text_encoder": TEXT_ONNX,
             "hashtags": f"{LABELS_DIR}/hashtags.json", "queries": f"{LABELS_DIR}/queries.json",
             "parity": PARITY_FILE, "card": CARD_FILE}
    if int8_text:
        files["text_encoder_int8"] = INT8_TEXT_ONNX
    config = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "mmemb_version": __version__,
        "preset": str(hparams.get("preset")),
        "model": _model_dict(cfg),
        "preprocessing": _preprocessing(cfg, decode, text),
        "outputs": {"video": cfg.embed_dim, "text": cfg.embed_dim},
        "onnx": {name: {**spec.as_dict(), "opset": OPSET, "dynamic_axes": {"B": "batch"}}
                 for name, spec in specs.items()},
        "labels": {"hashtags": len(labels["hashtags"]), "queries": len(labels["queries"]),
                   "categories": list(vocab_meta.get("categories", []))},
        "files": files,
        "parity": {"passed": True, "tolerance": parity["tolerance"],
                   "max_abs_diff": max(c["max_abs_diff"] for c in parity["checks"])},
        "source": {"checkpoint": str(Path(ckpt).resolve()), "run_config": str(Path(config_path).resolve()),
                   "vocab_dir": str(vocab_dir.resolve()), "manifest": manifest},
    }
    metrics_table, metrics_split = _metrics(Path(ckpt))
    card = CardInfo(
        preset=config["preset"], checkpoint=str(ckpt), embed_dim=cfg.embed_dim, towers=_towers(cfg),
        parameters=sum(p.numel() for p in model.parameters()), manifest=manifest, is_demo=is_demo,
        num_videos=_count_manifest(manifest), categories=config["labels"]["categories"],
        num_hashtags=len(labels["hashtags"]), num_queries=len(labels["queries"]),
        split=dict(data.get("split") or {}),
        preprocessing=[f"frames: {decode.num_frames} x {decode.frame_size} px, {decode.resize_policy}, uniform "
                       f"sampling, ImageNet mean/std inside the model",
                       *([f"audio: {decode.sample_rate} Hz mono, {decode.n_mels}-band log-mel, "
                          f"{decode.audio_seconds:g} s centred window"] if cfg.use_audio else []),
                       f"text: WordPiece tokenizer (`tokenizer/`), {text.max_length} tokens, fields "
                       f"caption/cover/ASR/comments",
                       *([f"n-grams: char {_gram_lengths(text)}-grams hashed into {text.ngram_buckets} buckets "
                          f"(BLAKE2b), {text.ngram_max_length} per text"] if cfg.has_ngram_bag else [])],
        metrics_table=metrics_table, metrics_split=metrics_split, parity=parity)
    (out / CARD_FILE).write_text(model_card(card), encoding="utf-8")
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=1, ensure_ascii=False), encoding="utf-8")
    say(f"exported {config['preset']} to {out} in {time.perf_counter() - t0:.1f} s "
        f"(parity max |diff| {config['parity']['max_abs_diff']:.1e})")
    return {"out": str(out), "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
            "parity": parity}


def _model_dict(cfg: ModelConfig) -> dict[str, Any]:
    """``config.json``'s ``model`` section: the ModelConfig as plain JSON values."""
    values = dataclasses.asdict(cfg)
    values["vision"]["pretrained_path"] = None
    return json.loads(json.dumps(values))
