"""The command line: each sub-command parses its options and calls the Python API, nothing more."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gradwise import __version__
from gradwise.cli.args import config_and_overrides, hf_model_overrides
from gradwise.cli.data import add_data_parser, cmd_data
from gradwise.cli.export import add_export_parser, cmd_export
from gradwise.cli.fit import add_fit_parsers, cmd_diagnose, cmd_lr_find
from gradwise.cli.plan import add_plan_parser, cmd_plan
from gradwise.cli.report import add_report_parser, cmd_report
from gradwise.cli.step import add_step_parser, cmd_step
from gradwise.core.errors import GradwiseError, say, say_error

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradwise", description="Train and evaluate language models: one well-instrumented optimization "
        "step, repeated with validation, checkpoints and an honest test evaluation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gradwise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (default: the embedded corpus and the default preset)",
                       description="Train a GPT on a corpus, validating as it goes, keeping the best and last "
                       "checkpoints, and evaluating the best once on the test split.")
    p.add_argument("config", nargs="?", help="YAML/TOML config file or preset name (default: the 'default' preset; "
                   "with --resume: the run's own config)")
    p.add_argument("--data", metavar="PATH", help="corpus: a text file, a directory of text files or a .jsonl "
                   "file with a 'text' field; for --task classify a .jsonl or .csv with 'text' and 'label' "
                   "(shorthand for --set data.path=PATH)")
    p.add_argument("--task", choices=["lm", "classify"], help="lm (default) or classify; classify without a "
                   "config file uses the 'classify-lstm' preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--name", help="run directory name under out_dir (shorthand for --set name=NAME)")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from a gradwise LM run's (or, as hf:DIR, a local "
                   "Hugging Face GPT-2 directory's) weights, tokenizer and shape; with --task classify, fine-tune it "
                   "as a GPT-backbone classifier "
                   "(shorthand for --set model.init_from=RUN_DIR)")
    p.add_argument("--model", metavar="hf:DIR", help="train a local Hugging Face causal LM (any "
                   "AutoModelForCausalLM directory, safetensors) with its own tokenizer; without a config file the "
                   "'hf-finetune' preset (shorthand for --set model.arch=hf --set model.hf_path=DIR)")
    p.add_argument("--lora", metavar="SPEC", help="with --model: train LoRA adapters only (peft), e.g. "
                   "r=8,alpha=16,dropout=0.05,targets=c_attn+c_proj (default targets: peft's for the architecture)")
    p.add_argument("--dedupe", action="store_true", help="drop exact and near duplicates before splitting "
                   "(shorthand for --set data.dedupe=true); counts go in summary.json")
    p.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard event files in RUN/tensorboard "
                   "(shorthand for --set train.tensorboard=true; pip install 'gradwise[tensorboard]')")
    p.add_argument("--quiet", action="store_true", help="print nothing while training")
    p.add_argument("--no-bar", action="store_true", help="plain log lines even on a terminal")

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on a split",
                       description="Loss (nats/token), perplexity and bits per byte on a whole split.")
    p.add_argument("run", help="run directory, e.g. runs/NAME")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to evaluate (default test)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("generate", help="sample text from a run's model",
                       description="Sample continuations of a prompt from a trained run.")
    p.add_argument("run", help="run directory, e.g. runs/NAME")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this probability")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")

    p = sub.add_parser("predict", help="classify texts with a classification run",
                       description="Print the predicted class and the class probabilities of each text.")
    p.add_argument("run", help="run directory of a classification run, e.g. runs/NAME")
    p.add_argument("--text", action="append", required=True, help="a text to classify (repeatable)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")

    p = sub.add_parser("tune", help="search hyperparameters (Optuna); each trial is a training run",
                       description="Search a space of config keys around CONFIG. Each trial trains on the train "
                       "split and is scored by its best validation loss; the test split is used once, by --final. "
                       "Rerunning the same command with --resume continues the study.")
    p.add_argument("config", nargs="?", help="YAML/TOML config file or preset name (default: the 'default' preset)")
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
    p.add_argument("--data", metavar="PATH", help="corpus (shorthand for --set data.path=PATH)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every trial (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue an existing study")
    p.add_argument("--final", action="store_true", help="retrain the best config and evaluate it once on test")
    p.add_argument("--verbose", action="store_true", help="show each trial's training output")

    add_data_parser(sub)
    add_fit_parsers(sub)
    add_plan_parser(sub)
    add_export_parser(sub)
    add_report_parser(sub)
    add_step_parser(sub)

    p = sub.add_parser("tune-report", help="table of a study's trials and its best config",
                       description="Print a study's trials (best first) and where its best config is.")
    p.add_argument("study", help="study directory, e.g. studies/NAME")
    p.add_argument("--all", action="store_true", help="every trial, not the best 20")
    return parser


def cmd_tune(args: argparse.Namespace) -> int:
    from gradwise.config.validate import parse_duration
    from gradwise.search import tune
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
                           if k.startswith("test_") and isinstance(v, float))
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


def cmd_train(args: argparse.Namespace) -> int:
    from gradwise.training.run import train

    config, overrides = config_and_overrides(args)
    if args.name:
        overrides.append(f"name={json.dumps(args.name)}")
    if args.init_from:
        overrides.append(f"model.init_from={json.dumps(args.init_from)}")
    if args.dedupe:
        overrides.append("data.dedupe=true")
    if args.tensorboard:
        overrides.append("train.tensorboard=true")
    if args.model or args.lora:
        overrides += hf_model_overrides(args.model, args.lora)
        if args.model and args.config is None and args.resume is None:
            config = "hf-finetune"
    result = train(config, overrides=overrides, resume=args.resume,
                   live_progress=False if args.no_bar else None, quiet=args.quiet)
    return 130 if result.summary["stopped_because"] == "interrupted" else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gradwise.inference import evaluate_run

    res = evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint, device=args.device)
    if args.json:
        print(json.dumps({"split": args.split, "checkpoint": args.checkpoint, "loss": res.loss, **res.scalars,
                          **(res.details or {})}))
    elif "bits_per_byte" in res.scalars:
        d = res.details or {}
        print(f"{args.split} split ({args.checkpoint} checkpoint): loss {res.loss:.4f} nats/token | "
              f"perplexity {res.scalars['perplexity']:.3f} | {res.scalars['bits_per_byte']:.4f} bits/byte | "
              f"{d.get('tokens', 0):,} tokens, {d.get('bytes', 0):,} bytes")
    else:
        from gradwise.tasks.classify_metrics import format_report

        print(f"{args.split} split ({args.checkpoint} checkpoint): loss {res.loss:.4f}")
        print(format_report(res.details or {}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gradwise.inference import predict

    for text, pred in zip(args.text, predict(args.run, args.text, args.checkpoint, args.device), strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": pred.label, "labels": pred.labels,
                              "probabilities": pred.probabilities}))
        else:
            probs = ", ".join(f"{c} {p:.3f}" for c, p in sorted(pred.probabilities.items(), key=lambda x: -x[1]))
            print(f"{', '.join(pred.labels) or '(none)'}\t({probs})\t{text[:60]!r}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gradwise.inference import generate_text

    samples = generate_text(args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                            args.num_samples, args.seed, args.checkpoint, args.device)
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1}")
        print(text)
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "predict": cmd_predict,
            "tune": cmd_tune, "tune-report": cmd_tune_report, "data": cmd_data, "diagnose": cmd_diagnose,
            "lr-find": cmd_lr_find, "export": cmd_export, "report": cmd_report, "plan": cmd_plan, "step": cmd_step}


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


if __name__ == "__main__":
    sys.exit(main())
