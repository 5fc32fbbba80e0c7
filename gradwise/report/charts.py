"""The report's figures: curves over steps as PNG (matplotlib, embedded as base64 data URIs) and the length
histogram as inline SVG. Several runs share each chart, one colour per run."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from html import escape
from typing import Any

from gradwise.report.data import RunData

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
NONFINITE = "#c00000"


@dataclass
class Chart:
    id: str
    title: str
    alt: str
    uri: str | None  # data:image/png;base64,... or None when no run has the metric


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _series(run: RunData, kind: str, key: str) -> tuple[list[float], list[float], list[float]]:
    """(steps, values) of the finite points, and the steps where the value is null or not finite."""
    xs, ys, bad = [], [], []
    for r in run.records(kind):
        if key not in r:
            continue
        (xs if _finite(r[key]) else bad).append(r["step"])
        if _finite(r[key]):
            ys.append(float(r[key]))
    return xs, ys, bad


def _label(run: RunData, many: bool, what: str) -> str:
    name = run.name if len(run.name) <= 28 else run.name[:27] + "…"
    return f"{name} {what}" if many else what


def png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def new_figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.4), dpi=100, layout="tight")
    ax = fig.subplots()
    ax.grid(alpha=0.3)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


def maybe_log(ax: Any, values: list[float]) -> None:
    """Log scale when the values are positive and span more than two decades (a spike or a divergence would
    otherwise flatten the rest of the curve)."""
    if values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")


def _mark_nonfinite(ax: Any, steps: list[float], label: str | None) -> None:
    """A red x at the foot of the chart for each step whose value is non-finite, a faint line at the first."""
    if steps:
        ax.scatter(steps, [0.02] * len(steps), transform=ax.get_xaxis_transform(), marker="x", color=NONFINITE,
                   s=30, zorder=5, label=label, clip_on=False)
        ax.axvline(steps[0], color=NONFINITE, alpha=0.35, linestyle=":", linewidth=1)


def line_chart(runs: list[RunData], chart_id: str, title: str, ylabel: str,
               series: list[tuple[str, str, str]]) -> Chart:
    """One chart of ``series`` ((kind, key, what) triples, e.g. ('train', 'train_loss', 'train')) for every run."""
    many = len(runs) > 1
    fig, ax = new_figure()
    drawn: list[float] = []
    steps: list[float] = []
    nonfinite_labelled = False
    for i, run in enumerate(runs):
        for j, (kind, key, what) in enumerate(series):
            xs, ys, bad = _series(run, kind, key)
            if ys:
                dashed = j > 0
                ax.plot(xs, ys, color=colour(i), linestyle="--" if dashed else "-", linewidth=1.6 if dashed else 1.2,
                        marker="o" if kind == "eval" else None, markersize=3,
                        label=_label(run, many, what) if (many or len(series) > 1) else None)
                drawn += ys
            steps += xs + bad
            _mark_nonfinite(ax, bad, None if nonfinite_labelled else "non-finite")
            nonfinite_labelled = nonfinite_labelled or bool(bad)
    if not drawn and not nonfinite_labelled:
        return Chart(chart_id, title, f"{title}: no data", None)
    maybe_log(ax, drawn)
    lo, hi = min(steps), max(steps)  # the x marks do not widen the axis by themselves
    pad = (hi - lo) * 0.04 or 1
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    names = ", ".join(r.name for r in runs)
    return Chart(chart_id, title, f"{title} against step for {names}", png_uri(fig))


def curve_charts(runs: list[RunData]) -> list[Chart]:
    """Loss (train and validation), learning rate, gradient norm, throughput; validation metrics of classifiers."""
    charts = [
        line_chart(runs, "chart-loss", "Loss", "loss (nats per token)",
                   [("train", "train_loss", "train"), ("eval", "val_loss", "validation")]),
        line_chart(runs, "chart-lr", "Learning rate", "learning rate", [("train", "lr", "lr")]),
        line_chart(runs, "chart-grad-norm", "Gradient norm", "gradient norm (before clipping)",
                   [("train", "grad_norm", "grad norm")]),
        line_chart(runs, "chart-throughput", "Throughput", "tokens per second",
                   [("train", "tokens_per_s", "tokens/s")]),
    ]
    metric_keys = sorted({k for run in runs for r in run.records("eval") for k in r
                          if k.startswith("val_") and k not in ("val_loss", "val_perplexity", "val_bits_per_byte", "val_loss_se")})
    if metric_keys:
        charts.append(line_chart(runs, "chart-val-metrics", "Validation metrics", "score",
                                 [("eval", k, k.removeprefix("val_").replace("_", " ")) for k in metric_keys]))
    return charts


def histogram_svg(hist: dict[str, Any], what: str = "texts") -> str:
    """Horizontal bars of a length histogram ({'buckets': [{'from', 'to', 'count'}]}) as inline SVG."""
    buckets = [b for b in hist.get("buckets", []) if isinstance(b, dict)]
    if not buckets:
        return ""
    top = max(int(b.get("count", 0)) for b in buckets) or 1
    row, label_w, bar_w, count_w = 18, 130, 360, 80
    height = row * len(buckets) + 8
    width = label_w + bar_w + count_w
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(f"length histogram of {what}")}">']
    for i, b in enumerate(buckets):
        y = 4 + i * row
        n = int(b.get("count", 0))
        w = max(1.0, bar_w * n / top)
        label = f"{int(b.get('from', 0)):,}–{int(b.get('to', 0)):,}"
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">{escape(label)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{PALETTE[0]}"/>'
                     f'<text x="{label_w + w + 5:.1f}" y="{y + 13}" font-size="12">{n:,}</text>')
    parts.append("</svg>")
    return "".join(parts)
