"""Command-line errors: input errors print one line, bugs keep their traceback.

An input error (:func:`input_error_types`: a missing run, checkpoint, config or manifest, a malformed
manifest or YAML file, a rejected option or config value) prints ``<prog>: error: <message>`` on
stderr, one line naming the file or option, and the command exits with status 2. Any other
exception is a bug and propagates with its traceback. ``--traceback`` (anywhere on the command
line) or the environment variable ``MMEMB_DEBUG=1`` shows the traceback of input errors too.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

__all__ = ["EXIT_INPUT_ERROR", "TRACEBACK_FLAG", "input_error_types", "one_line", "debug_requested", "run_command"]

EXIT_INPUT_ERROR = 2
TRACEBACK_FLAG = "--traceback"
_MAX_CHARS = 600


def input_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input (imported on use: the data and YAML modules load lazily)."""
    import argparse

    import yaml

    from ..data.manifest import ManifestError
    from ..errors import InputError

    types: tuple[type[BaseException], ...] = (InputError, ManifestError, FileNotFoundError, NotADirectoryError,
                                              IsADirectoryError, argparse.ArgumentError, yaml.YAMLError)
    try:  # a saved tokenizer that cannot be read (names its file)
        from ..data.text import TokenizerError
    except ImportError:  # pragma: no cover - moved elsewhere
        return types
    return (*types, TokenizerError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (whitespace runs collapsed; very long messages cut)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
    message = " ".join(str(text).split()) or type(exc).__name__
    return message if len(message) <= _MAX_CHARS else message[: _MAX_CHARS - 1] + "…"


def debug_requested(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``(show tracebacks, argv without --traceback)``: the flag anywhere, or ``MMEMB_DEBUG=1``."""
    args = list(argv)
    flag = TRACEBACK_FLAG in args
    env = os.environ.get("MMEMB_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or env, [a for a in args if a != TRACEBACK_FLAG]


def run_command(fn: Callable[[], Any], prog: str, debug: bool = False,
                also: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``fn``; an input error (or one of ``also``) prints one line and returns 2 unless ``debug``.
    Returns ``fn``'s result when it is an int (an exit status), else 0."""
    try:
        result = fn()
    except Exception as exc:
        if debug or not isinstance(exc, input_error_types() + also):
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
