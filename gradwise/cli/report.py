"""``gradwise report``: the command line of the HTML run report (see gradwise/report/)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gradwise.cli.args import add_device


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page about a run, or several compared",
                       description="Write one HTML file (charts embedded, nothing loaded from elsewhere) about a "
                       "run: loss, learning rate, gradient norm and throughput over steps, the diagnosis, the "
                       "summary numbers, samples (language models) or the confusion matrix (classifiers), the "
                       "data check and the config. Several runs: overlaid curves, a comparison table and the "
                       "config keys that differ. Works on a run that is still training.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, e.g. runs/NAME; or one autofit "
                   "directory, for its page of rounds and decisions")
    p.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN_DIR/report.html for one "
                   "run, report.html in the current directory for several)")
    p.add_argument("--samples", type=int, default=3, metavar="N",
                   help="texts sampled from each language model's best checkpoint (default 3; 0: none)")
    p.add_argument("--max-new-tokens", type=int, default=120, help="length of each sample in tokens (default 120)")
    p.add_argument("--prompt", default="", help="text the samples continue (default: start of a document)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0), so the report is repeatable")
    add_device(p, "device for sampling: auto, cpu, cuda, cuda:N")
    p.add_argument("--data-stats", action="store_true", help="also compute the full corpus statistics (tokens, "
                   "labels; the length histogram comes from the data check) from each run's config; reads the corpus again")
    p.add_argument("--no-diagnosis", action="store_true", help="leave the diagnosis out")


def run_diagnosis(path: str) -> list[dict[str, Any]] | None:
    """The diagnosis verdicts of a run, or None when this gradwise has no diagnoser or it fails on the run."""
    try:  # the diagnoser itself, so a gradwise without it still writes reports
        from gradwise.training.diagnose import diagnose_run
    except ImportError:
        return None
    try:
        return list(diagnose_run(path).to_json()["verdicts"])
    except Exception as e:  # noqa: BLE001 - the report is still worth having without a diagnosis
        print(f"gradwise: warning: no diagnosis for {path}: {e.__class__.__name__}: {e}", file=sys.stderr)
        return None


def cmd_report(args: argparse.Namespace) -> int:
    from gradwise.api import write_report
    from gradwise.core.rundir import check_file_path
    from gradwise.report.data import load_run_data

    if len(args.runs) == 1 and (Path(args.runs[0]) / "autofit.json").is_file():  # an autofit's own page
        from gradwise.report.autofit import write_autofit_page

        out = check_file_path(args.out if args.out else Path(args.runs[0]) / "report.html", "--out")
        written = write_autofit_page(args.runs[0], out)
        print(f"wrote {written} ({written.stat().st_size / 1024:,.0f} KB); open it in a browser")
        return 0
    for path in args.runs:
        load_run_data(path)  # fail early, with the one-line message, on a directory that is not a run
    out = check_file_path(args.out if args.out else (Path(args.runs[0]) / "report.html" if len(args.runs) == 1
                                                     else Path("report.html")), "--out")
    diagnosis = None if args.no_diagnosis else {path: run_diagnosis(path) for path in args.runs}
    written = write_report(args.runs, out, diagnosis=diagnosis, samples=args.samples,
                           max_new_tokens=args.max_new_tokens, prompt=args.prompt, seed=args.seed,
                           device=args.device, data_stats=args.data_stats)
    print(f"wrote {written} ({written.stat().st_size / 1024:,.0f} KB); open it in a browser")
    return 0
