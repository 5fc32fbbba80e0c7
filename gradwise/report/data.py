"""Everything a report shows about one run, read from its directory: config, metrics, summary, data check,
status (finished, running, interrupted, diverged) and the numbers, with what is missing worked out from
metrics.jsonl so a run still training or one that died without a summary reports too."""

from __future__ import annotations

import json
import math
import statistics
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradwise.config.keys import flatten
from gradwise.core.rundir import RunDir, read_metrics_checked, skipped_lines_note
from gradwise.inference import generate_text
from gradwise.tools.data_stats import data_stats

RUNNING_WITHIN_S = 600  # no summary.json, metrics.jsonl written this recently: the run is probably still going
NOT_COMPARED = ("name", "out_dir")  # where a run lives, not what it did


@dataclass
class RunData:
    path: Path
    name: str
    config_text: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None
    data_check: dict[str, Any] | None
    data_stats: dict[str, Any] | None
    status: str  # finished | interrupted | running | incomplete | diverged
    status_note: str
    notes: list[str] = field(default_factory=list)  # files that could not be read
    diagnosis: list[dict[str, Any]] | None = None
    samples: list[str] | None = None
    samples_note: str = ""
    sample_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.config.get("task") or (self.summary or {}).get("task") or "lm")

    @property
    def test_report(self) -> dict[str, Any] | None:
        report = (self.summary or {}).get("test_report")
        return report if isinstance(report, dict) and report.get("classes") else None

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.metrics if r.get("kind") == kind and isinstance(r.get("step"), (int, float))]

    def numbers(self) -> dict[str, Any]:
        """The summary's numbers; for a run without summary.json, the same worked out from metrics.jsonl."""
        s = self.summary or {}
        evals = [r for r in self.records("eval") if _finite(r.get("val_loss"))]
        trains = self.records("train")
        tests = self.records("test")
        best = min(evals, key=lambda r: r["val_loss"]) if evals else None
        out: dict[str, Any] = {
            "best_val_loss": s.get("best_val_loss", best["val_loss"] if best else None),
            "best_step": s.get("best_step", best["step"] if best else None),
            "last_val_loss": s.get("last_val_loss", self.records("eval")[-1].get("val_loss")
                                   if self.records("eval") else None),
            "steps": s.get("steps", max((r["step"] for r in self.metrics if isinstance(r.get("step"), int)),
                                        default=None)),
            "train_seconds": s.get("train_seconds", _last(self.metrics, "elapsed_s")),
            "tokens_seen": s.get("tokens_seen", _last(self.metrics, "tokens")),
            "tokens_per_second": s.get("tokens_per_second", _median([r.get("tokens_per_s") for r in trains])),
            "params": s.get("params", checkpoint_params(self.path)),
            "stopped_because": s.get("stopped_because"),
            "nonfinite_steps": s.get("nonfinite_steps", sum(int(r.get("skipped_steps", 0)) for r in trains)),
        }
        test = {k: v for k, v in s.items() if k.startswith("test_") and k != "test_report"}
        if not test and tests:
            test = {k: v for k, v in tests[-1].items() if k.startswith("test_")}
        out["test"] = test
        return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _last(records: list[dict[str, Any]], key: str) -> Any:
    for r in reversed(records):
        if _finite(r.get(key)):
            return r[key]
    return None


def _median(values: list[Any]) -> float | None:
    good = [v for v in values if _finite(v)]
    return round(statistics.median(good), 1) if good else None


def checkpoint_params(run_path: Path) -> int | None:
    """Parameter count read from a checkpoint's safetensors header (no weights loaded), when there is one."""
    for which in ("best", "last"):
        f = run_path / "checkpoints" / which / "model.safetensors"
        try:
            with open(f, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, struct.error, ValueError):
            continue
        return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return None


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} could not be read ({e.__class__.__name__}: {e})")
        return None
    return data if isinstance(data, dict) else None


