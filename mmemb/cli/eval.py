"""``mmemb eval ...`` (and ``evaluate.py``): evaluate trained checkpoints.

    mmemb eval --run runs/quickstart                  # = tasks: newest version, best checkpoint, test split
    mmemb eval tasks --ckpt runs/quickstart/version_0/checkpoints/last.ckpt --split val
    mmemb eval tasks --run runs/quickstart --config my_data.yaml      # another data section
    mmemb eval extract --run runs/quickstart --split all --out runs/quickstart/emb
    mmemb eval extract --run runs/quickstart --split train --logits --out runs/quickstart/teacher_store
    mmemb eval sweep --store runs/quickstart/emb --out runs/quickstart/sweep --quick
    mmemb eval sweep --vectors db.npy --queries q.npy --out runs/sweep
    mmemb eval compare runs/first_model runs/quickstart --ensemble 1,2 --out runs/compare
    mmemb eval real-data --run runs/quickstart --out runs/real_data
    mmemb eval ablate --config configs/kuairec_text.yaml --ablations configs/ablations/no_gcn.yaml --out runs/ab
    mmemb eval COMMAND --help                        # every option, with an example

Commands
--------
``tasks`` (the default: ``mmemb eval --run ...`` is ``mmemb eval tasks --run ...``)
    On one split (``--split``, default test): text-to-video and video-to-text retrieval (recall@1/5/10,
    median rank, category and instance level, with chance), hashtag recommendation (P@1, R@5, mAP
    over the videos that have hashtags, next to the label-popularity baseline of the train split) and
    a category linear probe on the frozen video embeddings (and fused embeddings when the model has
    them; trained on the train split, with the majority-class baseline). Prints a Markdown table and
    writes ``metrics.json``, ``metrics.csv`` and ``metrics.png`` next to the checkpoint (or in
    ``--out``): :mod:`mmemb.eval.checkpoint`, metrics defined in :mod:`mmemb.eval.tasks`.
``extract``
    Embeddings (``video``, ``text``, and ``multimodal`` for the teacher; zero rows where a modality is
    missing) of a split, or ``all`` splits, with their ids, into an :class:`~mmemb.eval.store.EmbeddingStore`
    (``--out``): resumable, a second run adds only what is missing; then ``embeddings.parquet``.
``sweep``
    faiss index sweep (:mod:`mmemb.eval.index_sweep`): Flat, IVF-Flat (nlist x nprobe), IVF-PQ with
    and without OPQ, HNSW (efSearch), against exact search, on a store's embeddings (``--store``) or
    an ``.npy`` (``--vectors``). Writes ``sweep.json``, ``sweep.csv``, ``sweep.md`` and the
    recall-latency plots; prints the table and the target report.
``compare``
    Several checkpoints (files or run folders) on every task on the same split, optionally with
    weighted-concatenation ensembles (:mod:`mmemb.eval.compare`). Writes ``compare.json``,
    ``compare.csv``, ``compare.md`` and ``compare.png``; prints the table.
``ablate``
    A config and each ablation overlay x seeds, each trained (``mmemb fit``) and evaluated (``tasks``)
    in a subprocess of its own, resumably (a finished run made from since-edited configs or other fit
    arguments is an error, not a stale row); a table of mean ± std per metric with the difference to the
    full model and whether it exceeds the seed spread (:mod:`mmemb.eval.ablate`). Writes
    ``ablation.md`` and ``ablation.json``; prints the table.
``real-data``
    The KuaiRec hashtag / category benchmarks and the audio-visual correspondence benchmark on the
    real clips, with their classical baselines and, given ``--run``/``--ckpt``, the model's rows
    (:mod:`mmemb.eval.real_data`), on the run's own KuaiRec labels when it learned them from this corpus's
    train split (``--labels``). Writes ``results.json``, ``results.csv``, ``results.md``, ``results.png``.

Argument parsing only: the work is in :mod:`mmemb.eval`. Long loops show progress (a bar on a
terminal, a plain line every 30 s in logs; ``--no-progress`` turns it off). Checkpoints are read with
``torch.load(weights_only=True)``; the data module is rebuilt from the run's ``config.yaml`` with the
vocabularies saved by the training run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["SUBCOMMANDS", "build_parser", "with_command", "main"]

SUBCOMMANDS = ("tasks", "extract", "sweep", "compare", "real-data", "ablate")
COMMAND_HELP = {
    "tasks": "retrieval, hashtag and probe metrics of one checkpoint",
    "extract": "embeddings of a split into a resumable store",
    "sweep": "faiss index sweep: recall, latency, memory",
    "compare": "several checkpoints (and ensembles) on every task",
    "real-data": "KuaiRec and audio-visual real-data benchmarks",
    "ablate": "a config and its ablations x seeds: mean ± std, differences vs the seed spread",
}
ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's shipped data (an editable install)


def _checkpoint(args: argparse.Namespace) -> Path | None:
    """``--ckpt``, or the best checkpoint of the newest version under ``--run`` (None: neither given)."""
    from ..eval.loading import resolve_checkpoint

    if args.ckpt is not None:
        return args.ckpt
    return resolve_checkpoint(args.run) if args.run is not None else None


# ----------------------------------------------------------------------------- the commands


def cmd_tasks(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.checkpoint import evaluate_checkpoint, markdown_table, nan_metrics

    ckpt = _checkpoint(args)
    out_dir = args.out if args.out is not None else ckpt.parent
    result = evaluate_checkpoint(ckpt, args.config, args.split, args.batch_size, args.num_workers, args.device,
                                 probe=not args.no_probe, probe_max_train=args.probe_max_train, out_dir=out_dir,
                                 show_progress=not args.no_progress, plot=not args.no_plot)
    print(f"\n{args.split} split, checkpoint {ckpt}\n")
    print(markdown_table(nan_metrics(result["metrics"])))
    print(f"\nwrote {', '.join(result['files'])}")
    return result


def cmd_extract(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.checkpoint import extract_checkpoint

    ckpt = _checkpoint(args)
    result = extract_checkpoint(ckpt, args.out, args.split, args.config, args.batch_size, args.num_workers,
                                args.device, chunk_size=args.chunk_size, parquet=not args.no_parquet,
                                show_progress=not args.no_progress, logits=args.logits)
    print(f"\n{args.split} split, checkpoint {ckpt}: {result['added']} rows added, {result['before']} already stored\n")
    print(result["table"])
    print(f"\nwrote {', '.join(result['files'])}")
    return result


def sweep_options(args: argparse.Namespace):
    """The :class:`~mmemb.eval.index_sweep.SweepOptions` of the ``sweep`` arguments."""
    from ..eval.index_sweep import SweepOptions

    tup = lambda v: None if v is None else tuple(v)  # noqa: E731
    return SweepOptions(out=args.out, store=args.store, vectors=args.vectors, name=args.name,
                        query_name=args.query_name, queries=args.queries, n_queries=args.n_queries, quick=args.quick,
                        k=tuple(args.k), nlist=tup(args.nlist), nprobe=tup(args.nprobe), pq_bytes=tup(args.pq_bytes),
                        opq=tup(args.opq), nbits=args.nbits, hnsw_m=tup(args.hnsw_m), ef_search=tup(args.ef_search),
                        refine=tup(args.refine), latency_queries=args.latency_queries, metric=args.metric,
                        use_gpu=args.use_gpu, normalize=not args.no_normalize, threads=args.threads, seed=args.seed)


def cmd_sweep(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.index_sweep import run_index_sweep

    result = run_index_sweep(sweep_options(args), show_progress=not args.no_progress)
    print(f"\n{result['table']}\n\n{result['targets']}\n\nsweep: {result['seconds']:.1f} s; "
          f"wrote {', '.join(result['files'])}")
    return result


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.compare import compare_checkpoints

    result = compare_checkpoints(args.checkpoints, args.out, args.labels, args.ensemble or (), args.split, args.config,
                                 args.batch_size, args.num_workers, args.device, probe=not args.no_probe,
                                 probe_max_train=args.probe_max_train, show_progress=not args.no_progress,
                                 plot=not args.no_plot)
    print(f"\n{args.split} split\n\n{result['table']}\n\nwrote {', '.join(result['files'])}")
    return result


def cmd_real_data(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.real_data import real_data_report

    result = real_data_report(None if args.skip_kuairec else args.csv, None if args.skip_av else args.clips, args.out,
                              _checkpoint(args), args.config, max_rows=args.max_rows, device=args.device,
                              show_progress=not args.no_progress, plot=not args.no_plot, labels=args.labels)
    print(result["markdown"])
    print(f"wrote {', '.join(result['files'])}")
    return result


def cmd_ablate(args: argparse.Namespace) -> dict[str, Any]:
    from ..eval.ablate import ablate, markdown_table

    result = ablate(args.config, args.ablations or [], args.seeds, args.out, args.fit_args or [], args.split,
                    probe=not args.no_probe, metrics=args.metrics,
                    say=lambda line: print(line, flush=True), train=not args.finished_only)
    table = markdown_table(result["summary"])
    print(f"\n{args.split} split\n\n{table}\n\nwrote {', '.join(result['files'])}")
    if args.readme_block:
        from ..eval.report import write_readme_block

        print(f"wrote the table into the block {args.readme_block!r} of {write_readme_block(args.readme, args.readme_block, table)}")
    return result


# ----------------------------------------------------------------------------- the parser


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; shows a default when the help does not mention it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and "default" not in text and action.default not in (None, False, argparse.SUPPRESS):
            value = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
            text += f" (default: {value})"
        return text


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100)


def _common(parser: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        parser.add_argument("--config", type=Path, default=None,
                            help="config.yaml of the run (default: found beside the checkpoint)")
        parser.add_argument("--batch-size", type=int, default=None, help="default: the run's data.batch_size")
        parser.add_argument("--num-workers", type=int, default=None, help="default: the run's data.num_workers")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")


def _source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--run", type=Path, help="run folder (trainer.default_root_dir, e.g. runs/quickstart): "
                        "newest version, best checkpoint")
    source.add_argument("--ckpt", type=Path, help="a checkpoint file")


def _probe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-probe", action="store_true",
                        help="skip the category linear probe (saves embedding the train split)")
    parser.add_argument("--probe-max-train", type=int, default=None,
                        help="train the probe on at most this many train videos (evenly spaced); default all")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")


def build_parser(prog: str = "mmemb eval") -> argparse.ArgumentParser:
    """The ``eval`` parser; ``prog`` is how the examples spell the command (``mmemb eval``, ``evaluate.py``)."""
    run = "python evaluate.py" if prog.endswith(".py") else prog
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate trained checkpoints: tasks, embedding extraction, index sweeps, comparisons, "
                    f"real-data benchmarks.\n\n  {run} --run runs/quickstart      # = tasks on the newest version's "
                    "best checkpoint",
        epilog=f"Without a command, the arguments go to `tasks` ({run} --run runs/quickstart). Input errors "
               "(a missing run or checkpoint, a bad config) print one line; --traceback or MMEMB_DEBUG=1 shows "
               "the traceback.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tasks", formatter_class=_Help, help=COMMAND_HELP["tasks"],
                       description=_wrap("Retrieval (t2v/v2t R@1/5/10, median rank), hashtag P@1/R@5/mAP with the label-"
                       "popularity baseline, and a category linear probe, on one split. Writes metrics.json, "
                       "metrics.csv and metrics.png beside the checkpoint (or in --out)."),
                       epilog=f"example:\n  {run} tasks --run runs/quickstart --split test\n"
                       f"  {run} --run runs/quickstart            # the same: tasks is the default")
    _source(p)
    p.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the checkpoint's folder)")
    _probe_args(p)
    _common(p)
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("extract", formatter_class=_Help, help=COMMAND_HELP["extract"],
                       description=_wrap("Embeddings (video, text, and multimodal for the teacher; zero rows where a "
                       "modality is missing) with their ids into an EmbeddingStore (chunked .npy + manifest; a "
                       "second run resumes), then embeddings.parquet."),
                       epilog=f"example:\n  {run} extract --run runs/quickstart --split all --out runs/quickstart/emb")
    _source(p)
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="test",
                   help="the split to embed (train in evaluation mode), or all three")
    p.add_argument("--out", type=Path, required=True, help="store folder")
    p.add_argument("--chunk-size", type=int, default=4096, help="rows per stored chunk")
    p.add_argument("--no-parquet", action="store_true", help="do not export embeddings.parquet")
    p.add_argument("--logits", action="store_true",
                   help="also store the label heads' logits and the vocabulary fingerprint (the teacher store of "
                        "offline distillation: mmemb fit --config configs/distill.yaml --model.teacher_store OUT)")
    _common(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("sweep", formatter_class=_Help, help=COMMAND_HELP["sweep"],
                       description=_wrap("Sweep Flat, IVF-Flat, IVF-PQ (with/without OPQ) and HNSW settings against exact "
                       "search. The default grid adapts to the database size (see "
                       "mmemb.eval.index_sweep.default_grid); options override it. Vectors are L2-normalised "
                       "(cosine) unless --no-normalize."),
                       epilog=f"examples:\n  {run} sweep --store runs/quickstart/emb --query-name text "
                       f"--out runs/quickstart/sweep\n  {run} sweep --vectors db.npy --out runs/sweep --quick")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", type=Path, help=f"an EmbeddingStore folder ({run} extract)")
    src.add_argument("--vectors", type=Path, help="a (rows, dim) .npy database")
    p.add_argument("--name", default="video", help="--store: the embedding to index")
    p.add_argument("--query-name", default=None, help="--store: the embedding used as queries (default: rows held "
                   "out of the database)")
    p.add_argument("--queries", type=Path, default=None, help="--vectors: a (rows, dim) .npy of queries")
    p.add_argument("--n-queries", type=int, default=1000, help="at most this many queries (held out: at most 10%%)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="a small grid: one nlist, nprobe 1/8/32, PQ d/4 without OPQ "
                   "(whose training takes minutes), efSearch 16/64")
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="recall@k cut-offs (<= database size)")
    p.add_argument("--nlist", type=int, nargs="+", default=None, help="IVF list counts")
    p.add_argument("--nprobe", type=int, nargs="+", default=None, help="IVF lists probed")
    p.add_argument("--pq-bytes", nargs="+", default=None, type=lambda s: s if s == "d/4" else int(s),
                   help="IVF-PQ code bytes (ints dividing the dimension, or d/4)")
    p.add_argument("--opq", nargs="+", default=None, type=lambda s: s.lower() in ("1", "true", "yes", "on"),
                   help="IVF-PQ without / with OPQ, e.g. --opq false true")
    p.add_argument("--nbits", type=int, default=None, help="IVF-PQ bits per code (default 8, fewer on small "
                   "data: 2**nbits centroids need as many training vectors)")
    p.add_argument("--hnsw-m", type=int, nargs="+", default=None, help="HNSW graph degrees")
    p.add_argument("--ef-search", type=int, nargs="+", default=None, help="HNSW efSearch values")
    p.add_argument("--refine", type=float, nargs="+", default=None, help="IVF-PQ exact re-rank k_factors (0 = none)")
    p.add_argument("--latency-queries", type=int, default=None,
                   help="queries timed one at a time (0 = no latency; default 200, 50 with --quick)")
    p.add_argument("--metric", choices=("ip", "l2"), default="ip", help="inner product (cosine) or L2")
    p.add_argument("--use-gpu", choices=("auto", "never", "always"), default="never",
                   help="GPU faiss for Flat/IVF (the latency loop then times the GPU)")
    p.add_argument("--no-normalize", action="store_true", help="keep the vectors as they are")
    p.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0 = faiss's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out queries and training samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", formatter_class=_Help, help=COMMAND_HELP["compare"],
                       description=_wrap("Every task for each checkpoint (file or run folder) on the same split; "
                       "--ensemble adds the weighted-concatenation ensemble of some of them (members by position "
                       "1..N or label, optional :weight). Writes compare.json, compare.csv, compare.md, compare.png."),
                       epilog=f"examples:\n  {run} compare runs/first_model runs/quickstart\n"
                       f"  {run} compare runs/a runs/b --labels a b --ensemble a:0.7,b:0.3 --out runs/cmp")
    p.add_argument("checkpoints", nargs="+", metavar="RUN_OR_CKPT", help="run folders or checkpoint files")
    p.add_argument("--labels", nargs="+", default=None, help="row names (default: run folder names)")
    p.add_argument("--ensemble", action="append", default=None, metavar="A,B[:w]",
                   help="members of an ensemble, e.g. 1,2 or 1:0.7,2:0.3 (repeatable)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder")
    _probe_args(p)
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("real-data", formatter_class=_Help, help=COMMAND_HELP["real-data"],
                       description=_wrap("KuaiRec hashtag recommendation and category probe (text), audio-visual "
                       "correspondence on the real clips: classical baselines, and the checkpoint's rows given "
                       "--run/--ckpt (its own hashtag head, text path, fused path, audio-visual), by the same "
                       "code on the same split: the data module's split, the run's own with --run/--ckpt "
                       "(baselines fit on train, scored on test; validation in no row)."),
                       epilog=f"examples:\n  {run} real-data                      # baselines only\n"
                       f"  {run} real-data --run runs/quickstart --max-rows 2000")
    _source(p, required=False)
    p.add_argument("--csv", default=str(ASSETS / "kuairec/kuairec_caption_category.csv"),
                   help="the KuaiRec caption/category CSV")
    p.add_argument("--clips", default=str(ASSETS / "clips"), help="folder of real clips for the AV benchmark")
    p.add_argument("--out", type=Path, default=Path("runs/real_data"), help="output folder")
    p.add_argument("--max-rows", type=int, default=None, help="only the first rows of the KuaiRec CSV")
    p.add_argument("--skip-kuairec", action="store_true", help="no KuaiRec rows")
    p.add_argument("--skip-av", action="store_true", help="no audio-visual rows")
    p.add_argument("--labels", choices=("auto", "protocol", "run"), default="auto",
                   help="KuaiRec hashtags of every row: the protocol's (cleaned on the train split with the level-1 "
                   "categories) or the run's own (cleaned as its vocabulary was: a run trained on a level-2 "
                   "manifest learned a few other tags); auto: the run's when they are exactly its vocabulary, "
                   "else the protocol's")
    p.add_argument("--config", type=Path, default=None, help="config.yaml of the run (default: found beside it)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_real_data)

    p = sub.add_parser("ablate", formatter_class=_Help, help=COMMAND_HELP["ablate"],
                       description=_wrap("Train (mmemb fit) and evaluate (tasks, best checkpoint) the config alone "
                       "(`full`) and with each ablation overlay after it, for seeds 0..N-1, each run in "
                       "OUT/<name>/seed<s> (fit.log, eval.log, eval/, result.json). Finished runs (result.json "
                       "present) are not rerun. Writes OUT/ablation.md and OUT/ablation.json: mean ± sample std "
                       "per metric, the difference to `full`, and * when |difference| > max(std_full, "
                       "std_ablation)."),
                       epilog=f"example:\n  {run} ablate --config configs/kuairec_text.yaml --ablations "
                       "configs/ablations/no_gcn.yaml configs/ablations/no_keyword.yaml --seeds 3 --out "
                       "runs/ablate_kuairec --fit-args --trainer.max_epochs=4")
    p.add_argument("--config", type=Path, required=True, help="the full model's config")
    p.add_argument("--ablations", type=Path, nargs="*", default=None, help="overlay configs, one ablation each")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per config (seed_everything)")
    p.add_argument("--out", type=Path, required=True, help="output folder (one subfolder per config and seed)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="the split to evaluate")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metrics of the table (default: hashtag map/p1/r5, probe accuracies, t2v/v2t R@1; those "
                        "with a value)")
    p.add_argument("--no-probe", action="store_true", help="skip the category linear probe")
    p.add_argument("--finished-only", action="store_true",
                   help="train nothing: the table of the runs finished so far (the others listed as not run)")
    p.add_argument("--readme-block", default=None, metavar="NAME",
                   help="also write the table between <!-- table:NAME --> and <!-- /table:NAME --> of --readme")
    p.add_argument("--readme", type=Path, default=Path("README.md"), help="the file of --readme-block")
    p.add_argument("--fit-args", nargs=argparse.REMAINDER, default=None,
                   help="everything after it goes to every `mmemb fit` (last on the line)")
    p.set_defaults(func=cmd_ablate)
    return parser


def with_command(argv: list[str]) -> list[str]:
    """Arguments without a command go to ``tasks`` (the ``mmemb eval --run ...`` form)."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        return ["tasks", *argv]
    return argv


def main(argv: list[str] | None = None, prog: str = "mmemb eval") -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its result. Errors
    raise (:func:`mmemb.cli.run_eval` turns input errors into one line)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(with_command(argv))
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    return args.func(args)
