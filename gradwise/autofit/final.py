"""Autofit's final run: how the winner of the exploring rounds trains with what is left of the budget.

Two things make it worth more than one more candidate:

- **A language model starts from the winner's weights** (``model.init_from``, its best checkpoint), so the
  steps the winner already trained are not thrown away: the final run's model has seen the winner's steps and
  its own. A fresh optimizer and a fresh warmup start it, as fine-tuning from any checkpoint does. The start
  is from scratch when the winner cannot give its weights: a model other than a GPT (the n-gram bag and the
  LSTM load no checkpoint), or a winner trained on another machine, whose checkpoint is not here.
- **A config with early stopping (``train.patience``) keeps its own evaluation cadence** when that is finer
  than the rungs' four evaluations a run, so a classifier that peaks early stops near its peak and its best
  checkpoint is that peak, not the first of four evaluations spread over thousands of steps.
"""

from __future__ import annotations

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


def final_eval_every(base: Config, steps: int) -> int:
    """The final run's evaluation cadence: the rungs' (four a run), or the config's own when it stops early on
    a finer one."""
    rung = max(1, steps // EVALS_PER_RUN)
    if base.train.patience is None:
        return rung
    return max(1, min(rung, int(base.train.eval_every)))


def final_steps(base: Config, cost: RunCost, amount: float) -> int:
    """The most steps the final run trains within ``amount`` (in the cost's unit), its evaluations counted."""
    steps = cost.steps_within(amount)
    if base.train.patience is None:  # the rungs' four evaluations, as every candidate's estimate counts them
        return steps
    for _ in range(3):  # the cadence depends on the steps and the evaluations' cost on the cadence
        evals = math.ceil(steps / final_eval_every(base, max(steps, 1))) + 1 if steps > 0 else 1
        steps = cost.steps_within(amount, evals=max(evals, EVALS_PER_RUN + 1))
    return steps
