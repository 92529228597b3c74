"""Evaluate a trained checkpoint: retrieval metrics of one split, as a Markdown table and JSON.

    python evaluate.py --run runs/quickstart                  # newest version, best checkpoint, test split
    python evaluate.py --ckpt runs/quickstart/version_0/checkpoints/last.ckpt --split val
    python evaluate.py --run runs/quickstart --config my_data.yaml   # another data section

The checkpoint is read with ``torch.load(weights_only=True)`` (state dict and hyperparameters,
no pickled code). The data module is rebuilt from the run's ``config.yaml`` (written by
LightningCLI next to the logs) with the vocabularies saved by the training run. The table is
printed and ``metrics.json`` is written next to the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402

from mmemb.eval.metrics import retrieval_metrics  # noqa: E402

log = logging.getLogger("evaluate")

TABLE_LEVELS = ("category", "instance")
TABLE_DIRECTIONS = ("t2v", "v2t")
TABLE_KS = (1, 5, 10)


# ----------------------------------------------------------------------------- finding the run's files


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def checkpoint_dir(run: Path) -> Path:
    """``run/checkpoints`` or, for a logger root, the newest ``version_N/checkpoints`` holding checkpoints."""
    candidates = [run / "checkpoints"] + [v / "checkpoints" for v in sorted(run.glob("version_*"), key=_version_number,
                                                                           reverse=True)]
    for folder in candidates:
        if any(folder.glob("*.ckpt")):
            return folder
    raise FileNotFoundError(f"no checkpoints under {run} (looked in {run}/checkpoints and {run}/version_*/checkpoints)")


def best_checkpoint(folder: Path) -> Path:
    """The best checkpoint recorded in ``last.ckpt`` by a ModelCheckpoint with a monitor; else the only
    other checkpoint; else ``last.ckpt``."""
    last = folder / "last.ckpt"
    others = sorted((p for p in folder.glob("*.ckpt") if not p.name.startswith("last")),
                    key=lambda p: p.stat().st_mtime)
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        for key, cb_state in state.get("callbacks", {}).items():
            monitored = key.startswith("ModelCheckpoint") and cb_state.get("monitor")
            best = cb_state.get("best_model_path") if monitored else None
            if best and (folder / Path(best).name).exists():
                return folder / Path(best).name
    if len(others) == 1 or (others and not last.exists()):
        return others[-1]
    if last.exists():
        return last
    raise FileNotFoundError(f"no checkpoint in {folder}")


def find_config(ckpt: Path) -> Path:
    """The ``config.yaml`` of the run: in the checkpoint's folder or one of its parents."""
    for folder in [ckpt.parent, *ckpt.parents]:
        if (folder / "config.yaml").exists():
            return folder / "config.yaml"
    raise FileNotFoundError(f"no config.yaml above {ckpt}; pass --config")


def find_vocab_dir(ckpt: Path, config: dict) -> str | None:
    """The vocabularies saved by the training run (``data.vocab_dir`` or ``<default_root_dir>/vocab``)."""
    data = _data_section(config)
    candidates = [data.get("vocab_dir")]
    candidates += [str(folder / "vocab") for folder in ckpt.parents]
    candidates.append(str(Path(config.get("trainer", {}).get("default_root_dir") or ".") / "vocab"))
    for cand in candidates:
        if cand and (Path(cand) / "vocab.json").exists():
            return cand
    return None


# ----------------------------------------------------------------------------- data and embeddings


def _data_section(config: dict) -> dict:
    data = dict(config.get("data") or {})
    if "init_args" in data:  # subclass-mode layout
        data = dict(data["init_args"])
    return data


