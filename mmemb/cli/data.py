"""``mmemb data ...``: build, import, check and pack datasets.

    mmemb data build-demo [--out data/demo] [--videos-per-category 100] ...
    mmemb data check MANIFEST [--no-decode] [--workers 2] [--min-freq 5]
    mmemb data import-kuairec CSV OUT.jsonl [--category-level 1]
    mmemb data write-shards MANIFEST OUT_DIR [--samples-per-shard 256]
    mmemb data vocab MANIFEST OUT_DIR [--vocab-size 8000] [--hashtag-min-freq 5]
    mmemb data scan CLIPS_DIR OUT.jsonl

Argument parsing only: the work is in :mod:`mmemb.data`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_data_commands"]


def _cmd_build_demo(args: argparse.Namespace) -> int:
    from ..data.demo import DemoConfig, build_demo, default_demo_dir

    cfg_kwargs = {"num_categories": args.categories, "videos_per_category": args.videos_per_category,
                  "frame_size": args.frame_size, "seconds": args.seconds, "seed": args.seed, "workers": args.workers}
    if args.csv:
        cfg_kwargs["csv_path"] = args.csv
    report = build_demo(args.out or default_demo_dir(), DemoConfig(**cfg_kwargs), progress=not args.quiet)
    print(f"demo corpus: {report.num_videos} videos in {len(report.categories)} categories "
          f"({', '.join(report.categories)}), built in {report.seconds_taken:.1f} s")
    print(f"manifest: {report.manifest}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ..data.check import check

    path = Path(args.manifest)
    if not path.exists():
        print(f"error: manifest not found: {path}", file=sys.stderr)
        return 2
    report = check(path, decode=not args.no_decode, min_freq=args.min_freq, workers=args.workers,
                   progress=not args.quiet)
    print(report.to_text(max_issues=args.max_issues))
    return 0 if report.ok else 1


def _cmd_import_kuairec(args: argparse.Namespace) -> int:
    from ..data.kuairec import import_kuairec

    report = import_kuairec(args.csv, args.out, category_level=args.category_level)
    print(report)
    return 0


def _cmd_write_shards(args: argparse.Namespace) -> int:
    from ..data.manifest import read_manifest
    from ..data.shards import write_shards

    records = read_manifest(args.manifest)
    infos = write_shards(records, args.out, samples_per_shard=args.samples_per_shard, progress=not args.quiet)
    print(f"wrote {len(infos)} shards with {sum(i.num_samples for i in infos)} videos to {args.out}")
    return 0


def _cmd_vocab(args: argparse.Namespace) -> int:
    from ..data.datamodule import SplitConfig, split_records
    from ..data.manifest import read_manifest
    from ..data.vocab import LabelConfig, TextConfig, Vocabularies, summarize

    records = read_manifest(args.manifest)
    train = split_records(records, SplitConfig(seed=args.split_seed))["train"]
    vocabs, report = Vocabularies.build(train, TextConfig(vocab_size=args.vocab_size),
                                        LabelConfig(hashtag_min_freq=args.hashtag_min_freq), records)
    vocabs.save(args.out)
    print(f"vocabularies of {len(train)} training videos saved to {args.out}: {summarize(vocabs)}")
    if report is not None:
        print(report.to_markdown(top=args.top))
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from ..data.manifest import write_manifest
    from ..data.scan import scan_folder

    records = scan_folder(args.folder)
    path = write_manifest(records, args.out)
    print(f"{len(records)} clips of {args.folder} listed in {path} (ids = paths relative to the folder)")
    return 0


def add_data_commands(sub) -> None:
    """The ``data`` subcommands, added to the subparsers action ``sub``."""
    p = sub.add_parser("build-demo", help="build the demo corpus (real KuaiRec text + synthetic clips)")
    p.add_argument("--out", default=None, help="output folder (default: data/demo in the repository)")
    p.add_argument("--csv", default=None, help="KuaiRec caption/category CSV (default: the copy in assets/)")
    p.add_argument("--categories", type=int, default=12, help="number of content categories")
    p.add_argument("--videos-per-category", type=int, default=100)
    p.add_argument("--frame-size", type=int, default=64, help="square clip size in pixels")
    p.add_argument("--seconds", type=float, default=2.0, help="clip length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="encoding processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_build_demo)

    p = sub.add_parser("check", help="validate a manifest; report coverage, labels and decode failures",
                       description="Exit status: 0 when no record is invalid and every clip decodes, 1 otherwise.")
    p.add_argument("manifest", help="JSONL or Parquet manifest")
    p.add_argument("--no-decode", action="store_true", help="skip decoding the clips")
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument("--min-freq", type=int, default=5, help="label frequency threshold to report")
    p.add_argument("--max-issues", type=int, default=50, help="problems to list")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("import-kuairec", help="convert the KuaiRec caption/category CSV into a manifest")
    p.add_argument("csv")
    p.add_argument("out", help="output manifest (.jsonl or .parquet)")
    p.add_argument("--category-level", type=int, choices=(1, 2, 3), default=1)
    p.set_defaults(func=_cmd_import_kuairec)

    p = sub.add_parser("write-shards", help="pack a manifest and its clips into WebDataset tar shards")
    p.add_argument("manifest")
    p.add_argument("out", help="output folder")
    p.add_argument("--samples-per-shard", type=int, default=256)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_write_shards)

    p = sub.add_parser("vocab", help="learn tokenizer, label vocabularies, TF-IDF and tag graph; report cleaning")
    p.add_argument("manifest")
    p.add_argument("out", help="output folder")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--hashtag-min-freq", type=int, default=5)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--top", type=int, default=30, help="removed tags to list")
    p.set_defaults(func=_cmd_vocab)

    p = sub.add_parser("scan", help="write the manifest of a folder of clips (ids = paths relative to it)")
    p.add_argument("folder", help="folder of clips, searched recursively")
    p.add_argument("out", help="output manifest (.jsonl or .parquet)")
    p.set_defaults(func=_cmd_scan)
