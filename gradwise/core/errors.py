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


OUT_OF_MEMORY_EXIT = 4


def out_of_memory_line(exc: BaseException) -> str | None:
    """The one line for an allocation that failed mid-run (CUDA or CPU), or None when ``exc`` is something else.

    The preflight refuses what the estimate says cannot fit; this is for what it could not foresee (fragmentation,
    other processes, a longer batch). Checkpoints are written atomically, so the last one is whole."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cuda = type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
    cpu = isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text))
    if not (cuda or cpu):
        return None
    where = "the GPU" if cuda else "RAM"
    detail = f" ({text[:160]})" if text else ""
    return (f"gradwise: error: out of memory in {where}{detail}; the last checkpoint is intact: --resume the run "
            "with a lower train.batch_size (a higher train.grad_accum keeps the global batch), or start a smaller "
            "model (gradwise plan estimates the memory)")
