"""Autofit's budget and its arithmetic: what a candidate run costs, and the rung lengths that spend the budget.

A budget is wall-clock seconds (``20m``) or training tokens (``5M tokens``). A short probe of the starting
config measures the cost of a run: a fixed part (building the model, reading the data), a part per training
step and a part per evaluation. With that, :func:`plan_rungs` picks the first rung's steps so that the
exploring rounds (see gradwise/autofit/rounds.py and docs/autofit.md) fit EXPLORE_SHARE of the budget; the
final run of the winner gets what is left, less a reserve.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from gradwise.config.validate import parse_duration
from gradwise.core.errors import ConfigError

ETA = 3  # successive halving: a third of a rung's runs go on, each trained 3x as long
WIDTH = 6  # candidates tried from the first diagnosis (moves, then TPE proposals to fill)
LEVELS = 2  # diagnosis rounds; each is followed by a promotion of its best third to a 3x longer rung
EVALS_PER_RUN = 4  # evaluations after step 0 in every candidate run: the diagnosis needs at least 3 in all
MIN_STEPS = 8  # the shortest rung: fewer steps than this say nothing about a config
RESERVE = 0.1  # kept back from the plan for the final test evaluation and the estimates' error
# The exploring rounds' share of the budget; the winner's final run gets the rest. A language model gains
# from every extra step, so a search that spent all of its budget on short runs would lose to one long run of
# a plain config (measured: bench/autofit.py, docs/benchmarks.md).
EXPLORE_SHARE = 0.4
PROBE_STEPS = 8  # the probe that measures the cost of a run

_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kKmMbB]?)\s*(?:tokens?|tok)\s*$")


@dataclass(frozen=True)
class Budget:
    amount: float
    unit: str  # "seconds" or "tokens"

    def describe(self, amount: float | None = None) -> str:
        value = self.amount if amount is None else amount
        if self.unit == "tokens":
            return f"{value:,.0f} tokens"
        return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"


def parse_budget(text: str | None) -> Budget:
    """'20m', '2h', '90s' (wall clock) or '5M tokens', '2e6 tokens' (training tokens)."""
    if text is None or not str(text).strip():
        raise ConfigError("autofit needs a budget: --budget 20m (wall clock) or --budget '5M tokens'")
    m = _TOKENS.match(str(text))
    if m:
        tokens = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
        if not math.isfinite(tokens) or tokens < 1:
            raise ConfigError(f"--budget must be a positive number of tokens; got {text!r}")
        return Budget(tokens, "tokens")
    try:
        seconds = parse_duration(str(text), "--budget")
    except ConfigError:
        raise ConfigError(f"--budget must be a duration such as 90s, 20m or 2h, or a token count such as "
                          f"'5M tokens'; got {text!r}") from None
    assert seconds is not None
    return Budget(seconds, "seconds")


@dataclass
class RunCost:
    """What one candidate run costs, in the budget's unit: fixed + per_step x steps + per_eval x evaluations."""

    unit: str  # "seconds" or "tokens"
    fixed: float
    per_step: float
    per_eval: float

    def of(self, steps: int, evals: int = EVALS_PER_RUN + 1) -> float:
        return self.fixed + self.per_step * steps + self.per_eval * evals

    def steps_within(self, amount: float, evals: int = EVALS_PER_RUN + 1) -> int:
        return max(0, int((amount - self.fixed - self.per_eval * evals) / self.per_step)) if self.per_step > 0 else 0

    @classmethod
    def from_probe(cls, unit: str, summary: dict[str, Any], wall: float, evals: int) -> RunCost:
        """From a probe run's summary and its wall-clock time (the whole ``train`` call)."""
        steps = max(1, int(summary["steps"]))
        if unit == "tokens":
            return cls(unit, 0.0, summary["tokens_seen"] / steps, 0.0)
        eval_s = float(summary.get("eval_seconds") or 0.0)
        step_s = max(float(summary["train_seconds"]) - eval_s, 1e-6)
        return cls(unit, max(wall - float(summary["train_seconds"]), 0.0), step_s / steps, eval_s / max(evals, 1))


@dataclass
class RungPlan:
    """The rounds' lengths: level k's candidates train ``steps[k]`` steps, its promotion ``steps[k] * ETA``."""

    first_steps: int
    widths: list[int]  # candidates from the diagnosis at each level
    planned: float  # the schedule's estimated cost, in the budget's unit

    def steps(self, level: int) -> int:
        return self.first_steps * ETA ** level

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def schedule_cost(cost: RunCost, first: int, widths: list[int]) -> float:
    """The whole schedule: the start at rung 0; at each level its width of candidates, then the best third of
    everything at that rung promoted to a rung ETA times longer."""
    total = cost.of(first)
    pool = 1
    for level, width in enumerate(widths):
        steps = first * ETA ** level
        total += width * cost.of(steps)
        pool = math.ceil((pool + width) / ETA)
        total += pool * cost.of(steps * ETA)
    return total


def plan_rungs(cost: RunCost, budget: float, spent: float, max_first: int | None = None) -> RungPlan:
    """The longest first rung (at least MIN_STEPS) whose exploring schedule fits EXPLORE_SHARE of what is left
    of the budget; ``ConfigError`` naming the budget that would be enough when even MIN_STEPS does not fit in
    all of it less RESERVE (a tight budget explores at MIN_STEPS and leaves the final run little)."""
    widths = [max(1, WIDTH // ETA ** level) for level in range(LEVELS)]
    room = (budget - spent) * EXPLORE_SHARE
    if schedule_cost(cost, MIN_STEPS, widths) > (budget - spent) * (1 - RESERVE):
        enough = schedule_cost(cost, MIN_STEPS, widths) / (1 - RESERVE) + spent
        raise ConfigError(f"--budget is too small: the shortest autofit schedule ({sum(widths) + 1} short runs of "
                          f"{MIN_STEPS} steps and their promotions) needs about {_amount(enough, cost.unit)} with this "
                          f"config; give at least that, or a smaller model")
    high = MIN_STEPS
    while schedule_cost(cost, high * 2, widths) <= room and (max_first is None or high * 2 <= max_first):
        high *= 2
    low, high = high, high * 2
    while high - low > 1:  # the largest first rung that fits
        mid = (low + high) // 2
        if schedule_cost(cost, mid, widths) <= room and (max_first is None or mid <= max_first):
            low = mid
        else:
            high = mid
    return RungPlan(low, widths, schedule_cost(cost, low, widths))


def _amount(value: float, unit: str) -> str:
    if unit == "tokens":
        return f"{value:,.0f} tokens"
    return f"{math.ceil(value / 60)} min" if value > 120 else f"{math.ceil(value)} s"
