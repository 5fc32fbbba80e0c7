"""Page assembly: one self-contained HTML file (inline CSS, images as data URIs, inline SVG, one line of script
that marks the page loaded). A Content-Security-Policy forbids every external load, so the file shows the
same offline, in a mail attachment or years later. Everything read from run files is HTML-escaped here."""

from __future__ import annotations

import json
import math
import re
import time
from html import escape
from typing import Any

from gradwise import __version__
from gradwise.core.progress import format_seconds
from gradwise.report.charts import Chart, colour, histogram_svg
from gradwise.report.data import MISSING, RunData, config_differences
from gradwise.tasks.classify_baseline import against_baseline

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
header{background:#1d2b3a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c7d0da;font-size:12px}
nav{margin:10px 0 4px;font-size:13px}nav a{margin-right:12px;color:#2458a6}
section{background:#fff;border:1px solid #e1e5ea;border-radius:6px;margin:14px 0;padding:10px 18px 14px}
section section{border:0;border-top:1px solid #e1e5ea;border-radius:0;margin:8px 0;padding:4px 0}
h2{font-size:17px;margin:6px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #e1e5ea;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.l,th.l{text-align:left}
pre{background:#f4f5f7;border:1px solid #e1e5ea;border-radius:4px;padding:8px;white-space:pre-wrap;
word-break:break-word;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;margin:6px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #eef0f3}
figcaption{font-size:12px;color:#555}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
background:#6b7785;margin-right:6px;white-space:nowrap}
.b-ok,.b-finished{background:#2e7d32}.b-info,.b-running{background:#2458a6}
.b-warn,.b-interrupted,.b-incomplete{background:#b26a00}.b-bad,.b-diverged{background:#b3261e}
.verdict{border-left:4px solid #c9d1da;padding:4px 10px;margin:8px 0}.verdict p{margin:3px 0}
.verdict ul{margin:3px 0 3px 18px;padding:0}.muted{color:#66707a}.swatch{display:inline-block;width:10px;
height:10px;border-radius:2px;margin-right:6px}
dl.nums{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:4px 0}dl.nums dt{color:#555}
dl.nums dd{margin:0;font-variant-numeric:tabular-nums}.nowrap{white-space:nowrap}
"""


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return escape(str(value), quote=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or value is MISSING:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def fmt_value(value: Any) -> str:
    """A config value as written (0.0003 stays 0.0003, not 0.0003000)."""
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def fmt_seconds(x: Any) -> str:
    return f"{format_seconds(x)} ({x:,.1f} s)" if _finite(x) else "—"


def badge(text: str, cls: str) -> str:
    return f'<span class="badge b-{e(cls)}">{e(text)}</span>'


KNOWN_KINDS = {"converged": "ok", "diverged": "bad", "unstable": "bad", "overfitting": "warn",
               "underfitting": "warn", "still_improving": "info", "too_early": "info", "below_baseline": "bad"}


def _severity(kind: str) -> str:
    """A colour for a diagnosis kind: the kinds gradwise.training.diagnose gives, else guessed from the words (green when
    healthy, red when broken, amber otherwise)."""
    if kind in KNOWN_KINDS:
        return KNOWN_KINDS[kind]
    words = [w for w in re.split(r"[^a-z]+", kind.lower()) if w]
    if any(w in ("ok", "healthy", "fine", "good") for w in words):
        return "ok"
    if "nonfinite" in "".join(words) or any(w.startswith(("diverg", "nan", "explod", "leak", "error", "broken"))
                                           for w in words):
        return "bad"
    return "warn"


# ---------------------------------------------------------------- sections of one run

def summary_html(run: RunData) -> str:
    n = run.numbers()
    best = fmt(n["best_val_loss"]) + (f" at step {fmt(n['best_step'])}" if n["best_step"] is not None else "")
    rows = [("status", badge(run.status, run.status) + e(run.status_note)), ("task", e(run.task)),
            ("best validation loss", e(best)), ("last validation loss", e(fmt(n["last_val_loss"])))]
    for k, v in n["test"].items():
        rows.append((e(k.replace("_", " ")), e(fmt(v))))
    if not n["test"]:
        rows.append(("test", '<span class="muted">not evaluated (yet)</span>'))
    rows += [("steps", e(fmt(n["steps"]))), ("training time", e(fmt_seconds(n["train_seconds"]))),
             ("tokens seen", e(fmt(n["tokens_seen"]))), ("tokens per second", e(fmt(n["tokens_per_second"], 1))),
             ("parameters", e(fmt(n["params"]))), ("non-finite steps skipped", e(fmt(n["nonfinite_steps"])))]
    s = run.summary or {}
    compared = against_baseline(s)
    if compared:
        verdict = "above" if compared["margin"] >= 0 else "below"
        rows.append(("baseline", badge(verdict, "ok" if verdict == "above" else "bad") + e(
            f" {compared['split']} macro-F1 {fmt(compared['baseline_macro_f1'])} for TF-IDF + logistic regression "
            f"(C={compared['c']:g}) against this model's {fmt(compared['model_macro_f1'])}")))
    elif (s.get("baseline") or {}).get("skipped"):
        rows.append(("baseline", e(f"skipped: {s['baseline']['skipped']}")))
    if s.get("split_sizes"):
        rows.append(("split sizes", e(fmt(s["split_sizes"]))))
    if s.get("dedupe"):
        rows.append(("dedupe", e(fmt(s["dedupe"]))))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    notes = "".join(f'<p class="muted">{e(x)}</p>' for x in run.notes)
    return f'<dl class="nums">{body}</dl>{notes}'


def diagnosis_html(verdicts: list[dict[str, Any]]) -> str:
    items = [v for v in verdicts if isinstance(v, dict)]
    if not items:
        return '<p>No problems found.</p>'
    out = []
    for v in items:
        kind = str(v.get("kind", "note"))
        actions = v.get("actions") or []
        if isinstance(actions, str):
            actions = [actions]
        acts = "".join(f"<li>{e(a)}</li>" for a in actions)
        out.append(f'<div class="verdict">{badge(kind, _severity(kind))}<strong>{e(v.get("title", ""))}</strong>'
                   + (f'<p>{e(v["evidence"])}</p>' if v.get("evidence") else "")
                   + (f"<ul>{acts}</ul>" if acts else "") + "</div>")
    return "".join(out)


def samples_html(run: RunData) -> str:
    s = run.sample_settings
    prompt = f'prompt {e(json.dumps(s.get("prompt", ""), ensure_ascii=False))}' if s.get("prompt") else "no prompt"
    how = (f'<p class="muted">{e(s.get("count"))} samples of {e(s.get("max_new_tokens"))} tokens from the best '
           f'checkpoint, {prompt}, temperature {e(s.get("temperature"))}, top-k {e(s.get("top_k"))}, seed '
           f'{e(s.get("seed"))}.</p>')
    return how + "".join(f"<pre>{e(text)}</pre>" for text in run.samples or [])


def classification_html(report: dict[str, Any]) -> str:
    classes = [str(c) for c in report.get("classes", [])]
    per = report.get("per_class", {})
    head = "<tr><th class=l>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    rows = "".join(f"<tr><td class=l>{e(c)}</td>" + "".join(f"<td>{e(fmt(per.get(c, {}).get(k), 3))}</td>"
                                                           for k in ("precision", "recall", "f1", "support"))
                   + "</tr>" for c in classes)
    totals = [f"accuracy {fmt(report.get('accuracy'))}", f"macro-F1 {fmt(report.get('macro_f1'))}"]
    if report.get("multi_label"):
        totals = [f"exact-match accuracy {fmt(report.get('accuracy'))}", f"micro-F1 {fmt(report.get('micro_f1'))}",
                  f"macro-F1 {fmt(report.get('macro_f1'))}"]
    out = f"<h3>Per class (test split)</h3><table>{head}{rows}</table><p>{e(' | '.join(totals))}</p>"
    confusion = report.get("confusion")
    if isinstance(confusion, list) and len(confusion) == len(classes):
        out += "<h3>Confusion matrix</h3><p class=muted>rows: true class, columns: predicted; shade: share of the row</p>"
        cells = "<tr><th class=l>true \\ predicted</th>" + "".join(f"<th>{e(c)}</th>" for c in classes) + "</tr>"
        for c, row in zip(classes, confusion, strict=True):
            total = sum(x for x in row if _finite(x)) or 1
            cells += f"<tr><th class=l>{e(c)}</th>"
            for j, x in enumerate(row):
                share = x / total if _finite(x) else 0
                weight = "font-weight:700;" if classes[j] == c else ""
                text_colour = "#fff" if share > 0.55 else "#1d232b"
                cells += (f'<td style="{weight}background:rgba(36,88,166,{share:.2f});color:{text_colour}">'
                          f"{e(fmt(x))}</td>")
            cells += "</tr>"
        out += f'<table class="confusion">{cells}</table>'
    return out


def data_html(run: RunData, prefix: str = "") -> str:
    out = ""
    check = run.data_check
    if check:
        units = check.get("units") or {}
        where = ", ".join(f"{fmt(units.get(s))} {s}" for s in ("train", "val", "test") if s in units)
        out += (f"<h3>Data check</h3><p class=muted>{e(check.get('corpus', ''))}"
                + (f": {e(where)} {e(check.get('unit', 'unit'))}s" if where else "") + "</p>")
        for v in check.get("verdicts", []):
            if isinstance(v, dict):
                level = str(v.get("level", "info"))
                cls = {"warn": "warn", "ok": "ok"}.get(level, "info")
                out += f'<div class="verdict">{badge(level, cls)}{e(v.get("text", ""))}</div>'
    stats = run.data_stats
    if stats:
        out += "<h3>Data statistics</h3><dl class=nums>"
        for key in ("corpus", "chars", "documents", "paragraphs", "records", "tokens", "label_counts",
                    "imbalance_ratio"):
            if stats.get(key) is not None:
                out += f"<dt>{e(key.replace('_', ' '))}</dt><dd>{e(fmt(stats[key]))}</dd>"
        out += "</dl>"
        hist = stats.get("lengths")
        if isinstance(hist, dict) and hist.get("buckets"):
            what = str(stats.get("lengths_of", "texts"))
            out += (f"<figure id=\"{e('hist-' + prefix + run.name)}\">{histogram_svg(hist, what)}<figcaption>length of "
                    f"{e(what)} in characters: median {e(fmt(hist.get('median')))}, p25 {e(fmt(hist.get('p25')))}, "
                    f"p75 {e(fmt(hist.get('p75')))}, max {e(fmt(hist.get('max')))}</figcaption></figure>")
    return out


def config_html(run: RunData) -> str:
    return (f"<details><summary>config.yaml ({len(run.config_text.splitlines())} lines)</summary>"
            f"<pre>{e(run.config_text)}</pre></details>")


def charts_html(charts: list[Chart]) -> str:
    figs = []
    for c in charts:
        if c.uri is None:
            figs.append(f'<figure id="{e(c.id)}"><p class="muted">{e(c.title)}: no data yet</p></figure>')
        else:
            figs.append(f'<figure id="{e(c.id)}"><img src="{c.uri}" alt="{e(c.alt)}" width="640" height="340">'
                        "</figure>")
    return f'<div class="grid">{"".join(figs)}</div>'


def run_sections(run: RunData, prefix: str) -> list[tuple[str, str, str]]:
    """(id, heading, html) of each section about one run."""
    out = [(f"{prefix}summary", "Summary", summary_html(run))]
    if run.diagnosis is not None:
        out.append((f"{prefix}diagnosis", "Diagnosis", diagnosis_html(run.diagnosis)))
    if run.samples:
        out.append((f"{prefix}samples", "Samples", samples_html(run)))
    elif run.samples_note:
        out.append((f"{prefix}samples", "Samples", f'<p class="muted">{e(run.samples_note)}</p>'))
    if run.test_report:
        out.append((f"{prefix}classification", "Test classification report", classification_html(run.test_report)))
    data = data_html(run, prefix)
    if data:
        out.append((f"{prefix}data", "Data", data))
    out.append((f"{prefix}config", "Config", config_html(run)))
    return out


# ---------------------------------------------------------------- several runs

def comparison_html(runs: list[RunData]) -> str:
    nums = [r.numbers() for r in runs]
    test_keys = list(dict.fromkeys(k for n in nums for k in n["test"]))
    bests = [n["best_val_loss"] for n in nums if _finite(n["best_val_loss"])]
    head = ("<tr><th class=l>run</th><th class=l>status</th><th>best val loss</th><th>at step</th>"
            + "".join(f"<th>{e(k.replace('_', ' '))}</th>" for k in test_keys)
            + "<th>steps</th><th>time</th><th>tokens/s</th><th>params</th></tr>")
    rows = ""
    for i, (r, n) in enumerate(zip(runs, nums, strict=True)):
        best = e(fmt(n["best_val_loss"]))
        if bests and n["best_val_loss"] == min(bests):
            best = f"<strong>{best}</strong>"
        rows += (f'<tr><td class="l nowrap"><span class="swatch" style="background:{colour(i)}"></span>'
                 f'<a href="#run-{i + 1}-summary">{e(r.name)}</a></td><td class=l>{badge(r.status, r.status)}</td>'
                 f"<td>{best}</td><td>{e(fmt(n['best_step']))}</td>"
                 + "".join(f"<td>{e(fmt(n['test'].get(k)))}</td>" for k in test_keys)
                 + f"<td>{e(fmt(n['steps']))}</td><td>{e(format_seconds(n['train_seconds']) if _finite(n['train_seconds']) else '—')}</td>"
                 f"<td>{e(fmt(n['tokens_per_second'], 1))}</td><td>{e(fmt(n['params']))}</td></tr>")
    out = f"<table>{head}{rows}</table>"
    diffs = config_differences(runs)
    if diffs:
        dh = "<tr><th class=l>config key</th>" + "".join(f"<th class=l>{e(r.name)}</th>" for r in runs) + "</tr>"
        db = "".join(f"<tr><td class=l>{e(k)}</td>" + "".join(f"<td class=l>{e(fmt_value(v))}</td>" for v in values)
                     + "</tr>" for k, values in diffs)
        out += f"<h3>Config differences ({len(diffs)} keys)</h3><table>{dh}{db}</table>"
    else:
        out += "<p>The configs are the same (apart from name and out_dir).</p>"
    return out


# ---------------------------------------------------------------- the page

def section(sid: str, heading: str, body: str, level: int = 2) -> str:
    return f'<section id="{e(sid)}"><h{level}>{e(heading)}</h{level}>{body}</section>'


def render_page(runs: list[RunData], charts: list[Chart], title: str | None = None) -> str:
    many = len(runs) > 1
    title = title or ("gradwise report: " + (", ".join(r.name for r in runs) if many else runs[0].name))
    parts: list[str] = []
    nav: list[tuple[str, str]] = []
    if many:
        parts.append(section("comparison", "Comparison", comparison_html(runs)))
        nav.append(("comparison", "Comparison"))
        parts.append(section("curves", "Curves", '<p class="muted">one colour per run (as in the comparison '
                              "table); training solid, validation dashed; red x: non-finite loss</p>"
                              + charts_html(charts)))
        nav.append(("curves", "Curves"))
        for i, run in enumerate(runs):
            inner = "".join(section(sid, h, body, 3) for sid, h, body in run_sections(run, f"run-{i + 1}-"))
            parts.append(f'<section id="run-{i + 1}"><h2><span class="swatch" style="background:{colour(i)}"></span>'
                         f"{e(run.name)}</h2>{inner}</section>")
            nav.append((f"run-{i + 1}", run.name))
    else:
        sections = run_sections(runs[0], "")
        sections.insert(2 if runs[0].diagnosis is not None else 1, ("curves", "Curves", charts_html(charts)))
        for sid, heading, body in sections:
            parts.append(section(sid, heading, body))
            nav.append((sid, heading))
    return wrap_page(title, " · ".join(str(r.path) for r in runs), nav, parts)


def wrap_page(title: str, where: str, nav: list[tuple[str, str]], parts: list[str]) -> str:
    """The self-contained page around its sections: header, the section links, the loaded marker."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    where = e(where)
    links = "".join(f'<a href="#{e(sid)}">{e(label)}</a>' for sid, label in nav)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)}</title><style>{STYLE}</style></head>\n<body>"
            f"<header><h1>{e(title)}</h1><p>{where} · generated {e(stamp)} by gradwise {e(__version__)}</p></header>"
            f"<main><nav>{links}</nav>\n" + "\n".join(parts) + "</main>\n"
            '<script>document.body.dataset.ready = "1";</script>\n</body></html>\n')
