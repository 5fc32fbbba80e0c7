"""Search benchmark: TPE + successive-halving pruning against grid search, over one space, by compute spent.

Config: `configs/shakespeare-char-cpu.yaml` shortened to --steps (default 300) with an evaluation every
--eval-every steps on fixed validation windows. Space (the same lists for both searches):
optim.lr x model.dropout x optim.weight_decay. The grid trains every point to the end. The default search
(`gradwise tune`'s defaults: TPE sampler, successive-halving pruner) gets a token budget of --budget
(default 30%) of the grid's tokens. Compute is counted in training steps (tokens / tokens per step), pruned
trials included. Target: the default search's best validation loss within 1% of the grid's best.

    python3 bench/search.py --record      # ~10 minutes on 2 cores; appends to docs/benchmarks.md
    python3 bench/search.py --steps 20    # smoke check
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from benchrecord import RECORD_FILE, append_record

from gradwise.search import tune
from gradwise.search.report import read_trials

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "configs" / "shakespeare-char-cpu.yaml"
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SPACE = {"optim.lr": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], "model.dropout": [0.0, 0.1, 0.2],
         "optim.weight_decay": [0.0, 0.1]}


def search(name: str, tmp: str, overrides: list[str], **kw: object) -> dict:
    t0 = time.perf_counter()
    res = tune(str(PRESET), SPACE, study_name=name, out_dir=tmp, overrides=overrides, seed=0, **kw)
    rows = read_trials(res.study_dir)
    return {"name": name, "best": res.best_value, "trials": len(rows),
            "pruned": sum(r["state"] == "PRUNED" for r in rows), "tokens": sum(r["tokens"] or 0 for r in rows),
            "seconds": time.perf_counter() - t0, "best_params": res.study.best_trial.params}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, default=300, help="training steps of a full trial")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--budget", type=float, default=0.3, help="the default search's share of the grid's compute")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipped: corpus not found at {args.data}; pass --data PATH to tinyshakespeare.txt")
        return 0
    per_step = 12 * 64  # the preset's batch x context
    with tempfile.TemporaryDirectory(prefix="gradwise-search-") as tmp:
        overrides = [f"data.path={json.dumps(str(Path(args.data).resolve()))}", f"train.max_steps={args.steps}",
                     f"train.eval_every={args.eval_every}", "train.eval_batches=20", "schedule.warmup_steps=20",
                     "schedule.min_lr=0", f"data.cache_dir={json.dumps(tmp + '/cache')}"]
        grid = search("grid", tmp, overrides, sampler="grid", pruner="none")
        print(f"  grid: best {grid['best']:.4f}, {grid['tokens'] // per_step} steps ({grid['seconds']:.0f}s)", flush=True)
        # No trial starts past the budget, but the last one started runs to its end: leave room for it.
        budget = int(grid["tokens"] * args.budget) - args.steps * per_step
        tpe = search("tpe-halving", tmp, overrides, sampler="tpe", pruner="halving", max_tokens=budget)
        print(f"  tpe+halving: best {tpe['best']:.4f}, {tpe['tokens'] // per_step} steps ({tpe['seconds']:.0f}s)")
    lines = ["| search | trials (pruned) | training steps | share of grid | best val loss | vs grid best | best point |",
             "|---|--:|--:|--:|--:|--:|---|"]
    for r in (grid, tpe):
        share = r["tokens"] / grid["tokens"]
        gap = r["best"] / grid["best"] - 1
        lines.append(f"| {r['name']} | {r['trials']} ({r['pruned']}) | {r['tokens'] // per_step:,} | {share:.0%} | "
                     f"{r['best']:.4f} | {gap:+.2%} | {r['best_params']} |")
    met = tpe["best"] <= grid["best"] * 1.01 and tpe["tokens"] <= grid["tokens"] * 0.3
    lines += ["", f"Target (within 1% of the grid's best with <= 30% of its steps): {'met' if met else 'missed'}."
              + ("" if math.isfinite(tpe["best"]) else " (no finished trial)")]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("search (grid vs TPE + halving)", "\n".join(lines),
                      [f"space: {SPACE}; full trial {args.steps} steps, evaluation every {args.eval_every}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
