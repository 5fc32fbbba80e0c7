"""``gradwise diagnose`` and ``gradwise lr-find``: the command line of fit diagnosis and the range test."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradwise.cli.args import add_config_options, add_json, config_and_overrides


def add_fit_parsers(sub: Any) -> None:
    p = sub.add_parser("diagnose", help="how a run fits: under/over-fitting, converged, diverged... and what next",
                       description="Read a run's own curves (metrics.jsonl) and classify it as diverged, "
                       "unstable, overfitting, underfitting, still improving or converged, with the numbers that "
                       "show it and the config changes to try (docs/diagnosis.md).")
    p.add_argument("run", help="run directory, e.g. runs/NAME (finished, diverged or still training)")
    add_json(p, "print verdicts and the facts they were read from as JSON")

    p = sub.add_parser("lr-find", help="learning-rate range test: a short run with a growing lr, and a suggestion",
                       description="Train for a few steps with an exponentially growing learning rate, plot the "
                       "smoothed loss against it and suggest a learning rate (a tenth of the one at the lowest "
                       "loss). Nothing is saved but the plot and the curve.")
    add_config_options(p)
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="steps from --start to --end (default 100)")
    p.add_argument("--out", metavar="DIR", help="where lr_find.png and lr_find.json go (default runs/lr-find-...)")
    add_json(p, "print the curve and suggestion as JSON")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from gradwise.api import diagnose_run
    from gradwise.core.rundir import RunDir, skipped_lines_note
    from gradwise.training.diagnose import format_diagnosis

    d = diagnose_run(args.run)
    if args.json:
        print(json.dumps(d.to_json(), indent=2))
        return 0
    facts = d.facts
    damaged = skipped_lines_note(RunDir.existing(args.run).metrics, facts.get("skipped_metric_lines", []))
    if damaged:
        print(f"warning  {damaged}")
    print(f"run      {d.run}: {facts['steps']:,} steps, {facts['evaluations']} evaluations, "
          f"{str(facts['stopped_because']).replace('_', ' ')}")
    for line in format_diagnosis(d):
        print(line if line.startswith(" ") else f"fit      {line}")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from gradwise.api import lr_find
    from gradwise.tools.lr_find import format_lr_find

    config, overrides = config_and_overrides(args)
    res = lr_find(config, overrides=overrides, start_lr=args.start, end_lr=args.end, steps=args.steps,
                  out_dir=args.out)
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        print("\n".join(format_lr_find(res)))
    return 0
