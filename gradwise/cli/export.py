"""``gradwise export RUN --format hf --out DIR``: a run as a Hugging Face model directory (gradwise/hf): a GPT
run as GPT-2, a ``--model hf:DIR`` run as its own architecture (LoRA adapters merged)."""

from __future__ import annotations

import argparse
from typing import Any

from gradwise.cli.args import add_checkpoint


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a run's model in another format (Hugging Face)",
                       description="Write a gradwise language-model run as a Hugging Face directory "
                       "(config.json, model.safetensors, tokenizer files) that transformers loads with "
                       "AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR): a GPT "
                       "run as GPT-2, a --model hf:DIR run as its own architecture with LoRA adapters merged.")
    p.add_argument("run", help="run directory (runs/NAME) of a language-model run (GPT or --model hf:DIR)")
    p.add_argument("--format", default="hf", choices=["hf"], help="output format (default: hf)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write (created; must be empty "
                   "unless --force)")
    add_checkpoint(p)
    p.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing the files")
    p.add_argument("--verify", action="store_true", help="load the export with transformers and compare its "
                   "logits and tokenizer with the run's (needs the hf extra)")


def cmd_export(args: argparse.Namespace) -> int:
    from gradwise.api import export_hf, verify_export
    from gradwise.core.errors import GradwiseError

    if args.verify:
        from gradwise.hf import require

        require("transformers", "--verify")  # before writing anything
    res = export_hf(args.run, args.out, checkpoint=args.checkpoint, force=args.force)
    print(f"exported {args.run} ({args.checkpoint} checkpoint: {res.describe()}) to {res.out}: {', '.join(res.files)}")
    if args.verify:
        check = verify_export(args.run, res.out, checkpoint=args.checkpoint)
        print(f"verified with transformers: max |logit difference| {check['max_abs_logit_diff']:.2e}, tokenizer "
              f"{'matches' if check['tokenizer_matches'] else 'DIFFERS'} on {check['texts']} texts")
        if check["max_abs_logit_diff"] > 1e-4 or not check["tokenizer_matches"]:
            raise GradwiseError(f"the export in {res.out} does not reproduce the run; please report this")
    print(f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(res.out)!r})")
    return 0
