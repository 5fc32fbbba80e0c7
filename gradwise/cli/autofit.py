"""``gradwise autofit``: the train, validate, diagnose, adjust loop run by gradwise inside a budget."""

from __future__ import annotations

import argparse
from typing import Any

from gradwise.cli.args import CONFIG_HELP, add_config_options, config_and_overrides
from gradwise.core.errors import say


def add_autofit_parser(sub: Any) -> None:
    p = sub.add_parser("autofit", help="train, diagnose, adjust and retrain in rounds inside a budget; test once",
                       description="Start from CONFIG (or the task's default), diagnose each run on validation, try "
                       "what the diagnosis says (plus Optuna TPE proposals in the keys it names) on short runs, "
                       "train the best third longer, and score the winner once on test. Every round and decision "
                       "goes in autofit.json; the winner's config in best.yaml. docs/autofit.md gives the rules.")
    add_config_options(p, config=CONFIG_HELP)
    p.add_argument("--budget", required=True, metavar="BUDGET", help="wall clock (90s, 20m, 2h) or training "
                   "tokens ('5M tokens'), for everything: the probe, every round and the test")
    p.add_argument("--out-dir", default="autofit", help="where autofit directories go (default autofit/)")
    p.add_argument("--name", metavar="NAME", help="this autofit's directory name (default: CONFIG-autofit)")
    p.add_argument("--storage", metavar="URL", help="the study's storage (default: SQLite in the directory; "
                   "'journal' or an RDB URL as for gradwise tune)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE proposals (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted autofit (same command)")
    p.add_argument("--verbose", action="store_true", help="show each candidate's training output")


def cmd_autofit(args: argparse.Namespace) -> int:
    from gradwise.api import autofit
    from gradwise.autofit.candidates import validation_words

    config, overrides = config_and_overrides(args)
    result = autofit(config, overrides, budget=args.budget, out_dir=args.out_dir, name=args.name,
                     storage=args.storage, resume=args.resume, seed=args.seed, quiet=not args.verbose,
                     on_event=print)
    if result.interrupted:
        say("gradwise: interrupted; continue with the same command and --resume")
        return 130
    r, best = result.record, result.best
    if result.worker:  # it trained its share of another process's autofit; that one reports
        return 0
    assert best is not None
    if r["task"] == "classify":
        start = r.get("start") or {}
        line = (f"best     {best.slot}: {validation_words(best.score, best.val, 'classify')} (start macro-F1 "
                f"{(start.get('val') or {}).get('macro_f1', float('nan')):.4f})")
        base = r.get("baseline") or {}
        if (base.get("val") or {}).get("macro_f1") is not None:
            line += f" | baseline val macro-F1 {base['val']['macro_f1']:.4f}"
        print(line)
        t = result.test or {}
        tested = f"test     macro-F1 {t.get('macro_f1', float('nan')):.4f}, accuracy {t.get('accuracy', float('nan')):.4f} " \
                 f"(scored once, on {best.slot}'s best checkpoint)"
        if (base.get("test") or {}).get("macro_f1") is not None:
            margin = t.get("macro_f1", float("nan")) - base["test"]["macro_f1"]
            tested += f" | baseline {base['test']['macro_f1']:.4f} ({margin:+.4f}" + \
                      (": worse than a linear baseline)" if margin < 0 else ")")
        print(tested)
    else:
        start = r.get("start") or {}
        print(f"best     {best.slot}: val loss {best.score:.4f} (start {start.get('score', float('nan')):.4f})")
        t = result.test or {}
        print(f"test     loss {t.get('loss', float('nan')):.4f}, bits per byte {t.get('bits_per_byte', float('nan')):.4f} "
              f"(scored once, on {best.slot}'s best checkpoint)")
    print(f"config   {result.out / 'best.yaml'} (run it: gradwise train {result.out / 'best.yaml'}) | record "
          f"{result.out / 'autofit.json'}")
    return 0
