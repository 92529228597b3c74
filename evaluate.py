"""Evaluate trained checkpoints (the same as ``mmemb eval``): tasks, embedding extraction, index
sweeps, comparisons, real-data benchmarks.

    python evaluate.py --run runs/quickstart                  # = tasks: newest version, best checkpoint, test split
    python evaluate.py tasks --ckpt runs/quickstart/version_0/checkpoints/last.ckpt --split val
    python evaluate.py extract --run runs/quickstart --split all --out runs/quickstart/emb
    python evaluate.py sweep --store runs/quickstart/emb --out runs/quickstart/sweep --quick
    python evaluate.py compare runs/first_model runs/quickstart --ensemble 1,2 --out runs/compare
    python evaluate.py real-data --run runs/quickstart --out runs/real_data
    python evaluate.py COMMAND --help                        # every option, with an example

The commands are described in :mod:`mmemb.cli.eval` (argument parsing) and done by :mod:`mmemb.eval`.
Input errors print one line; ``--traceback`` or ``MMEMB_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from mmemb.cli.eval import SUBCOMMANDS, with_command  # noqa: F401  (evaluate.SUBCOMMANDS etc., as before)
from mmemb.cli.eval import build_parser as _build_parser
from mmemb.cli.eval import main as _main
from mmemb.eval.checkpoint import evaluate_checkpoint as evaluate  # noqa: F401
from mmemb.eval.checkpoint import markdown_table, run_tasks  # noqa: F401
from mmemb.eval.compare import compare_markdown, parse_ensemble  # noqa: F401
from mmemb.eval.index_sweep import default_grid  # noqa: F401
from mmemb.eval.loading import (  # noqa: F401
    LoadedRun,
    best_checkpoint,
    build_datamodule,
    checkpoint_dir,
    find_config,
    find_vocab_dir,
    load_run,
    resolve_checkpoint,
    split_loader,
)

PROG = "evaluate.py"
_with_command = with_command


def build_parser():
    return _build_parser(PROG)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one command and return its result (errors raise; the script prints input errors as one line)."""
    return _main(argv, prog=PROG)


if __name__ == "__main__":
    from mmemb.cli import run_eval

    sys.exit(run_eval(sys.argv[1:], prog=PROG))
