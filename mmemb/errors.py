"""Errors that mean bad input rather than a bug in mmemb.

The ``mmemb`` command (and the ``train.py`` / ``evaluate.py`` shims) prints these, and the other
input errors listed in :func:`mmemb.cli.errors.input_error_types` (a missing file, a malformed
manifest, a rejected command-line option), as one line on stderr with exit status 2 instead of a
traceback; ``--traceback`` or ``MMEMB_DEBUG=1`` shows the traceback. Every message names what was
wrong: the file, the option or the value.
"""

from __future__ import annotations

__all__ = ["InputError", "ConfigError"]


class InputError(ValueError):
    """An option, a value or a file's content that a command cannot use; the message names it."""


class ConfigError(InputError):
    """A configuration value rejected while the run's classes are built (a check in a config
    dataclass or a constructor); the message names the config files and the failed check."""
