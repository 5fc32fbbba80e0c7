"""Mirror metrics.jsonl records into TensorBoard event files, for those who prefer to watch runs there.

Every number in a record becomes a scalar at the record's step, named by its prefix: ``train_loss`` ->
``train/loss``, ``val_loss`` -> ``val/loss``, ``test_accuracy`` -> ``test/accuracy``; the rest keep their
name (``lr``, ``grad_norm``, ``tokens_per_s``, ``update_ratio`` ...). metrics.jsonl stays the record of truth;
this only copies it. Needs the ``tensorboard`` package (``pip install 'gradwise[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import RunDir, read_metrics

PREFIXES = ("train", "val", "test")
SKIP = ("kind", "step")


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key."""
    head, _, rest = key.partition("_")
    return f"{head}/{rest}" if head in PREFIXES and rest else key


class TensorBoardMirror:
    """``write(record)`` for each metrics.jsonl record, ``close()`` at the end (or use it as a context manager)."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GradwiseError("install tensorboard: pip install 'gradwise[tensorboard]'") from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            return
        for key, value in record.items():
            if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # null (a non-finite value in metrics.jsonl), text, lists
            self._writer.add_scalar(scalar_tag(key), float(value), global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mirror_run(run_dir: str | Path, log_dir: str | Path | None = None) -> Path:
    """Write a finished (or running) run's metrics.jsonl as TensorBoard events, by default into
    RUN_DIR/tensorboard; returns the log directory."""

    run = RunDir.existing(run_dir)
    target = Path(log_dir) if log_dir is not None else run.path / "tensorboard"
    with TensorBoardMirror(target) as tb:
        for record in read_metrics(run.metrics):
            tb.write(record)
    return target

