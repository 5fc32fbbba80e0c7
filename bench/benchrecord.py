"""Appending a benchmark's result to docs/benchmarks.md with the exact command, machine and date."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RECORD_FILE = REPO / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip() or "unknown"
    return (f"{platform.platform()}; {cpu}; os.cpu_count() {os.cpu_count()}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}; gradwise at {rev}")


def append_record(title: str, body: str, notes: list[str] = (), path: Path = RECORD_FILE) -> None:
    """Append a section: title with the time, the command that ran, the machine, the body, notes."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\nAppended by `bench/*.py --record`. Figures hold for one machine at one "
                        "time: compare ratios, not absolute tokens/s across machines.\n", encoding="utf-8")
    ran = Path(sys.argv[0]).resolve()
    script = ran.relative_to(REPO) if ran.is_relative_to(REPO) else ran
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"\n## {title}, {datetime.now().astimezone().isoformat(timespec='seconds')}\n\n"
                 f"- command: `{shlex.join(['python3', str(script), *sys.argv[1:]])}`\n"
                 f"- machine: {machine()}\n\n{body}\n" + ("\n" if notes else "") + "".join(f"- {n}\n" for n in notes))


def spread(values: list[float], digits: int = 3) -> str:
    """mean ± half the range (the seeds' spread, not a confidence interval)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def paired(diff: list[float]) -> tuple[str, int]:
    """("mean ± standard error", how many are >= 0) of paired differences, such as a model minus the baseline
    split by split (the splits' own spread cancels)."""
    se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    return f"{statistics.mean(diff):+.3f} ± {se:.3f}", sum(d >= 0 for d in diff)


def seed_list(text: str) -> list[int]:
    """Seeds from ``A..B`` (inclusive) or a comma-separated list."""
    if ".." in text:
        lo, hi = text.split("..")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]
