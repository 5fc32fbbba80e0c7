"""``gradwise report``: one self-contained HTML page about one run, or several side by side.

Curves (loss, learning rate, gradient norm, throughput), the diagnosis, the summary numbers, samples from a
language model or the test classification report, the data check, and the config; for several runs overlaid
curves, a comparison table and the config keys that differ. Nothing in the page loads from anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import write_text_atomic
from gradwise.report.charts import curve_charts
from gradwise.report.data import RunData, add_data_stats, add_samples, load_run_data
from gradwise.report.html import render_page

Verdicts = list[dict[str, Any]]

__all__ = ["build_report", "write_report", "load_run_data", "RunData"]


def build_report(run_dirs: Sequence[str | Path] | str | Path, *,
                 diagnosis: Verdicts | Mapping[str, Verdicts | None] | None = None, samples: int = 3,
                 max_new_tokens: int = 120, prompt: str = "", seed: int = 0, device: str = "auto",
                 data_stats: bool = False, title: str | None = None) -> str:
    """The HTML of a report on ``run_dirs``.

    ``diagnosis``: the verdicts of one run (``[{"kind", "title", "evidence", "actions"}]``, as
    ``gradwise.training.diagnose`` gives them), or a mapping from run directory (as given) or run name to its verdicts;
    None leaves the section out. ``samples``: how many texts to sample from each language model's best
    checkpoint (0: none); ``prompt``, ``max_new_tokens``, ``seed`` and ``device`` are how. ``data_stats``:
    compute corpus statistics (length histogram, labels) from each run's config when the run has none saved
    (reads the corpus again, so it takes as long as ``gradwise data stats``).
    """
    paths = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not paths:
        raise GradwiseError("give at least one run directory, e.g. gradwise report runs/NAME")
    runs = [load_run_data(p) for p in paths]
    if diagnosis is not None and not isinstance(diagnosis, Mapping) and len(runs) > 1:
        raise GradwiseError("with several runs, give the diagnosis as a mapping from run directory to verdicts")
    for given, run in zip(paths, runs, strict=True):
        if isinstance(diagnosis, Mapping):
            run.diagnosis = diagnosis.get(str(given), diagnosis.get(run.name))
        elif diagnosis is not None:
            run.diagnosis = list(diagnosis)
        if data_stats and (run.data_stats is None or run.data_stats.get("from_data_check")):
            add_data_stats(run)
        add_samples(run, count=samples, max_new_tokens=max_new_tokens, prompt=prompt, seed=seed, device=device)
    return render_page(runs, curve_charts(runs), title=title)


def write_report(run_dirs: Sequence[str | Path] | str | Path, out: str | Path, **kwargs: Any) -> Path:
    """Build the report and write it to ``out`` (a .html file); returns the path."""
    page = build_report(run_dirs, **kwargs)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page)
    return path
