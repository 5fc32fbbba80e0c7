"""``gradwise step``: one optimization step (or a few) on a given text, with everything it did shown."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gradwise.cli.args import add_device, add_json
from gradwise.optim.optimizers import OPTIMIZERS


def add_step_parser(sub: Any) -> None:
    p = sub.add_parser("step", help="take one optimization step on a text and show what it did",
                       description="Load a gradwise run or a local Hugging Face causal LM, take one optimization "
                       "step (zero grad, forward, loss, backward, clip, optimizer step) on the given text and "
                       "print the loss before and after, the gradient norm and update size per layer, the "
                       "learning rate, the time of each phase and peak memory. --repeat and --until-converged "
                       "repeat it; --save writes the stepped model in the format it came in.")
    p.add_argument("--model", required=True, metavar="PATH", help="a gradwise run directory (runs/NAME) or a local "
                   "Hugging Face causal-LM directory (config.json, weights, tokenizer files)")
    p.add_argument("--text", help="the text to step on")
    p.add_argument("--text-file", metavar="FILE", help="read the text from a file (cut into context-length windows)")
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="default adam")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="default 0")
    p.add_argument("--grad-clip", type=float, default=0.0, help="clip the global gradient norm (default 0: off; "
                   "the norm is reported either way)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="take N steps on the same text (default 1)")
    p.add_argument("--until-converged", action="store_true", help="repeat until the loss changes by less than "
                   "--tol (relative) over each of the last --window steps, at most --max-steps")
    p.add_argument("--tol", type=float, default=1e-3, help="loss change per step for --until-converged, relative "
                   "(absolute once the loss is below 1 nat) (default 1e-3)")
    p.add_argument("--window", type=int, default=5, help="steps the change must stay below --tol (default 5)")
    p.add_argument("--max-steps", type=int, default=1000, help="cap for --until-converged (default 1000)")
    p.add_argument("--save", metavar="DIR", help="write the stepped model here, in the format it came in")
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed for dropout (default 0)")
    add_json(p, "one JSON object per step (every number, every layer)")


def cmd_step(args: argparse.Namespace) -> int:
    from gradwise.api import run_steps
    from gradwise.core.errors import GradwiseError
    from gradwise.tools.step_inspect import StepReport, converged, sparkline

    if (args.text is None) == (args.text_file is None):
        raise GradwiseError("give the text to step on: --text 'some text' or --text-file FILE (one of them)")
    text = args.text if args.text is not None else _read_text(args.text_file)
    steps = args.max_steps if args.until_converged else args.repeat
    if steps < 1:
        raise GradwiseError(f"--repeat / --max-steps must be at least 1, not {steps}")
    losses: list[float] = []

    def show(report: StepReport, setup: dict[str, Any]) -> bool:
        losses.append(report.loss_after)
        if args.json:
            print(json.dumps({**report.to_json(), **({"setup": setup} if report.step == 1 else {})}))
        elif report.step == 1:
            print(f"model    {setup['model']} | {setup['device']}")
            print(f"batch    {setup['windows']} window(s), {setup['tokens']:,} tokens | {setup['optimizer']} lr "
                  f"{args.lr:g}{', clip ' + format(args.grad_clip, 'g') if args.grad_clip else ', no clipping'}")
            print("\n".join(_detail(report)))
            if steps > 1:
                print(f"{'step':>6} {'loss before':>12} {'loss after':>11} {'grad norm':>10} {'update/weight':>14}")
        stop = args.until_converged and converged(losses, args.tol, args.window)
        if not args.json and steps > 1 and (shown_row(report.step) or stop or report.skipped or report.step == steps):
            print(f"{report.step:>6} {report.loss_before:>12.4f} {report.loss_after:>11.4f} {report.grad_norm:>10.4g} "
                  f"{report.update_ratio:>14.3e}")
        return stop

    result = run_steps(args.model, text, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                       grad_clip=args.grad_clip, steps=steps, device=args.device, seed=args.seed, on_step=show,
                       save=Path(args.save) if args.save else None)
    if result.diverged:
        print(f"stopped  the loss or gradient went non-finite at step {len(result.reports)} (the update was skipped); "
              f"lower --lr (now {args.lr:g}) or set --grad-clip 1.0", file=sys.stderr)
    if not args.json and len(losses) > 1:
        line = sparkline(losses)
        if line and _can_print(line):
            print(f"loss     {line}  {losses[0]:.4f} -> {losses[-1]:.4f}")
        if args.until_converged:
            done = result.converged
            print(f"{'converged' if done else 'not converged'} after {len(losses)} steps "
                  f"(tol {args.tol:g} over {args.window} steps{'' if done else f', cap --max-steps {args.max_steps}'})")
    if not args.json and result.saved:
        print(f"saved    {result.saved} ({'gradwise run' if result.kind == 'gradwise' else 'Hugging Face directory'})")
    return 3 if result.diverged else 0


def shown_row(step: int) -> bool:
    """Rows of the loss table: every step to 10, every 10th to 100, then every 100th (and the last)."""
    return step <= 10 or (step <= 100 and step % 10 == 0) or step % 100 == 0


def _detail(r: Any) -> list[str]:
    change = (r.loss_after - r.loss_before) / r.loss_before if r.loss_before else float("nan")
    t = r.timings
    lines = [f"step 1   loss {r.loss_before:.4f} -> {r.loss_after:.4f} ({change:+.1%}) | grad norm {r.grad_norm:.4g}"
             f"{' (clipped)' if r.clipped else ''} | update/weight {r.update_ratio:.3e} | lr {r.lr:.3g}"
             f"{' | SKIPPED: non-finite' if r.skipped else ''}",
             f"time     forward {t.get('forward', 0) * 1e3:.1f} ms | backward {t.get('backward', 0) * 1e3:.1f} ms | "
             f"clip {t.get('clip', 0) * 1e3:.1f} ms | optimizer {t.get('optimizer', 0) * 1e3:.1f} ms | "
             f"step {t.get('total', 0) * 1e3:.1f} ms | peak {r.peak_memory_bytes / 2**20:,.0f} MiB ({r.peak_memory_kind})",
             f"{'layer':<28} {'params':>12} {'grad norm':>10} {'update/weight':>14}"]
    for name, g in r.groups.items():
        lines.append(f"{name[:28]:<28} {int(g['params']):>12,} {g['grad_norm']:>10.4g} {g['update_ratio']:>14.3e}")
    return lines


def _read_text(path: str) -> str:
    from gradwise.core.errors import GradwiseError

    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GradwiseError(f"--text-file {path}: no such file") from None
    except UnicodeDecodeError:
        raise GradwiseError(f"--text-file {path} is not UTF-8 text") from None


def _can_print(line: str) -> bool:
    """Block characters only where the terminal's encoding has them."""
    try:
        line.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
