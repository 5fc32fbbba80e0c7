"""What a study found: a table of its trials (best first) read back from ``trials.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError


def read_trials(study_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(study_dir) / "trials.json"
    if not path.is_file():
        raise GradwiseError(f"'{study_dir}' is not a gradwise study directory (no trials.json); "
                            "give a directory such as studies/NAME that `gradwise tune` created")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GradwiseError(f"{path} is damaged ({exc.__class__.__name__}: {exc}); `gradwise tune --resume` with the "
                            "same command rewrites it from the study's storage") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise GradwiseError(f"{path} is not a list of trials; `gradwise tune --resume` with the same command "
                            "rewrites it from the study's storage")
    return rows


def trials_table(rows: list[dict[str, Any]], limit: int | None = 20) -> str:
    """Plain-text table: finished trials by validation loss, then pruned, then failed (with reasons)."""
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2, "RUNNING": 3, "WAITING": 4}
    rows = sorted(rows, key=lambda r: (order.get(r["state"], 5), r["value"] if r["value"] is not None else 0.0))
    keys = sorted({k for r in rows for k in r["params"]})
    header = ["trial", "state", "val loss", "steps", *keys]
    body = []
    for r in rows[:limit]:
        cells = [str(r["number"]), r["state"].lower(), f"{r['value']:.4f}" if r["value"] is not None else "-",
                 str(r["steps"] if r["steps"] is not None else "-")]
        cells += [_fmt(r["params"].get(k)) for k in keys]
        if r.get("fail_reason"):
            cells[1] += f" ({r['fail_reason'][:60]})"
        body.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in body]
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    lines.append(f"{len(rows)} trials: {counts['COMPLETE']} finished, {counts['PRUNED']} pruned, "
                 f"{counts['FAIL']} failed" + (f" (showing {limit})" if limit and len(rows) > limit else ""))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
