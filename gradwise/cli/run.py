"""``gradwise train``, ``eval``, ``generate`` and ``predict``: a run made, measured and used."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from gradwise.cli.args import (
    add_checkpoint,
    add_config_options,
    add_device,
    add_json,
    config_and_overrides,
    hf_model_overrides,
)
from gradwise.config.load import HF_CLASSIFY_PRESET


def add_run_parsers(sub: Any) -> None:

    p = sub.add_parser("train", help="train a model (default: the embedded corpus and the default preset)",
                       description="Train a GPT on a corpus, validating as it goes, keeping the best and last "
                       "checkpoints, and evaluating the best once on the test split.")
    add_config_options(p, config="YAML/TOML config file or preset name (default: the 'default' preset; with --resume: the "
                       "run's own config)",
                       data="corpus: a text file, a directory of text files or a .jsonl file with a 'text' field; "
                       "for --task classify a .jsonl or .csv with 'text' and 'label' (shorthand for --set "
                       "data.path=PATH)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--name", help="run directory name under out_dir (shorthand for --set name=NAME)")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from a gradwise LM run's (or, as hf:DIR, a local "
                   "Hugging Face GPT-2 directory's) weights, tokenizer and shape; with --task classify, fine-tune it "
                   "as a GPT-backbone classifier "
                   "(shorthand for --set model.init_from=RUN_DIR)")
    p.add_argument("--model", metavar="hf:DIR", help="train a local Hugging Face causal LM (any "
                   "AutoModelForCausalLM directory, safetensors) with its own tokenizer; without a config file the "
                   "'hf-finetune' preset. With --task classify, fine-tune it as a classifier (any "
                   f"AutoModelForSequenceClassification architecture, a new class head; preset '{HF_CLASSIFY_PRESET}') "
                   "(shorthand for --set model.arch=hf --set model.hf_path=DIR)")
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
    add_checkpoint(p)
    add_device(p)
    add_json(p)

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
    add_checkpoint(p)
    add_device(p)

    p = sub.add_parser("predict", help="classify texts with a classification run",
                       description="Print the predicted class and the class probabilities of each text.")
    p.add_argument("run", help="run directory of a classification run, e.g. runs/NAME")
    p.add_argument("--text", action="append", required=True, help="a text to classify (repeatable)")
    add_checkpoint(p)
    add_device(p)
    add_json(p, "print one JSON object per text")


def cmd_train(args: argparse.Namespace) -> int:
    from gradwise.api import train

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
            config = HF_CLASSIFY_PRESET if args.task == "classify" else "hf-finetune"
    result = train(config, overrides=overrides, resume=args.resume,
                   live_progress=False if args.no_bar else None, quiet=args.quiet)
    return 130 if result.summary["stopped_because"] == "interrupted" else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gradwise.api import evaluate_run

    res = evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint, device=args.device)
    if args.json:
        scalars = {k: (v if math.isfinite(v) else None) for k, v in res.scalars.items()}  # JSON has no NaN
        print(json.dumps({"split": args.split, "checkpoint": args.checkpoint, "loss": res.loss, **scalars,
                          **(res.details or {})}))
    elif "bits_per_byte" in res.scalars:
        d = res.details or {}
        se = res.scalars.get("loss_se", math.nan)
        print(f"{args.split} split ({args.checkpoint} checkpoint): loss {res.loss:.4f} nats/token"
              f"{f' (± {se:.4f})' if math.isfinite(se) else ''} | "
              f"perplexity {res.scalars['perplexity']:.3f} | {res.scalars['bits_per_byte']:.4f} bits/byte | "
              f"{d.get('tokens', 0):,} tokens, {d.get('bytes', 0):,} bytes")
    else:
        from gradwise.tasks.classify_metrics import format_report

        print(f"{args.split} split ({args.checkpoint} checkpoint): loss {res.loss:.4f}")
        print(format_report(res.details or {}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gradwise.api import predict

    for text, pred in zip(args.text, predict(args.run, args.text, args.checkpoint, args.device), strict=True):
        if args.json:
            print(json.dumps({"text": text, "label": pred.label, "labels": pred.labels,
                              "probabilities": pred.probabilities}))
        else:
            probs = ", ".join(f"{c} {p:.3f}" for c, p in sorted(pred.probabilities.items(), key=lambda x: -x[1]))
            print(f"{', '.join(pred.labels) or '(none)'}\t({probs})\t{text[:60]!r}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gradwise.api import generate_text

    common = (args.run, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
              args.num_samples, args.seed, args.checkpoint, args.device)
    if args.num_samples == 1:  # streamed as it is made: a long generation shows itself, and Ctrl-C keeps it
        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            generate_text(*common, on_text=write)
        finally:
            sys.stdout.write("\n")
        return 0
    with token_progress(args.max_new_tokens, args.num_samples) as on_token:
        samples = generate_text(*common, on_token=on_token)
    for i, text in enumerate(samples):
        print(f"--- sample {i + 1}")
        print(text)
    return 0


@contextlib.contextmanager
def token_progress(total: int, samples: int) -> Iterator[Callable[[Any], None] | None]:
    """A bar on stderr while several samples are drawn (on a terminal; elsewhere nothing, the text comes at
    the end)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn(f"{samples} samples, token"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("generate", total=total)
        yield lambda _ids: bar.advance(task)
