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
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # concurrent writers never share one
    tmp.write_text(json.dumps(clean_json(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_out_dir(out: str | Path, force: bool) -> Path:
    """``--out`` as a path that may be written: not a file, and empty unless ``force``."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise GradwiseError(f"--out {out} is a file; give a directory to write the model into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GradwiseError(f"--out {out} exists and is not empty; choose another directory or add --force")
    return out
