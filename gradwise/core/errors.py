"""User-facing errors: one line that names the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import sys


class GradwiseError(Exception):
    """A problem with the user's input (config, data, paths, checkpoints).

    The command line prints ``gradwise: error: <message>`` and exits with ``exit_code``;
    the Python API lets it propagate so callers can catch it.
    """

    exit_code = 2


class ConfigError(GradwiseError):
    """An unknown key, a wrong type or an impossible value in a config."""


class DataError(GradwiseError):
    """A corpus that cannot be read, parsed or split as asked."""


class CheckpointError(GradwiseError):
    """A checkpoint that is missing, incomplete or damaged."""


class TrainingStopped(GradwiseError):
    """Training cannot go on (for example too many non-finite steps in a row)."""

    exit_code = 3


def say(line: str) -> None:
    """One write of the whole line to stderr: under torchrun every rank may say its error at once on a shared
    stderr, and print's two writes (text, then newline) let two ranks' lines run together."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def say_error(exc: GradwiseError) -> None:
    """``gradwise: error: <message>``, once: ranks that stop together say it before they leave the process
    group (torchrun ends the other ranks as soon as one exits), and the command line does not repeat it."""
    if not getattr(exc, "said", False):
        say(f"gradwise: error: {exc}")
        exc.said = True  # type: ignore[attr-defined]
