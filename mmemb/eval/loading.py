"""Find a run's checkpoint, config and vocabularies; rebuild its LightningModule and data module.

Used by ``evaluate.py`` and ``benchmarks/bench_real_data.py``. Checkpoints are read with
``torch.load(weights_only=True)`` (state dict and hyper-parameters, no pickled code). The data
module is rebuilt from the run's ``config.yaml`` (written by LightningCLI next to the logs) with the
vocabularies saved by the training run. Lightning is imported only when a module is built.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = [
    "LoadedRun",
    "checkpoint_dir",
    "best_checkpoint",
    "resolve_checkpoint",
    "find_config",
    "find_vocab_dir",
    "build_datamodule",
    "load_run",
    "split_records",
    "split_loader",
    "SPLITS",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- finding the run's files


def _version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else -1


def checkpoint_dir(run: Path) -> Path:
    """``run/checkpoints`` or, for a logger root, the newest ``version_N/checkpoints`` holding checkpoints."""
    run = Path(run)
    candidates = [run / "checkpoints"] + [v / "checkpoints" for v in sorted(run.glob("version_*"), key=_version_number,
                                                                           reverse=True)]
    for folder in candidates:
        if any(folder.glob("*.ckpt")):
            return folder
    raise FileNotFoundError(f"no checkpoints under {run} (looked in {run}/checkpoints and {run}/version_*/checkpoints)")


def best_checkpoint(folder: Path) -> Path:
    """The best checkpoint recorded in ``last.ckpt`` by a ModelCheckpoint with a monitor; else the only
    other checkpoint; else ``last.ckpt``."""
    folder = Path(folder)
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


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as is; a run folder -> its newest version's best checkpoint."""
    path = Path(path)
    if path.is_dir():
        return best_checkpoint(checkpoint_dir(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or run folder")
    return path


def find_config(ckpt: Path) -> Path:
    """The ``config.yaml`` of the run: in the checkpoint's folder or one of its parents."""
    ckpt = Path(ckpt)
    for folder in [ckpt.parent, *ckpt.parents]:
        if (folder / "config.yaml").exists():
            return folder / "config.yaml"
    raise FileNotFoundError(f"no config.yaml above {ckpt}; pass --config")


def _data_section(config: dict) -> dict:
    data = dict(config.get("data") or {})
    if "init_args" in data:  # subclass-mode layout
        data = dict(data["init_args"])
    return data


def find_vocab_dir(ckpt: Path, config: dict) -> str | None:
    """The vocabularies saved by the training run (``data.vocab_dir`` or ``<default_root_dir>/vocab``)."""
    data = _data_section(config)
    candidates = [data.get("vocab_dir")]
    candidates += [str(folder / "vocab") for folder in Path(ckpt).parents]
    candidates.append(str(Path(config.get("trainer", {}).get("default_root_dir") or ".") / "vocab"))
    for cand in candidates:
        if cand and (Path(cand) / "vocab.json").exists():
            return cand
    return None


# ----------------------------------------------------------------------------- modules


def build_datamodule(config: dict, **overrides: Any):
    """Instantiate the run's :class:`VideoDataModule` from its config (nested dataclasses included)."""
    from jsonargparse import ArgumentParser

    from ..data.datamodule import VideoDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VideoDataModule, "data")
    data = {**_data_section(config), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = parser.parse_object({"data": data})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(cfg).data


@dataclass
class LoadedRun:
    """A checkpoint's module (in eval mode, on the CPU) and its run's data module and config."""

    ckpt: Path
    config_path: Path
    config: dict
    vocab_dir: str | None
    module: Any  # EmbeddingModule
    datamodule: Any  # VideoDataModule

    @property
    def preset(self) -> str:
        return str(self.module.hparams.get("preset", ""))

    @property
    def split_config(self) -> dict:
        split = _data_section(self.config).get("split") or {}
        return dict(split) if isinstance(split, dict) else {}


def load_run(ckpt: str | Path, config_path: str | Path | None = None, batch_size: int | None = None,
             num_workers: int | None = None, manifest: str | None = None) -> LoadedRun:
    """Rebuild the module of ``ckpt`` and its run's data module (config found beside it unless given)."""
    ckpt = Path(ckpt)
    config_path = Path(config_path) if config_path is not None else find_config(ckpt)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    vocab_dir = find_vocab_dir(ckpt, config)
    if vocab_dir is None:
        log.warning("no saved vocabulary found for %s: rebuilding it from the training split", ckpt)
    dm = build_datamodule(config, batch_size=batch_size, num_workers=num_workers, vocab_dir=vocab_dir,
                          manifest=manifest)
    dm.prepare_data()  # builds the demo corpus when the run used it and it is missing
    from ..lit.module import EmbeddingModule

    module = EmbeddingModule.from_checkpoint_weights(str(ckpt))
    if dm.vocab_size != module.config.text.vocab_size:
        raise ValueError(f"the data's vocabulary ({dm.vocab_size} tokens, from {vocab_dir or 'a rebuild'}) is not "
                         f"the model's ({module.config.text.vocab_size}); pass the run's config and vocabulary")
    module.eval()
    return LoadedRun(ckpt, config_path, config, vocab_dir, module, dm)


# ----------------------------------------------------------------------------- data of a split


def split_records(dm, split: str, max_records: int | None = None) -> list:
    """The records of ``split``; with ``max_records``, an evenly spaced subset of that many (the
    manifest may be sorted by category, so a prefix would be biased)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    records = list(dm.splits[split])
    if max_records is not None and 0 < max_records < len(records):
        step = len(records) / max_records
        records = [records[math.floor(i * step)] for i in range(max_records)]
    return records


def split_loader(dm, split: str, max_records: int | None = None, exclude: set[str] | None = None):
    """A DataLoader over ``split`` in evaluation mode (uniform frames, no augmentation: also for the
    train split, unlike ``dm.train_dataloader``), in manifest order, with the data module's collate
    (label weights normalised as in training); ``exclude``: ids to leave out (e.g. those a store
    already holds)."""
    from torch.utils.data import DataLoader

    from ..data.dataset import VideoDataset

    records = split_records(dm, split, max_records)
    if exclude:
        records = [r for r in records if str(r.id) not in exclude]
    dataset = VideoDataset(records, dm.vocabs, dm.decode, dm.text, train=False,
                           half_life_days=dm.labels.half_life_days, now=dm.now)
    return DataLoader(dataset, batch_size=dm.batch_size, shuffle=False, num_workers=dm.num_workers,
                      collate_fn=dm.collate_fn, pin_memory=dm.pin_memory, drop_last=False)
