"""The page of one autofit (``<autofit dir>/report.html``): the validation score of every candidate by round,
each round's decision and each candidate's reason, verdicts, score and cost, and the winner beside the start
(the run report's comparison and curves of the two). Read from ``autofit.json`` alone, plus the two runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import write_text_atomic
from gradwise.report.charts import colour, curve_charts, maybe_log, new_figure, png_uri
from gradwise.report.data import load_run_data
from gradwise.report.html import badge, charts_html, comparison_html, e, fmt, section, wrap_page

RECORD = "autofit.json"


def read_autofit(path: str | Path) -> dict[str, Any]:
    """An autofit directory's record, or one line saying what the directory is not."""
    file = Path(path) / RECORD
    if not file.is_file():
        raise GradwiseError(f"{path} is not an autofit directory (no {RECORD}); give the directory autofit wrote")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GradwiseError(f"{file} is damaged ({exc}); the autofit's runs are still in its trials/") from None


def decided_by(record: dict[str, Any]) -> str:
    """What ranked the candidates: the selection score of their best checkpoints (``train.best_on``). Records
    of the first version ranked a classifier on macro-F1."""
    return record.get("decides") or ("macro_f1" if record.get("task") == "classify" else "loss")


def _shown(score: float | None, record: dict[str, Any]) -> float | None:
    if score is None or not math.isfinite(score):
        return None
    return score if decided_by(record) == "loss" else 1 - score


def _metric(record: dict[str, Any]) -> str:
    return f"validation {decided_by(record).replace('_f1', '-F1').replace('_', ' ')}"


def _score_cell(c: dict[str, Any], record: dict[str, Any]) -> str:
    if c["state"] != "complete":
        return c["state"]
    f1 = (c.get("val") or {}).get("macro_f1")
    beside = f" (macro-F1 {fmt(f1)})" if decided_by(record) != "macro_f1" and isinstance(f1, (int, float)) else ""
    return fmt(_shown(c.get("score"), record)) + beside


def score_chart(record: dict[str, Any]) -> str:
    """Every finished candidate's score at its round (start and winner marked), and the best so far."""
    fig, ax = new_figure()
    best_so_far: list[tuple[int, float]] = []
    best = None
    for r in record["rounds"]:
        xs = [r["round"]] * len(r["candidates"])
        ys = [_shown(c.get("score"), record) for c in r["candidates"]]
        pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color=colour(0 if r["stage"] != "promote" else 1),
                       alpha=0.8, label=None)
            pick = min if decided_by(record) == "loss" else max
            top = pick(p[1] for p in pts)
            best = top if best is None else pick(best, top)
        if best is not None:
            best_so_far.append((r["round"], best))
    if not best_so_far:
        return ""
    ax.plot([b[0] for b in best_so_far], [b[1] for b in best_so_far], color="#444", linewidth=1.2,
            label="best so far")
    for slot, mark, name in ((record.get("best"), "*", "winner"), ("0.start", "D", "start")):
        c = _candidate(record, slot)
        if c is not None and _shown(c.get("score"), record) is not None:
            ax.scatter([_round_of(record, slot)], [_shown(c["score"], record)], s=90 if mark == "*" else 40,
                       marker=mark, color=colour(3 if mark == "*" else 2), label=name, zorder=3)
    ax.scatter([], [], s=18, color=colour(0), label="expand (from the diagnosis, TPE)")
    ax.scatter([], [], s=18, color=colour(1), label="promote (longer runs)")
    if decided_by(record) == "loss":
        maybe_log(ax, [y for r in record["rounds"] for c in r["candidates"] if (y := _shown(c.get("score"), record))])
    ax.set_xlabel("round")
    ax.set_ylabel(_metric(record))
    ax.set_title(f"{_metric(record)} of every candidate, by round")
    ax.legend(fontsize=8, loc="best")
    alt = f"{_metric(record)} of each candidate against the round it ran in"
    return f'<figure id="chart-rounds"><img src="{png_uri(fig)}" alt="{e(alt)}" width="640" height="340"></figure>'


def _candidate(record: dict[str, Any], slot: str | None) -> dict[str, Any] | None:
    return next((c for r in record["rounds"] for c in r["candidates"] if c["slot"] == slot), None)


def _round_of(record: dict[str, Any], slot: str | None) -> int:
    return next((r["round"] for r in record["rounds"] for c in r["candidates"] if c["slot"] == slot), 0)


