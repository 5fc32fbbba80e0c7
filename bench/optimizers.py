"""Optimizer comparison on configs/shakespeare-char-cpu.yaml: AdamW, Muon+AdamW and Lion.

Two phases, because they need different conditions:

``--phase loss`` (default): for each optimizer and each learning rate of its grid, a full run of the preset
(2,000 steps, same seed, data and cosine schedule) with the whole validation split evaluated every
``--eval-every`` steps. Prints the validation loss at 500/1000/2000 steps and the first evaluated step at
which each run reaches the 2,000-step loss of AdamW at its best lr of the grid. Loss curves do not depend on the
machine's load, so this phase may share the machine (``--threads 1`` keeps a core free).

``--phase time``: seconds per optimization step of each optimizer at its best lr, measured side by side in
one process on a quiet machine: short runs alternated (A B A B ...) and compared by median.

``--phase step``: the same question, asked so that a busy machine skews it far less. Every arm's model and
optimizer live in one process and take turns a few steps at a time (the same random batch, gradwise's own
``OptimizationStep`` with the preset's clipping and schedule), so a slow second lands on every arm alike.
Reports each arm's median step, its optimizer phase, and the median over rounds of the per-round ratio.

    python3 bench/optimizers.py --phase loss --threads 1 --out /tmp/opt.json --record
    python3 bench/optimizers.py --phase time --best /tmp/opt.json --record
    python3 bench/optimizers.py --phase step --muon-ns 3 2 --record
    python3 bench/optimizers.py --phase step --muon-dtype bfloat16 float32 --record
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchrecord import RECORD_FILE, append_record

from gradwise.config.load import load_config
from gradwise.core.rundir import read_metrics
from gradwise.models import build_model
from gradwise.objectives.losses import CausalLMObjective
from gradwise.training.build import assemble
from gradwise.training.run import train

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "configs" / "shakespeare-char-cpu.yaml"
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
# Each optimizer's grid brackets the lr its users start from (Lion's sign update wants ~3-10x less than AdamW).
GRID = {"adamw": [1e-3, 2e-3, 4e-3, 8e-3], "muon": [2e-3, 4e-3, 8e-3, 1.6e-2], "lion": [2e-4, 4e-4, 8e-4, 1.6e-3]}
EXTRA = {"lion": ["optim.weight_decay=0.3"]}  # Lion: weight decay ~3x AdamW's, as its authors advise


def run(opt: str, lr: float, overrides: list[str], name: str) -> dict:
    result = train(str(PRESET), overrides=[*overrides, f"optim.name={opt}", f"optim.lr={lr}",
                                           f"schedule.min_lr={lr / 10}", *EXTRA.get(opt, []), f"name={name}"],
                   quiet=True)  # min_lr = lr/10, the preset's ratio: AdamW 1e-3 is exactly the preset
    evals = {r["step"]: r["val_loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "eval"}
    s = result.summary
    return {"optimizer": opt, "lr": lr, "evals": evals, "step_seconds": s["step_seconds"], "steps": s["steps"]}


def steps_to_reach(evals: dict[int, float], target: float) -> int | None:
    return next((step for step, loss in sorted(evals.items()) if step > 0 and loss <= target), None)


def phase_loss(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    runs = []
    for opt, lrs in GRID.items():
        for lr in lrs:
            t0 = time.perf_counter()
            runs.append(run(opt, lr, overrides, f"{opt}-{lr:g}"))
            print(f"  {opt:<6} lr {lr:<7g} val@2000 {runs[-1]['evals'].get(max(runs[-1]['evals'])):.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return loss_table(runs, args.out)


def loss_table(runs: list[dict], out: str | None = None) -> list[str]:
    """The loss phase's table; the bar is AdamW at its best lr of the grid (a tuned baseline, as asked)."""
    for r in runs:  # JSON turns the step keys into strings
        r["evals"] = {int(k): v for k, v in r["evals"].items()}
    runs.sort(key=lambda r: (list(GRID).index(r["optimizer"]), r["lr"]))
    ref = min((r for r in runs if r["optimizer"] == "adamw"), key=lambda r: r["evals"][max(r["evals"])])
    target = ref["evals"][max(ref["evals"])]
    lines = [f"Target: AdamW at its best lr ({ref['lr']:g}), step {max(ref['evals'])}: val loss {target:.4f}", "",
             "| optimizer | lr | val@500 | val@1000 | val@2000 | steps to reach target | share of 2,000 |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        reach = steps_to_reach(r["evals"], target)
        ev = r["evals"]
        lines.append(f"| {r['optimizer']} | {r['lr']:g} | {ev.get(500, float('nan')):.4f} | "
                     f"{ev.get(1000, float('nan')):.4f} | {ev.get(max(ev)):.4f} | {reach or 'not reached'} | "
                     f"{f'{reach / max(ev):.0%}' if reach else '-'} |")
        r["reach"] = reach
    print("\n" + "\n".join(lines))
    if out:
        Path(out).write_text(json.dumps({"runs": runs, "target": target, "table": lines}, indent=1))
    return lines


def muon_arms(args: argparse.Namespace) -> list[str]:
    """The Muon variants asked for: fewer Newton-Schulz iterations, another precision for them."""
    return [*(f"muon ns_steps={n}" for n in args.muon_ns), *(f"muon ns_dtype={d}" for d in args.muon_dtype)]


def arm_overrides(arm: str) -> list[str]:
    """"muon ns_steps=3" -> ["optim.muon_ns_steps=3"]; a plain optimizer's arm sets nothing."""
    return [f"optim.muon_{arm.split(' ')[1]}"] if arm.startswith("muon ") and "=" in arm else []


def phase_time(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    best = json.loads(Path(args.best).read_text())["runs"] if args.best else []
    for r in best:
        r["evals"] = {int(k): v for k, v in r["evals"].items()}
    lr_of = {opt: min((r for r in best if r["optimizer"] == opt), key=lambda r: r["evals"][max(r["evals"])])["lr"]
             for opt in GRID} if best else {opt: lrs[1] for opt, lrs in GRID.items()}
    import gradwise.optim.muon as muon

    arms = [*GRID, *(["muon (plain Newton-Schulz)"] if args.muon_plain else []),
            *muon_arms(args)]
    per_step: dict[str, list[float]] = {arm: [] for arm in arms}
    gram_ratio = muon.GRAM_RATIO
    for rep in range(args.repeats):
        for arm in arms:
            opt = arm.split(" ")[0]
            muon.GRAM_RATIO = 10 ** 9 if "plain" in arm else gram_ratio  # plain: no matrix iterates on its Gram
            ns = arm_overrides(arm)
            r = run(opt, lr_of[opt], [*overrides, *ns, f"train.max_steps={args.time_steps}",
                                      f"train.eval_every={args.time_steps}", "train.test_eval=false"],
                    f"time-{arms.index(arm)}-{opt}-{rep}")
            per_step[arm].append(r["step_seconds"] / r["steps"])
    muon.GRAM_RATIO = gram_ratio
    base = statistics.median(per_step["adamw"])
    lines = ["| optimizer | lr | median ms/step | vs AdamW | each run's ms/step |", "|---|--:|--:|--:|---|"]
    for arm, values in per_step.items():
        med = statistics.median(values)
        lines.append(f"| {arm} | {lr_of[arm.split(' ')[0]]:g} | {med * 1000:.1f} | {med / base:.2f}x | "
                     f"{', '.join(f'{v * 1000:.1f}' for v in values)} |")
    print("\n".join(lines))
    return lines


def phase_step(args: argparse.Namespace) -> list[str]:
    arms = ["adamw", "muon", *muon_arms(args)]
    device, vocab = torch.device("cpu"), 65  # tinyshakespeare's characters; timing does not read the data
    steps = {}
    for arm in arms:
        opt = arm.split(" ")[0]
        ns = arm_overrides(arm)
        cfg = load_config(str(PRESET), [f"optim.name={opt}", f"optim.lr={GRID[opt][1]}", *ns, "train.device=cpu"])
        torch.manual_seed(0)
        steps[arm] = assemble(cfg, build_model(cfg.model, vocab), CausalLMObjective(), device,
                              asynchronous=False).step
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (cfg.train.batch_size, cfg.model.block_size), generator=g)
    batch = [(x, torch.roll(x, -1, dims=1))]
    for step in steps.values():  # optimizer state allocated and caches warm before timing
        for _ in range(3):
            step(batch)
    per_step: dict[str, list[float]] = {arm: [] for arm in arms}
    optim_ms: dict[str, list[float]] = {arm: [] for arm in arms}
    block = 5
    for r in range(args.rounds):
        order = arms if r % 2 == 0 else arms[::-1]  # neither arm always follows the other
        for arm in order:
            times = []
            for _ in range(block):
                t0 = time.perf_counter()
                steps[arm](batch)
                times.append(time.perf_counter() - t0)
            per_step[arm].append(statistics.median(times))
            optim_ms[arm].append((steps[arm](batch, profile=True).timings or {}).get("optimizer", 0.0))
    base = per_step["adamw"]
    lines = [f"{args.rounds} rounds of {block} steps per arm, alternated in one process (order reversed every "
             "other round); median of each round's median.", "",
             "| optimizer | median ms/step | optimizer ms | vs AdamW (median of per-round ratios) | "
             "quartiles of the ratio |", "|---|--:|--:|--:|--:|"]
    for arm in arms:
        ratios = sorted(a / b for a, b in zip(per_step[arm], base, strict=True))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        lines.append(f"| {arm} | {statistics.median(per_step[arm]) * 1000:.1f} | "
                     f"{statistics.median(optim_ms[arm]) * 1000:.1f} | {statistics.median(ratios):.2f}x | "
                     f"{q1:.2f}-{q3:.2f} |")
    print("\n".join(lines))
    return lines


def _saved_runs(path: Path) -> list[dict]:
    """Runs from a loss-phase --out file, or from a single run's JSON."""
    data = json.loads(path.read_text())
    return data.get("runs", [data])


def measure(args: argparse.Namespace) -> list[str]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.phase == "step":
        return phase_step(args)
    with tempfile.TemporaryDirectory(prefix="gradwise-opt-") as tmp:
        overrides = [f"data.path={json.dumps(str(Path(args.data).resolve()))}", f"out_dir={json.dumps(tmp)}",
                     f"data.cache_dir={json.dumps(tmp + '/cache')}", f"train.eval_every={args.eval_every}",
                     "train.log_every=100", "train.device=cpu"]
        if args.max_steps:
            overrides.append(f"train.max_steps={args.max_steps}")
        return phase_time(args, overrides) if args.phase == "time" else phase_loss(args, overrides)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["loss", "time", "step"], default="loss")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--eval-every", type=int, default=100, help="evaluation cadence of the loss phase")
    ap.add_argument("--max-steps", type=int, help="shorter runs (smoke check); the targets need 2,000")
    ap.add_argument("--out", help="loss phase: write the runs as JSON here")
    ap.add_argument("--best", help="time phase: the loss phase's JSON, to time each optimizer at its best lr")
    ap.add_argument("--repeats", type=int, default=3, help="time phase: alternations")
    ap.add_argument("--time-steps", type=int, default=300, help="time phase: steps per timed run")
    ap.add_argument("--rounds", type=int, default=60, help="step phase: rounds of alternated steps")
    ap.add_argument("--muon-plain", action="store_true", help="time phase: also Muon with the plain Newton-Schulz "
                    "iteration for every matrix (no Gram path), to measure what the Gram path saves")
    ap.add_argument("--muon-ns", type=int, nargs="*", default=[], metavar="N",
                    help="time and step phases: also Muon with N Newton-Schulz iterations (optim.muon_ns_steps) per update")
    ap.add_argument("--muon-dtype", nargs="*", default=[], choices=["float32", "bfloat16"],
                    help="time and step phases: also Muon with its Newton-Schulz iterations in this precision "
                         "(optim.muon_ns_dtype)")
    ap.add_argument("--from-json", nargs="+", metavar="FILE",
                    help="loss phase: no training, re-tabulate runs saved by --out (several files are merged)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if args.from_json:
        lines = loss_table([r for f in args.from_json for r in _saved_runs(Path(f))], args.out)
    elif args.phase != "step" and not Path(args.data).is_file():  # the step phase times random batches
        print(f"skipped: corpus not found at {args.data}; pass --data PATH to tinyshakespeare.txt")
        return 0
    else:
        lines = measure(args)
    if args.record:
        append_record(f"optimizers ({args.phase})", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
