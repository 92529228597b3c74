"""Export folders for the latency benchmarks: untrained teacher and student runs of a corpus, exported.

    python benchmarks/bench_exports.py --out runs/bench_exports [--presets teacher_small student_small]

Latency does not depend on the weights, so the benchmarks time untrained models: :func:`make_run` writes a
run folder as training leaves it (``vocab/``, ``version_0/config.yaml``, ``checkpoints/last.ckpt``) with a
randomly initialised module of a preset and the quickstart's data settings, and :func:`exported` runs
``mmemb export`` on it (parity checked as always). Trained exports (``mmemb export`` of a real run) can be
given to the benchmarks instead (their ``--export`` option).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

# The quickstart's data section (configs/quickstart.yaml): what the preprocessing of an export does
QUICKSTART_DATA: dict[str, Any] = {
    "batch_size": 32, "num_workers": 0,
    "decode": {"num_frames": 4, "frame_size": 64, "audio_seconds": 2.0},
    "text": {"max_length": 64, "ngram_buckets": 32768, "ngram_max_length": 256},
}


def export_arg(value: str) -> tuple[str, Path]:
    """``--export NAME=DIR`` of the latency benchmarks -> ``(NAME, DIR)``."""
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--export takes NAME=DIR, got {value!r}")
    return name, Path(folder)


def make_run(root: Path, manifest: str | Path | None, preset: str, data: dict[str, Any] | None = None,
             vocab_from: Path | None = None) -> Path:
    """A run folder in ``root`` with an untrained module of ``preset`` (vocabularies built from ``manifest``,
    or copied from the run folder ``vocab_from``); returns its checkpoint."""
    import shutil

    import torch
    import yaml

    from mmemb.eval.loading import build_datamodule
    from mmemb.lit.module import EmbeddingModule

    data = {**(data or QUICKSTART_DATA), "manifest": None if manifest is None else str(manifest)}
    if vocab_from is not None:
        data["vocab_dir"] = str(vocab_from / "vocab")
    dm = build_datamodule({"data": data})
    torch.manual_seed(0)
    module = EmbeddingModule(preset=preset, vocab_size=dm.vocab_size, num_hashtags=dm.num_hashtags,
                             num_queries=dm.num_queries, ngram_buckets=dm.ngram_buckets)
    module.set_vocabularies(dm.vocabs)
    if vocab_from is not None:
        shutil.copytree(vocab_from / "vocab", root / "vocab", dirs_exist_ok=True)
    else:
        dm.vocabs.save(root / "vocab")
    version = root / "version_0"
    (version / "checkpoints").mkdir(parents=True, exist_ok=True)
    config = {"model": {"preset": preset}, "data": {k: v for k, v in data.items() if k != "vocab_dir"},
              "trainer": {"default_root_dir": str(root)}}
    (version / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    ckpt = version / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ckpt)
    return ckpt


def exported(out: Path, presets: Sequence[str], manifest: str | Path | None = None,
             data: dict[str, Any] | None = None, quiet: bool = True) -> dict[str, Path]:
    """``{preset: export folder}`` under ``out`` (``out/<preset>/export``), made once and reused (a folder
    with a ``config.json`` passed its parity check; one without the int8 text graph is exported again). The
    presets share the first one's vocabularies. Exported with ``--int8-text``."""
    from mmemb.export import export_checkpoint

    folders: dict[str, Path] = {}
    first_run: Path | None = None
    for preset in presets:
        run = out / preset / "run"
        folder = out / preset / "export"
        if not (folder / "config.json").is_file() or not (folder / "text_encoder.int8.onnx").is_file():
            ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
            if not ckpt.is_file():
                ckpt = make_run(run, manifest, preset, data, vocab_from=first_run)
            export_checkpoint(ckpt, folder, progress=None if quiet else print, int8_text=True)
        first_run = first_run or run
        folders[preset] = folder
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_exports"))
    p.add_argument("--presets", nargs="+", default=["teacher_small", "student_small"])
    p.add_argument("--manifest", default=None, help="default: the demo corpus (built if missing)")
    args = p.parse_args(argv)
    for preset, folder in exported(args.out, args.presets, args.manifest, quiet=False).items():
        print(f"{preset}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
