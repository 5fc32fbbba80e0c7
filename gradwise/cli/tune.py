"""``gradwise tune`` and ``gradwise tune-report``: hyperparameter search on Optuna and the table of a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gradwise.cli.args import CONFIG_HELP, add_config_options, config_and_overrides
from gradwise.core.errors import say


def add_tune_parsers(sub: Any) -> None:
    p = sub.add_parser("tune", help="search hyperparameters (Optuna); each trial is a training run",
                       description="Search a space of config keys around CONFIG. Each trial trains on the train "
                       "split and is scored by its best validation loss; the test split is used once, by --final. "
                       "Rerunning the same command with --resume continues the study.")
    p.add_argument("config", nargs="?", help=CONFIG_HELP)
    p.add_argument("--space", required=True, metavar="FILE", help="YAML mapping config keys to distributions, e.g. "
                   "optim.lr: {type: float, low: 1e-4, high: 1e-2, log: true}; a list of values for grid search")
    p.add_argument("--trials", type=int, help="total trials to reach, counting finished and pruned ones "
                   "(default for grid: every point once)")
    p.add_argument("--timeout", metavar="DURATION", help="stop starting trials after this long, e.g. 30m")
    p.add_argument("--max-tokens", type=int, metavar="N", help="total training-token budget of all trials")
    p.add_argument("--keep", type=int, metavar="K", help="keep checkpoints of the best K trials only (their "
                   "configs, metrics and summaries are always kept)")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "gp", "cmaes"], help="default tpe")
    p.add_argument("--pruner", default="halving", choices=["none", "median", "halving", "hyperband"],
                   help="stop hopeless trials at their evaluations (default halving: successive halving)")
    p.add_argument("--storage", metavar="URL", help="default: SQLite in the study directory; 'journal': a journal "
                   "file there (several local processes); or an RDB URL such as postgresql://user@host/db")
    p.add_argument("--workers", type=int, default=1, help="parallel local worker processes on one study "
                   "(default 1); more machines join by running the same command with the same --storage")
    p.add_argument("--study", metavar="NAME", help="study name (default: the config's name)")
    p.add_argument("--out-dir", default="studies", help="where study directories go (default studies/)")
    add_config_options(p, config=None, task=None, overrides="override a config key for every trial (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an existing study")
    p.add_argument("--final", action="store_true", help="retrain the best config and evaluate it once on test")
    p.add_argument("--verbose", action="store_true", help="show each trial's training output")


    p = sub.add_parser("tune-report", help="table of a study's trials and its best config",
                       description="Print a study's trials (best first) and where its best config is.")
    p.add_argument("study", help="study directory, e.g. studies/NAME")
    p.add_argument("--all", action="store_true", help="every trial, not the best 20")


def cmd_tune(args: argparse.Namespace) -> int:
    from gradwise.api import tune
    from gradwise.config.validate import parse_duration
    from gradwise.search.report import read_trials, trials_table

    config, overrides = config_and_overrides(args)
    result = tune(config, args.space, trials=args.trials, timeout=parse_duration(args.timeout, "--timeout"),
                  sampler=args.sampler, pruner=args.pruner, storage=args.storage, study_name=args.study,
                  out_dir=args.out_dir, overrides=overrides, seed=args.seed, resume=args.resume, final=args.final,
                  quiet=not args.verbose, workers=args.workers, max_tokens=args.max_tokens,
                  keep=args.keep)
    print(trials_table(read_trials(result.study_dir)))
    if result.best_config is not None:
        print(f"best     val loss {result.best_value:.4f} | config {result.study_dir / 'best.yaml'} "
              f"(run it: gradwise train {result.study_dir / 'best.yaml'})")
    if result.final is not None:
        f = result.final
        tested = ", ".join(f"{k.removeprefix('test_')} {v:.4f}" for k, v in f.items()
                           if k.startswith("test_") and k != "test_loss_se" and isinstance(v, float))
        print(f"final    retrained best config: {tested} ({f['run']})")
    if result.interrupted:
        say("gradwise: interrupted; continue with the same command and --resume")
        return 130
    return 0


def cmd_tune_report(args: argparse.Namespace) -> int:
    from gradwise.search.report import read_trials, trials_table

    print(trials_table(read_trials(args.study), limit=None if args.all else 20))
    best = Path(args.study) / "best.yaml"
    if best.is_file():
        print(f"best config: {best}")
    plots = [p.name for p in sorted(Path(args.study).glob("*.png"))]
    if plots:
        print(f"plots: {', '.join(plots)} in {args.study}")
    return 0
