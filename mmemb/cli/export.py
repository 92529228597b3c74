"""``mmemb export`` and ``mmemb embed``: a checkpoint -> an export folder; an export folder -> embeddings.

    mmemb export --ckpt runs/quickstart --out exports/quickstart
    mmemb embed --model exports/quickstart --videos clips/ --out clips.parquet [--runtime onnx]
    mmemb embed --model exports/quickstart --text "a funny cat" --out query.parquet

Argument parsing only: the work is in :mod:`mmemb.export`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_export_commands"]

EXPORT_HELP = ("write a self-contained folder of a checkpoint: safetensors weights, config.json, tokenizer, "
               "label vocabularies, ONNX encoders, parity.json, model card")


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (argparse turns the ValueError into a one-line usage error)."""
    def parse(value: str) -> int:
        number = int(value)
        if number < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return number
    parse.__name__ = f"integer >= {low}"
    return parse


def _cmd_export(args: argparse.Namespace) -> int:
    from ..export.writer import export_checkpoint

    result = export_checkpoint(args.ckpt, args.out, config_path=args.config, vocab_dir=args.vocab,
                               progress=None if args.quiet else print, int8_text=args.int8_text)
    print(f"{len(result['files'])} files in {result['out']}; parity passed "
          f"(max |diff| {max(c['max_abs_diff'] for c in result['parity']['checks']):.1e})")
    if args.int8_text:
        print(f"int8 text graph: lowest cosine to the float graph {result['parity']['int8_text']['min_cosine']:.4f}")
    return 0


EMBED_HELP = ("embed videos and/or texts with an export folder into Parquet (id, vectors; a missing modality is a "
              "null vector with its reason), batched, resumable")


def _cmd_embed(args: argparse.Namespace) -> int:
    from ..export.embed import embed

    result = embed(args.model, args.out, manifest=args.manifest, videos=args.videos, texts_file=args.texts,
                   texts=args.text, runtime=args.runtime, batch_size=args.batch_size, workers=args.workers,
                   chunk_size=args.chunk_size, threads=args.threads, show_progress=not args.quiet,
                   int8_text=args.int8_text)
    nulls = ", ".join(f"{n} without {m}" for m, n in result["null"].items())
    print(f"{result['out']}: {result['rows']} rows ({result['added']} added, {result['skipped']} already there; "
          f"{nulls})")
    print(result["summary"])
    return 0


def add_export_commands(sub) -> None:
    """The ``export`` and ``embed`` commands, added to the subparsers action ``sub``."""
    p = sub.add_parser("export", help=EXPORT_HELP, description=EXPORT_HELP + ". Exit status 2 when an input is "
                       "missing or unusable or when parity fails (over 1e-4).")
    p.add_argument("--ckpt", required=True, help="checkpoint file, or a run folder (its best checkpoint)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None, help="the run's config.yaml (default: found above the checkpoint)")
    p.add_argument("--vocab", default=None, help="the run's vocabulary folder (default: <run>/vocab)")
    p.add_argument("--int8-text", action="store_true",
                   help="also write text_encoder.int8.onnx: the text graph with int8 matrix products (faster "
                   "search queries; its embeddings differ from the float model's, checked at cosine >= 0.99)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("embed", help=EMBED_HELP, description=EMBED_HELP + ". Ids: the manifest's, the clip paths "
                       "relative to the --videos folder, the line numbers of --texts, or the --text strings.")
    p.add_argument("--model", required=True, help="export folder (mmemb export)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="manifest (JSONL/Parquet): videos and their text fields")
    source.add_argument("--videos", help="folder of clips (recursive) or a glob such as 'clips/**/*.mp4'")
    source.add_argument("--texts", help="text file, one text (query) per line")
    source.add_argument("--text", action="append", help="a text to embed (repeatable)")
    p.add_argument("--out", required=True, help="output Parquet file (rerun to resume)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    p.add_argument("--int8-text", action="store_true",
                   help="texts through the export's int8 text graph (needs --runtime onnx and an export made "
                   "with --int8-text)")
    p.add_argument("--batch-size", type=_at_least(1), default=32)
    p.add_argument("--workers", type=_at_least(0), default=0, help="decoding processes (DataLoader workers)")
    p.add_argument("--threads", type=_at_least(1), default=1,
                   help="torch (and ONNX Runtime) threads of the main process; 1 suits decoding, and the workers "
                   "take the other cores")
    p.add_argument("--chunk-size", type=_at_least(1), default=1024, help="rows per resumable flush")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_embed)
