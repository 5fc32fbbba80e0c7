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
from gradwise.search.space import load_space
from gradwise.search.study import make_pruner, make_sampler, suggest
from gradwise.training.run_config import resolve_train_config

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


def grid_curves(study_dir: Path) -> dict[tuple, dict[int, float]]:
    """Validation loss at each evaluation (step 0 aside) of every grid point, from the trials' metrics."""
    curves = {}
    for row in read_trials(study_dir):
        evals = [json.loads(line) for line in (Path(row["run"]) / "metrics.jsonl").read_text().splitlines()]
        curves[tuple(sorted(row["params"].items()))] = {e["step"]: e["val_loss"] for e in evals
                                                        if e["kind"] == "eval" and e["step"] > 0}
    return curves


def replay(curves: dict[tuple, dict[int, float]], overrides: list[str], budget_steps: int, seed: int
           ) -> tuple[float, int]:
    """The default search (gradwise's own sampler and pruner) run against the recorded grid curves instead of
    training: every grid point is deterministic, so a trial's validation losses are exactly what training would
    report. Returns (best value, steps spent). Many sampler seeds cost seconds, not hours."""
    import optuna

    cfg, _, _ = resolve_train_config(str(PRESET), overrides)
    params = load_space(SPACE, cfg)
    study = optuna.create_study(sampler=make_sampler("tpe", seed), pruner=make_pruner("halving", cfg))
    used = 0
    while used < budget_steps:
        trial = study.ask()
        curve = curves[tuple(sorted(suggest(trial, params).items()))]
        best, state = math.inf, optuna.trial.TrialState.COMPLETE
        for step in sorted(curve):
            best = min(best, curve[step])
            trial.report(curve[step], step)
            if trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        used += step
        study.tell(trial, best if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return study.best_value, used


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, default=300, help="training steps of a full trial")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--budget", type=float, default=0.3, help="the default search's share of the grid's compute")
    ap.add_argument("--replays", type=int, default=30, help="sampler seeds replayed against the grid's curves")
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
        curves = grid_curves(Path(tmp) / "grid")
        replays = [replay(curves, overrides, budget // per_step, seed) for seed in range(args.replays)]
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
    gaps = sorted(best / grid["best"] - 1 for best, _ in replays)
    if replays:
        within = sum(g <= 0.01 for g in gaps)
        lines += ["", f"Replay of the default search against the grid's recorded curves, {len(replays)} sampler seeds "
                  f"(same budget): within 1% of the grid's best in **{within} of {len(replays)}**; gap median "
                  f"{gaps[len(gaps) // 2]:+.2%}, worst {gaps[-1]:+.2%}; steps spent "
                  f"{sum(u for _, u in replays) / len(replays) / (grid['tokens'] // per_step):.0%} of the grid's "
                  "on average."]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("search (grid vs TPE + halving)", "\n".join(lines),
                      [f"space: {SPACE}; full trial {args.steps} steps, evaluation every {args.eval_every}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