def _nonfinite_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log lines whose loss is null (written for NaN/inf) or not finite."""
    out = []
    for r in metrics:
        key = {"train": "train_loss", "eval": "val_loss"}.get(r.get("kind", ""))
        if key and key in r and not _finite(r[key]):
            out.append(r)
    return out


def run_status(run: RunDir, metrics: list[dict[str, Any]], summary: dict[str, Any] | None,
               now: float | None = None) -> tuple[str, str]:
    bad = _nonfinite_records(metrics)
    last_losses = [r for r in metrics if r.get("kind") in ("train", "eval")][-2:]
    ends_bad = any(r in bad for r in last_losses)
    if summary is None:
        if bad:
            return "diverged", (f"loss became non-finite at step {bad[0].get('step')}; training stopped before "
                                "writing summary.json")
        age = (now or time.time()) - run.metrics.stat().st_mtime if run.metrics.is_file() else None
        if age is not None and age < RUNNING_WITHIN_S:
            return "running", f"no summary.json yet; metrics.jsonl was written {age:.0f}s ago"
        return "incomplete", (f"no summary.json: the run stopped before finishing; continue it with "
                              f"gradwise train --resume {run.path}")
    if ends_bad:
        return "diverged", f"loss is non-finite at the end of training (first at step {bad[0].get('step')})"
    stopped = summary.get("stopped_because")
    if stopped == "interrupted":
        return "interrupted", f"stopped by the user; continue it with gradwise train --resume {run.path}"
    note = f"stopped: {stopped}" if stopped else "finished"
    if bad:
        note += f"; {len(bad)} log line(s) with a non-finite loss (first at step {bad[0].get('step')})"
    return "finished", note


def load_run_data(path: str | Path) -> RunData:
    """Read one run directory (raises GradwiseError when it is not one)."""
    run = RunDir.existing(path)
    notes: list[str] = []
    config_text = run.config.read_text(encoding="utf-8", errors="replace")
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as e:
        notes.append(f"config.yaml could not be parsed ({e.__class__.__name__})")
        config = None
    metrics, skipped = read_metrics_checked(run.metrics)
    damaged = skipped_lines_note(run.metrics, skipped)
    if damaged:
        notes.append(damaged)
    summary = _read_json(run.summary, notes)
    data_check = _read_json(run.path / "data_check.json", notes)
    stats = _read_json(run.path / "data_stats.json", notes)
    if stats is None and data_check is not None and isinstance(data_check.get("stats"), dict):
        stats = {**data_check["stats"], "from_data_check": True}  # lengths only: --data-stats adds the rest
    status, note = run_status(run, metrics, summary)
    name = run.path.resolve().name
    return RunData(run.path, name, config_text, config if isinstance(config, dict) else {}, metrics, summary,
                   data_check, stats, status, note, notes)


MISSING = object()


def config_differences(runs: list[RunData]) -> list[tuple[str, list[Any]]]:
    """(dotted key, value per run) for every config key whose value is not the same in all runs;
    a key a run does not have is ``MISSING`` there."""
    flat = [flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if k.split(".")[0] not in NOT_COMPARED})
    out = []
    for k in keys:
        values = [f.get(k, MISSING) for f in flat]
        if len({json.dumps(v, sort_keys=True, default=str) if v is not MISSING else "\0missing" for v in values}) > 1:
            out.append((k, values))
    return out


def add_samples(data: RunData, count: int = 3, max_new_tokens: int = 120, prompt: str = "", seed: int = 0,
                temperature: float = 0.8, top_k: int | None = 50, device: str = "auto") -> None:
    """A few samples from the best checkpoint of a language-model run (fixed seed, so a report is repeatable).
    Missing checkpoint or any failure: no samples, and a note saying why."""
    if data.task != "lm" or count <= 0:
        return
    data.sample_settings = {"count": count, "max_new_tokens": max_new_tokens, "prompt": prompt, "seed": seed,
                            "temperature": temperature, "top_k": top_k, "checkpoint": "best"}
    if not (data.path / "checkpoints" / "best" / "model.safetensors").is_file():
        data.samples_note = "no best checkpoint yet"
        return
    try:
        data.samples = generate_text(data.path, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_k=top_k, num_samples=count, seed=seed, checkpoint="best", device=device)
    except Exception as e:  # noqa: BLE001 - a report shows what it can; sampling is a nicety
        data.samples = None
        data.samples_note = f"could not sample: {e.__class__.__name__}: {e}"


def add_data_stats(data: RunData) -> None:
    """Corpus statistics from the run's own config (as ``gradwise data stats`` prints them); a corpus that is
    no longer where the config says leaves a note instead."""
    try:
        data.data_stats = data_stats(str(data.path / "config.yaml"))
    except Exception as e:  # noqa: BLE001 - the rest of the report stands without it
        data.notes.append(f"data statistics could not be computed: {e.__class__.__name__}: {e}")
