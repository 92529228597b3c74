"""``mmemb export`` and ``mmemb embed``: a checkpoint -> an export folder; an export folder -> embeddings.

    mmemb export --ckpt runs/quickstart --out exports/quickstart
    mmemb embed --model exports/quickstart --videos clips/ --out clips.parquet [--runtime onnx]

Argument parsing only: the work is in :mod:`mmemb.export`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_export_command"]

EXPORT_HELP = ("write a self-contained folder of a checkpoint: safetensors weights, config.json, tokenizer, "
               "label vocabularies, ONNX encoders, parity.json, model card")


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.writer import export_checkpoint

    result = export_checkpoint(args.ckpt, args.out, config_path=args.config, vocab_dir=args.vocab,
                               progress=None if args.quiet else print)
    print(f"{len(result['files'])} files in {result['out']}; parity passed "
          f"(max |diff| {max(c['max_abs_diff'] for c in result['parity']['checks']):.1e})")
    return 0


def add_export_command(sub) -> None:
    """The ``export`` command, added to the subparsers action ``sub``."""
    p = sub.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP + ". Exit status 2 when an input is "
                       "missing or unusable or when parity fails (over 1e-4).")
    p.add_argument("--ckpt", required=True, help="checkpoint file, or a run folder (its best checkpoint)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None, help="the run's config.yaml (default: found above the checkpoint)")
    p.add_argument("--vocab", default=None, help="the run's vocabulary folder (default: <run>/vocab)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_export)
