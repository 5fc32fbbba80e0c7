"""Autofit's final run: how the winner of the exploring rounds trains with what is left of the budget.

Two things make it worth more than one more candidate:

- **A language model starts from the winner's weights** (``model.init_from``, its best checkpoint), so the
  steps the winner already trained are not thrown away: the final run's model has seen the winner's steps and
  its own. A fresh optimizer and a fresh warmup start it, as fine-tuning from any checkpoint does. The start
  is from scratch when the winner cannot give its weights: a model other than a GPT (the n-gram bag and the
  LSTM load no checkpoint), or a winner trained on another machine, whose checkpoint is not here.
- **A language model's learning rate is corrected for the longer run** when the winner raised it at a short
  rung. A higher rate wins any short run and loses the long one (measured on the default preset: 3.2e-2 beats
  8e-3 at 180 steps, 2.129 against 2.177 nats, and loses at 400, 1.862 against 1.778, and at 2,443 steps,
  1.370 against 1.357), so the rung's rate is scaled by (its steps / the final run's) ** 0.5 and kept at
  least at the start's, which was set for the whole run (docs/autofit.md, step 6).
- **Under a wall-clock budget its schedule follows the clock** as well as the steps (:func:`clock_schedule`),
  so it has decayed when the clock stops it, however much slower than the winner it turns out to run.
- **A config with early stopping (``train.patience``) trains the whole rest of the budget without it**
  (:func:`no_early_stop`), evaluated often enough (:func:`final_eval_every`) that its best checkpoint is
  found wherever the curve puts it. Early stopping ends a run at its first minimum, and a long run's best is
  later: the n-gram classifier on fortunes4, trained 10,000 steps on one cosine, had val loss 0.441 at step
  400, rose to 0.56 and came down to 0.422 at step 6,700 (macro-F1 0.72 then 0.79), while autofit's final
  run with the preset's patience of 4 stopped after 7 s of the 490 it was given (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gradwise.autofit.budget import EVALS_PER_RUN, RunCost
from gradwise.autofit.candidates import Candidate
from gradwise.config.schema import Config
from gradwise.core.rundir import RunDir


def warm_start(base: Config, best: Candidate) -> dict[str, Any]:
    """The override that starts the final run from ``best``'s weights ({} when it cannot)."""
    if base.task != "lm" or base.model.arch != "gpt" or not best.run:
        return {}
    run = RunDir(Path(best.run))
    if not run.config.is_file() or not run.best.is_dir():
        return {}  # trained on another machine, or its checkpoint is gone
    return {"model.init_from": str(run.path)}


# The best learning rate of a run falls about as (its steps) ** -0.5 between autofit's rungs and its final run
# (measured on the default preset: the module docstring); a rate found at a rung is discounted by this much.
HORIZON_EXPONENT = 0.5


def horizon_lr(base: Config, best: Candidate, final_steps: int, warm: bool) -> dict[str, Any]:
    """The final run's learning rate, for a language model whose winner raised the start's rate at a rung
    ``best.steps`` long: that rate x (rung steps / all the steps the final model trains: its own, and the
    winner's when it starts from the winner's weights) ** HORIZON_EXPONENT, never below the start's. {} when
    nothing needs correcting: a classifier (it stops early, near where the rungs ranked it), a winner at the
    start's rate or below it (a lower rate is a verdict's, about stability)."""
    start = float(base.optim.lr)
    won = float(best.overrides.get("optim.lr", start))
    if base.task != "lm" or won <= start or final_steps <= best.steps:
        return {}
    total = final_steps + (best.steps if warm else 0)
    corrected = max(start, won * (best.steps / total) ** HORIZON_EXPONENT)
    return {"optim.lr": float(f"{corrected:.3g}")} if corrected < won else {}