def build_datamodule(config: dict, **overrides: Any):
    """Instantiate the run's :class:`VideoDataModule` from its config (nested dataclasses included)."""
    from jsonargparse import ArgumentParser

    from mmemb.data.datamodule import VideoDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VideoDataModule, "data")
    data = {**_data_section(config), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = parser.parse_object({"data": data})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(cfg).data


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.inference_mode()
def embed(module, loader, device: torch.device) -> dict[str, torch.Tensor]:
    """Video and text embeddings, masks and categories of every sample of ``loader``."""
    module.eval().to(device)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("video", "text", "video_mask", "text_mask", "category")}
    for batch in loader:
        batch = _to_device(batch, device)
        out = module(batch)
        for key in ("video", "text"):
            parts[key].append(out[key].float().cpu())
        for key in ("video_mask", "text_mask", "category"):
            parts[key].append(batch[key].cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


# ----------------------------------------------------------------------------- reporting


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def markdown_table(metrics: dict[str, float]) -> str:
    """``| metric | value | chance |`` rows: recall@k of both directions and levels, then median ranks."""
    lines = ["| metric | value | chance |", "| --- | ---: | ---: |"]
    for level in TABLE_LEVELS:
        for direction in TABLE_DIRECTIONS:
            for k in TABLE_KS:
                key = f"{direction}_r{k}_{level}"
                if key in metrics:
                    lines.append(f"| {key} | {_fmt(metrics[key])} | {_fmt(metrics.get(key + '_chance'))} |")
    for level in TABLE_LEVELS:
        for direction in TABLE_DIRECTIONS:
            key = f"{direction}_medr_{level}"
            if key in metrics:
                lines.append(f"| {key} | {metrics[key]:.1f} | – |")
    lines.append(f"| queries (text) / gallery (video) | {int(metrics['n_text'])} / {int(metrics['n_video'])} | |")
    return "\n".join(lines)


def _json_ready(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- entry point


def module_class(ckpt: Path):
    """The LightningModule that wrote ``ckpt``: :class:`~mmemb.lit.teacher.TeacherModule` for a teacher
    preset (``teacher_*``), else :class:`~mmemb.lit.pretrain.PretrainModule` (read with ``weights_only``)."""
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    if str(hparams.get("preset", "")).startswith("teacher_"):
        from mmemb.lit.teacher import TeacherModule

        return TeacherModule
    from mmemb.lit.pretrain import PretrainModule

    return PretrainModule


def evaluate(ckpt: Path, config_path: Path | None = None, split: str = "test", batch_size: int | None = None,
             num_workers: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Metrics of ``split`` for checkpoint ``ckpt``; writes ``metrics.json`` beside it and returns its content."""
    config_path = config_path or find_config(ckpt)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    vocab_dir = find_vocab_dir(ckpt, config)
    if vocab_dir is None:
        log.warning("no saved vocabulary found for %s: rebuilding it from the training split", ckpt)
    dm = build_datamodule(config, batch_size=batch_size, num_workers=num_workers, vocab_dir=vocab_dir)
    module = module_class(ckpt).from_checkpoint_weights(str(ckpt))
    if dm.vocab_size != module.config.vocab_size:
        raise ValueError(f"the data's vocabulary ({dm.vocab_size} tokens, from {vocab_dir or 'a rebuild'}) is not "
                         f"the model's ({module.config.vocab_size}); pass the run's config and vocabulary")
    dm.prepare_data()
    dm.setup("test" if split == "test" else "validate")
    loaders = {"val": dm.val_dataloader, "test": dm.test_dataloader}
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    emb = embed(module, loaders[split](), target)
    metrics = retrieval_metrics(emb["video"], emb["text"], emb["category"], emb["video_mask"], emb["text_mask"],
                                ks=TABLE_KS)
    result = {"checkpoint": str(ckpt), "config": str(config_path), "split": split, "metrics": _json_ready(metrics)}
    (ckpt.parent / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run folder (e.g. runs/quickstart): newest version, best checkpoint")
    source.add_argument("--ckpt", type=Path, help="a checkpoint file")
    parser.add_argument("--config", type=Path, default=None, help="config.yaml of the run (default: found beside it)")
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's data.batch_size")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the run's data.num_workers")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    ckpt = args.ckpt if args.ckpt is not None else best_checkpoint(checkpoint_dir(args.run))
    result = evaluate(ckpt, args.config, args.split, args.batch_size, args.num_workers, args.device)
    print(f"\n{args.split} split, checkpoint {ckpt}\n")
    print(markdown_table({k: (math.nan if v is None else v) for k, v in result["metrics"].items()}))
    print(f"\nwrote {ckpt.parent / 'metrics.json'}")
    return result


if __name__ == "__main__":
    main()
