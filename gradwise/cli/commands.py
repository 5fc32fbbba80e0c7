"""The command line: one table from command to function; each command parses its options (declared in its
family's module, the shared ones in cli/args.py) and calls the Python API, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from gradwise import __version__
from gradwise.cli.autofit import add_autofit_parser, cmd_autofit
from gradwise.cli.data import add_data_parser, cmd_data
from gradwise.cli.export import add_export_parser, cmd_export
from gradwise.cli.fit import add_fit_parsers, cmd_diagnose, cmd_lr_find
from gradwise.cli.plan import add_plan_parser, cmd_plan
from gradwise.cli.report import add_report_parser, cmd_report
from gradwise.cli.run import add_run_parsers, cmd_eval, cmd_generate, cmd_predict, cmd_train
from gradwise.cli.step import add_step_parser, cmd_step
from gradwise.cli.tune import add_tune_parsers, cmd_tune, cmd_tune_report
from gradwise.core.errors import OUT_OF_MEMORY_EXIT, GradwiseError, out_of_memory_line, say, say_error

EPILOG = """examples:
  gradwise train                                   train on the embedded corpus (Python's own docs)
  gradwise train configs/shakespeare-char-cpu.yaml --data tinyshakespeare.txt
  gradwise train my.yaml --set optim.lr=3e-4 --set model.n_layer=6
  gradwise train --resume runs/NAME                continue an interrupted run exactly
  gradwise eval runs/NAME --split test             loss, perplexity, bits per byte
  gradwise generate runs/NAME --prompt "ROMEO:" --max-new-tokens 200
  gradwise train --task classify --data texts.jsonl   text classification (LSTM; 'text' and 'label' fields)
  gradwise predict runs/NAME --text "a text to classify"
  gradwise tune my.yaml --space space.yaml --trials 30    hyperparameter search (Optuna), best config saved
  gradwise tune-report studies/NAME                table of trials, best first
  gradwise autofit --data corpus.txt --budget 20m  diagnose, adjust and retrain in rounds; test once at the end
  gradwise step --model gpt2-dir --text "The quick brown fox jumps over the lazy dog" --optimizer adam --lr 1e-2
                                                   one optimization step, shown: losses, per-layer norms, times
  gradwise data stats corpus.txt                   sizes, tokens, length histogram (labels for .jsonl/.csv)
  gradwise data check corpus.txt                   duplicates and leakage across train/val/test
  gradwise diagnose runs/NAME                      over/under-fitting, converged, diverged: evidence and what next
  gradwise lr-find my.yaml                         learning-rate range test and a suggested lr
  gradwise plan my.yaml --budget 10m               parameters, FLOPs, memory, time; a compute-optimal proposal
  gradwise report runs/NAME [runs/OTHER ...]       one HTML page: curves, diagnosis, samples or confusion, config
  gradwise export runs/NAME --out my-gpt2          a GPT-2 directory transformers loads (pip install 'gradwise[hf]')
  gradwise train --model hf:my-model --data corpus.txt --lora r=8,alpha=16   fine-tune a local HF causal LM
"""


class OneLineErrors(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line (the problem, and where the options are listed)
    instead of the usage block and the error: a bad flag reads like every other gradwise error."""

    def error(self, message: str) -> NoReturn:
        say(f"{self.prog}: error: {message} (see {self.prog} --help)")
        raise SystemExit(2)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:  # argparse lets `--flag=--` through as [], unconverted: refuse it here
            single = action.nargs is None and action.option_strings and not isinstance(action, argparse._AppendAction)
            if single and isinstance(getattr(parsed, action.dest, None), list):
                self.error(f"argument {'/'.join(action.option_strings)}: expected one value")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="gradwise", description="Train and evaluate language models: one well-instrumented optimization "
        "step, repeated with validation, checkpoints and an honest test evaluation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gradwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parsers in FAMILIES:
        add_parsers(sub)
    return parser


# The command table: each command's function, grouped by the module that declares its options.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "predict": cmd_predict,  # cli/run.py
    "tune": cmd_tune, "tune-report": cmd_tune_report,  # cli/tune.py
    "autofit": cmd_autofit,  # cli/autofit.py
    "data": cmd_data,  # cli/data.py
    "diagnose": cmd_diagnose, "lr-find": cmd_lr_find,  # cli/fit.py
    "plan": cmd_plan,  # cli/plan.py
    "export": cmd_export,  # cli/export.py
    "report": cmd_report,  # cli/report.py
    "step": cmd_step,  # cli/step.py
}
# The parsers, in the order `gradwise --help` lists them.
FAMILIES = (add_run_parsers, add_tune_parsers, add_autofit_parser, add_data_parser, add_fit_parsers, add_plan_parser,
            add_export_parser, add_report_parser, add_step_parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except GradwiseError as exc:
        say_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        say("gradwise: interrupted")
        return 130
    except (RuntimeError, MemoryError) as exc:  # an allocation that failed mid-run: one line, not a traceback
        line = out_of_memory_line(exc)
        if line is None:
            raise
        say(line)
        return OUT_OF_MEMORY_EXIT


if __name__ == "__main__":
    sys.exit(main())
