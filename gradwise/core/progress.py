"""Progress display: a live bar on a terminal, plain periodic lines elsewhere (CI, log files)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class TrainingProgress:
    """Shows step, loss, tokens/s and ETA. ``live=None`` picks the bar only when stdout is a terminal."""

    def __init__(self, total_steps: int, start_step: int = 0, live: bool | None = None, quiet: bool = False):
        self.total = total_steps
        self.start_step = start_step
        self.quiet = quiet
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.live = (self.console.is_terminal if live is None else live) and not quiet
        self._t0 = time.perf_counter()
        self._bar: Progress | None = None
        if self.live:
            self._bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, info="")
            self._bar.start()

    def eta(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self._t0) / done * (self.total - step)

    def update(self, step: int, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif not self.quiet:
            eta = self.eta(step)
            eta_s = format_seconds(eta) if eta == eta else "?"
            self.console.print(f"step {step:>6}/{self.total} | {info} | eta {eta_s}")

    def advance(self, step: int) -> None:
        """Move the live bar (cheap: called every step; plain output waits for log lines)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
