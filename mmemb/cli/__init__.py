"""The ``mmemb`` command.

    mmemb fit --config configs/quickstart.yaml          # train (LightningCLI); also validate, test, predict
    mmemb eval --run runs/quickstart                    # evaluate a run (tasks, extract, sweep, compare, real-data)
    mmemb data check MANIFEST                           # datasets: build-demo, check, import-kuairec, write-shards, vocab
    mmemb export --ckpt runs/quickstart --out DIR       # a self-contained folder for mmemb.load (no Lightning)
    mmemb embed --model DIR --videos CLIPS --out E.parquet   # embeddings of clips or texts with that folder
    mmemb COMMAND --help

Argument parsing only: ``fit|validate|test|predict`` are the LightningCLI of :mod:`mmemb.lit.cli`,
``eval`` is :mod:`mmemb.cli.eval` (the work in :mod:`mmemb.eval`), ``data`` is :mod:`mmemb.cli.data`
(the work in :mod:`mmemb.data`), ``export`` and ``embed`` are :mod:`mmemb.cli.export` (the work in
:mod:`mmemb.export`). ``train.py`` and ``evaluate.py`` are shims over :func:`run_lightning` and
:func:`run_eval`. Input errors print one line and exit with status 2 (:mod:`mmemb.cli.errors`);
``--traceback`` or ``MMEMB_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Iterator, Sequence

from .errors import debug_requested, run_command

__all__ = ["LIGHTNING_COMMANDS", "build_parser", "main", "run_eval", "run_lightning"]

LIGHTNING_COMMANDS = {
    "fit": "train a model from a YAML config (LightningCLI; mmemb fit --help)",
    "validate": "run a checkpoint's validation loop (LightningCLI)",
    "test": "run a checkpoint's test loop (LightningCLI)",
    "predict": "embed a split with a checkpoint (LightningCLI)",
}
EVAL_HELP = "evaluate checkpoints: tasks, extract, sweep, compare, real-data, ablate (mmemb eval --help)"
DATA_HELP = "build, import, check and pack datasets: build-demo, check, import-kuairec, write-shards, vocab, scan"
_VERBOSE = ("-v", "--verbose")


@contextlib.contextmanager
def _program_argv(prog: str, argv: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` as ``[program, *argv]`` for the duration: LightningCLI reads its arguments and its
    program name there, and Lightning's DDP launcher starts the other ranks with ``sys.argv``, so the
    program keeps its path when it is ``prog`` (the console script, ``train.py``)."""
    saved = sys.argv
    program = saved[0] if saved and os.path.basename(saved[0]) == prog else prog
    sys.argv = [program, *argv]
    try:
        yield
    finally:
        sys.argv = saved


def run_lightning(argv: Sequence[str], prog: str = "mmemb", debug: bool | None = None) -> int:
    """``fit|validate|test|predict ...`` through the LightningCLI; input errors print one line (status 2)."""
    if debug is None:
        debug, argv = debug_requested(argv)

    def fit() -> None:
        from ..lit.cli import main as lightning_main

        with _program_argv(prog, argv):
            lightning_main(None)

    command = argv[0] if argv and not argv[0].startswith("-") else ""
    return run_command(fit, prog=f"{prog} {command}".strip(), debug=debug)


def run_eval(argv: Sequence[str], prog: str = "mmemb eval", debug: bool | None = None) -> int:
    """``mmemb eval ...``; input errors print one line (status 2)."""
    if debug is None:
        debug, argv = debug_requested(argv)
    from .eval import main as eval_main

    return run_command(lambda: eval_main(list(argv), prog=prog), prog=prog, debug=debug)


def build_parser() -> argparse.ArgumentParser:
    """The ``mmemb`` parser. ``data`` is parsed here; ``eval`` and the LightningCLI commands are listed
    for ``--help`` and handed their arguments unparsed by :func:`main`."""
    parser = argparse.ArgumentParser(
        prog="mmemb", description="mmemb: multimodal short-video embeddings. Train, evaluate, prepare data, export and embed.",
        epilog="Runs write everything under trainer.default_root_dir (vocab/, version_N/{config.yaml, metrics.csv, "
               "checkpoints/}); mmemb eval --run <that folder> evaluates the newest version. Input errors print one "
               "line (exit status 2); --traceback or MMEMB_DEBUG=1 shows the traceback.")
    parser.add_argument(*_VERBOSE, action="store_true", help="log at INFO level")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of input errors too")
    parser.set_defaults(command=None)  # the subcommand of a group (data); None for a single command (export)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    for name, text in LIGHTNING_COMMANDS.items():
        groups.add_parser(name, help=text, add_help=False)
    groups.add_parser("eval", help=EVAL_HELP, add_help=False)
    data = groups.add_parser("data", help=DATA_HELP, description=DATA_HELP)
    from .data import add_data_commands

    add_data_commands(data.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    from .export import add_export_commands

    add_export_commands(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns the exit status."""
    debug, args = debug_requested(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args and args[0] in _VERBOSE:
        verbose, args = True, args[1:]
    if args and args[0] in LIGHTNING_COMMANDS:
        return run_lightning(args, prog="mmemb", debug=debug)
    if args and args[0] == "eval":
        return run_eval(args[1:], prog="mmemb eval", debug=debug)
    parsed = build_parser().parse_args((["-v"] if verbose else []) + args)
    logging.basicConfig(level=logging.INFO if parsed.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    # the data and export commands report their input problems (and any ValueError of the data code) as one line
    prog = " ".join(["mmemb", parsed.group, *([parsed.command] if parsed.command else [])])
    return run_command(lambda: parsed.func(parsed), prog=prog, debug=debug, also=(ValueError,))