def summary_html(record: dict[str, Any]) -> str:
    task, budget = record["task"], record["budget"]
    unit = "s" if budget["unit"] == "seconds" else " tokens"
    rows = [("task", e(task)), ("budget", e(f"{budget['amount']:,.0f}{unit}; spent {record.get('spent', 0):,.0f}{unit}"
                                          " (the probe and the start's sizing included)"))]
    best, start = _candidate(record, record.get("best")), _candidate(record, "0.start")
    if best is not None:
        rows.append(("winner", e(f"{best['slot']}: {_metric(record)} {fmt(_shown(best['score'], record))} after "
                                 f"{best['steps']:,} steps")))
    if start is not None:
        rows.append(("start", e(f"{_metric(record)} {fmt(_shown(start.get('score'), record))} after {start['steps']:,} "
                                "steps")))
    test = record.get("test")
    if test:
        shown = {k: v for k, v in test.items() if k != "slot"}
        rows.append(("test (read once)", e(", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in shown.items()))))
    base = record.get("baseline") or {}
    if (base.get("test") or {}).get("macro_f1") is not None and test:
        margin = test.get("macro_f1", math.nan) - base["test"]["macro_f1"]
        rows.append(("baseline", badge("above" if margin >= 0 else "below", "ok" if margin >= 0 else "bad") +
                     e(f" TF-IDF + logistic regression: test macro-F1 {fmt(base['test']['macro_f1'])} "
                       f"({margin:+.4f} for the winner)")))
    plan = record.get("start_plan")
    if plan:
        rows.append(("start sized by", e("; ".join(plan.get("notes") or []) or " ".join(plan["overrides"]))))
    if record.get("explore_stop"):
        rows.append(("rounds stopped", e(record["explore_stop"])))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="nums">{body}</dl>'


def rounds_html(record: dict[str, Any]) -> str:
    out = []
    for r in record["rounds"]:
        rows = "".join(
            f"<tr><td class=l>{e(c['slot'])}</td><td class=l>{e(_changes(c))}</td><td class=l>{e(c['reason'])}</td>"
            f"<td>{e(_score_cell(c, record))}</td>"
            f"<td class=l>{e(', '.join(v['kind'] for v in c.get('verdicts') or []) or c.get('fail_reason') or '')}"
            f"</td><td class=nowrap>{e(_cost(c, record))}</td></tr>" for c in r["candidates"])
        out.append(f"<h3>round {r['round']}: {e(r['stage'])} at {r['steps']:,} steps</h3><p>{e(r['why'])}</p>"
                   "<table><tr><th class=l>slot</th><th class=l>changes from its parent</th><th class=l>why tried</th>"
                   f"<th>{e(_metric(record))}</th><th class=l>verdicts</th><th>cost</th></tr>{rows}</table>")
    return "".join(out)


def _changes(c: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in (c.get("changes") or {}).items()) or "(as its parent)"


def _cost(c: dict[str, Any], record: dict[str, Any]) -> str:
    return f"{c['cost']:,.0f} tokens" if record["budget"]["unit"] == "tokens" else f"{c['cost']:.1f} s"


def autofit_page(path: str | Path) -> str:
    """The HTML of an autofit directory's page."""
    record = read_autofit(path)
    parts = [section("summary", "Summary", summary_html(record))]
    nav = [("summary", "Summary")]
    chart = score_chart(record)
    if chart:
        parts.append(section("rounds-chart", "Validation by round", chart))
        nav.append(("rounds-chart", "Validation by round"))
    parts.append(section("rounds", "Rounds and decisions", rounds_html(record)))
    nav.append(("rounds", "Rounds and decisions"))
    runs = [c for c in (_candidate(record, "0.start"), _candidate(record, record.get("best"))) if c is not None]
    runs = [c for i, c in enumerate(runs) if c["slot"] not in {x["slot"] for x in runs[:i]}]
    loaded = [load_run_data(c["run"]) for c in runs if c.get("run") and Path(c["run"], "metrics.jsonl").is_file()]
    if loaded:
        body = comparison_html(loaded) + charts_html(curve_charts(loaded)) if len(loaded) > 1 else \
            charts_html(curve_charts(loaded))
        parts.append(section("winner", "The winner beside the start", body))
        nav.append(("winner", "Winner and start"))
    return wrap_page(f"gradwise autofit: {Path(path).name}", str(path), nav, parts)


def write_autofit_page(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the page (default ``<path>/report.html``) through a temporary file; returns where."""
    page = autofit_page(path)
    target = Path(out) if out is not None else Path(path) / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, page)
    return target