def measured_cost(unit: str, best: Candidate) -> RunCost | None:
    """The winner's own run as a cost model for its final run (the same shape and data, on this machine):
    under a wall-clock budget, its seconds per step and per evaluation, read from its summary. Better than the
    probe's estimate scaled by all candidates' errors, which a slower candidate (a wider model) inflates: the
    benchmark's final run once got 272 of 356 seconds that way. None under a token budget, or without the
    run's summary here (trained on another machine, or gone)."""
    if unit != "seconds" or not best.run:
        return None
    try:
        summary = json.loads((Path(best.run) / "summary.json").read_text(encoding="utf-8"))
        evals = int(best.facts.get("evaluations") or EVALS_PER_RUN + 1)
        cost = RunCost.from_probe(unit, summary, best.cost, evals)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cost if cost.per_step > 0 and math.isfinite(cost.per_step) else None


# Under a wall-clock budget the final run is planned for this many times the steps its room holds at the
# winner's speed, and its clock (train.max_time, the room) stops it with its schedule decayed
# (:func:`clock_schedule`): a run as fast as measured then trains until the budget's end. Planned at exactly
# its room, a 3,975-step final run of the default preset ran 3% faster per step than its 36-step winner and
# ended 19 s before its room did (docs/benchmarks.md); step times vary by about that much either way.
CLOCK_OVERSIZE = 1.2


def final_size(base: Config, unit: str, best: Candidate, probe: RunCost, probe_error: float,
               room: float) -> tuple[int, float]:
    """(steps, their expected cost) of the final run within ``room``, both from one cost model, so the check
    that it fits reads what sized it: the winner's own measured speed when its run is here
    (:func:`measured_cost`), else the probe's estimate scaled by ``probe_error`` (the candidates' real cost
    over their predicted cost). Under a wall-clock budget the steps are CLOCK_OVERSIZE times what the room
    holds and the cost is the room, which its clock enforces."""
    own = measured_cost(unit, best)
    if own is None:
        own = RunCost(probe.unit, probe.fixed * probe_error, probe.per_step * probe_error, probe.per_eval * probe_error)
    if unit != "seconds":
        steps = final_steps(base, own, room)
        return steps, own.of(steps)
    steps = final_steps(base, own, room * CLOCK_OVERSIZE)
    return steps, min(own.of(steps), room)


def clock_schedule(unit: str) -> dict[str, Any]:
    """Under a wall-clock budget, the final run's schedule moves with whichever is further, its steps or its
    clock (``schedule.horizon: time``), so a final run slower than its winner's speed still decays before the
    clock stops it. Measured: a 4,561-step final run sized at its 42-step winner's speed ran 21% slower per
    step and was stopped at 3,780 steps with its cosine barely past the middle (docs/benchmarks.md)."""
    return {"schedule.horizon": "time"} if unit == "seconds" else {}


# The final run is evaluated at its config's own cadence, but at most this many times: enough to find its
# minimum (the 10,000-step curve above, read every 100 steps), few enough to cost little. Four evaluations, as
# the rungs have, missed it: on the default preset the val loss bottoms out before the end (1.3512 at step
# 5,400 of 6,422, 1.3619 at the end), and a final run read at steps 1,761, 3,522, 5,283 and 6,382 kept 1.3587.
FINAL_EVALS = 100


def no_early_stop(base: Config) -> dict[str, Any]:
    """The override that lets the final run of a config with ``train.patience`` train its whole budget."""
    return {"train.patience": None} if base.train.patience is not None else {}


def final_eval_every(base: Config, steps: int) -> int:
    """The final run's evaluation cadence: its config's own ``train.eval_every``, no more than FINAL_EVALS
    evaluations, and at least the rungs' four."""
    rung = max(1, steps // EVALS_PER_RUN)
    return max(1, min(rung, max(int(base.train.eval_every), math.ceil(steps / FINAL_EVALS))))


def final_steps(base: Config, cost: RunCost, amount: float) -> int:
    """The most steps the final run trains within ``amount`` (in the cost's unit), its evaluations counted."""
    steps = cost.steps_within(amount)
    for _ in range(3):  # the cadence depends on the steps and the evaluations' cost on the cadence
        evals = math.ceil(steps / final_eval_every(base, max(steps, 1))) + 1 if steps > 0 else 1
        steps = cost.steps_within(amount, evals=max(evals, EVALS_PER_RUN + 1))
    return steps
