"""The run directory: config, tokenizer, metrics, checkpoints, plots and summary of one run."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError


@dataclass
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last"

    def checkpoint(self, which: str) -> Path:
        if which not in ("best", "last"):
            raise GradwiseError(f"unknown checkpoint '{which}'; use best or last")
        return self.best if which == "best" else self.last

    @staticmethod
    def existing(path: str | Path) -> RunDir:
        run = RunDir(Path(path))
        if not run.config.is_file():
            raise GradwiseError(f"'{path}' is not a gradwise run directory (no config.yaml); "
                                "give a directory such as runs/NAME that `gradwise train` created")
        return run


def default_run_name(config_name: str) -> str:
    return f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def clean_json(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/Infinity: write them as null so every line parses everywhere."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once so a kill loses nothing."""

    def __init__(self, path: Path, resume_step: int | None = None, mirror: Any = None):
        self.path = path
        self.mirror = mirror  # e.g. a TensorBoardMirror: gets every record too
        if resume_step is not None and path.exists():
            self._truncate_after(resume_step)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run, closed by close()

    def _truncate_after(self, step: int) -> None:
        """Drop lines written after the checkpoint we resume from: the resumed run writes them again."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if rec.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(clean_json(record)) + "\n")
        self._fh.flush()
        if self.mirror is not None:
            self.mirror.write(record)

    def close(self) -> None:
        self._fh.close()
        if self.mirror is not None:
            self.mirror.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (damaged lines left out: :func:`read_metrics_checked` names them)."""
    return read_metrics_checked(path)[0]


def read_metrics_checked(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(records, numbers of the lines skipped): a line that is not a JSON object (cut short by a crash, binary
    noise, an edit) is skipped, never a traceback. A blank line is not counted."""
    if not path.is_file():
        return [], []
    out, skipped = [], []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            out.append(record)
        else:
            skipped.append(number)
    return out, skipped


def skipped_lines_note(path: Path, skipped: list[int]) -> str | None:
    """One line saying which lines of a damaged metrics file were skipped, or None when none were."""
    if not skipped:
        return None
    shown = ", ".join(str(n) for n in skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    return (f"{path}: skipped {len(skipped)} damaged line(s) that are not JSON records (line {shown}); the "
            "numbers below come from the rest")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over: readers see the old or the new
    file whole, never a half-written one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # concurrent writers never share one
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(clean_json(data), indent=2) + "\n")


def check_dir_path(path: str | Path, what: str) -> Path:
    """``path`` as a directory that can be made: neither it nor any folder above it is an existing file."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise GradwiseError(f"{what} {path} {where}; give a directory (or a new name)")
            break
    return path


def check_file_path(path: str | Path, what: str) -> Path:
    """``path`` as a file that can be written: not an existing directory, its folder makeable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise GradwiseError(f"{what} {path} is a directory; give a file name, e.g. {path / 'report.html'}")
    check_dir_path(path.parent, f"the folder of {what}")
    return path


def check_out_dir(out: str | Path, force: bool) -> Path:
    """``--out`` as a path that may be written: not a file, and empty unless ``force``."""
    out = check_dir_path(out, "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GradwiseError(f"--out {out} exists and is not empty; choose another directory or add --force")
    return out
