"""Where a language-model autofit starts when the user gives no config: the planner sizes the model for the
final run of the schedule (about half the budget, compute-optimally: ~20 tokens per parameter of what that
run can train on, however many epochs of the data it is), and a short learning-rate range test on that size
may raise ``optim.lr``.

The preset is a measured recipe, so the planner's size replaces its shape only when it is far from it (more
than NEAR_PRESET times the preset's non-embedding parameters, either way), and the range test only raises or
confirms the preset's tuned rate: its steepest descent is a cautious point of the curve, below the rate a tuned
recipe trains at (on the default preset it gave 2.2e-3 against the measured Muon 8e-3, and autofit started
weaker than the preset), while a rate too high is what the rounds' "diverged" and "unstable" moves correct.

A user's config, or a key the user sets with ``--set``, is kept as given: the sizing only fills what the user
left to the default. What it decided, and what it cost, goes in ``autofit.json`` as ``start_plan``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gradwise.autofit.budget import EXPLORE_SHARE, RESERVE, Budget
from gradwise.config.load import apply_overrides, build_config, parse_override
from gradwise.config.schema import Config
from gradwise.core.runtime import select_device, select_dtype
from gradwise.plan.budget import size_for_tokens
from gradwise.plan.estimate import read_data
from gradwise.plan.planner import plan_run
from gradwise.tools.lr_find import lr_find

SIZE_KEYS = ("model.n_layer", "model.n_head", "model.n_embd", "train.batch_size", "train.grad_accum")
LR_FIND_STEPS = 60  # a range test this long finds the steep part of the curve on a small model in seconds
MIN_PLAN_SECONDS = 10  # below this a run is too short for the planner's proposal to mean anything
NEAR_PRESET = 2.0  # a planned size within this factor of the preset's keeps the preset's measured shape


def last_run_share() -> float:
    """The share of the budget the final run gets: what the exploring rounds leave, less the kept-back half
    reserve."""
    return 1 - EXPLORE_SHARE - RESERVE / 2


@dataclass
class StartPlan:
    overrides: list[str] = field(default_factory=list)  # --set lines on top of the user's
    notes: list[str] = field(default_factory=list)
    spent: float = 0.0  # in the budget's unit

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def wants_sizing(config: object, base: Config) -> bool:
    """A language model from the default preset (no config given), not a Hugging Face or initialised model."""
    return config is None and base.task == "lm" and base.model.arch != "hf" and not base.model.init_from


def plan_start(base: Config, user_overrides: list[str], budget: Budget, say: Callable[[str], None]) -> StartPlan:
    """Size ``base`` for the budget's longest run and range-test its learning rate (see the module doc)."""
    user_keys = {parse_override(o)[0] for o in user_overrides}
    plan = StartPlan()
    started = time.monotonic()
    run_share = budget.amount * last_run_share()
    if not any(k in user_keys for k in SIZE_KEYS[:3]):
        proposal, shape = _size(base, budget, run_share, plan)
        ratio = _size_ratio(shape, base)
        if 1 / NEAR_PRESET <= ratio <= NEAR_PRESET:
            plan.notes.append(f"kept the preset's shape: the planned one has {ratio:.2f}x its non-embedding "
                              f"parameters, within {NEAR_PRESET:g}x")
            say(f"start    the planner's size for a {budget.describe(run_share)} run is {ratio:.2f}x the preset's: "
                "the preset's measured shape is kept")
        else:
            sets = [s for s in proposal if parse_override(s)[0] in SIZE_KEYS and parse_override(s)[0] not in user_keys]
            plan.overrides += sets
            say(f"start    sized by the planner for a {budget.describe(run_share)} run ({ratio:.2f}x the preset's "
                f"parameters): {' '.join('--set ' + s for s in sets) or 'the preset as it is'}")
    sized = build_config(apply_overrides(base.to_dict(), plan.overrides))
    tokens = 0.0
    if "optim.lr" not in user_keys:
        res = lr_find(sized, steps=LR_FIND_STEPS, save=False)
        tokens = len(res.lrs) * sized.train.batch_size * sized.train.grad_accum * sized.model.block_size
        if res.suggested_lr is not None and res.suggested_lr > sized.optim.lr:
            lr = float(f"{res.suggested_lr:.3g}")
            plan.overrides.append(f"optim.lr={lr}")
            plan.notes.append(f"optim.lr {lr:g}: the range test's steepest descent ({len(res.lrs)} steps), above "
                              f"the preset's {sized.optim.lr:g}")
            say(f"start    lr-find over {len(res.lrs)} steps: --set optim.lr={lr:g} (the preset has "
                f"{sized.optim.lr:g})")
        elif res.suggested_lr is not None:
            plan.notes.append(f"optim.lr kept at the preset's tuned {sized.optim.lr:g}: the range test's steepest "
                              f"descent, {res.suggested_lr:.3g}, is below it")
            say(f"start    lr-find over {len(res.lrs)} steps suggests {res.suggested_lr:.3g}, below the preset's "
                f"tuned {sized.optim.lr:g}: kept")
        else:
            plan.notes.append(f"optim.lr kept at {sized.optim.lr:g}: the range test found no clear descent "
                              f"({'; '.join(res.notes) or res.stopped_because})")
            say(f"start    lr-find found no clear descent; optim.lr stays {sized.optim.lr:g}")
    plan.spent = round(time.monotonic() - started, 3) if budget.unit == "seconds" else tokens
    return plan


def _size_ratio(shape: tuple[int, int], base: Config) -> float:
    """The planned shape's non-embedding parameters (~12 x layers x width^2) over the preset's."""
    layers, width = shape
    return (layers * width ** 2) / max(base.model.n_layer * base.model.n_embd ** 2, 1)


def _size(base: Config, budget: Budget, run_share: float, plan: StartPlan) -> tuple[list[str], tuple[int, int]]:
    """The planner's overrides for the final run's share, and the (layers, width) they name."""
    if budget.unit == "tokens":
        device = select_device(base.train.device)
        info, _ = read_data(base, True)
        bf16 = select_dtype(base.train.dtype, device) == torch.bfloat16
        proposal = size_for_tokens(base, info, run_share, device, bf16, max_epochs=None)
        plan.notes.append(f"{proposal['n_layer']} layers x {proposal['n_embd']} wide "
                          f"({proposal['params']['total']:,} parameters) for {proposal['tokens']:,.0f} tokens: "
                          f"{proposal['tokens_per_param']:.1f} tokens per parameter")
        return proposal["overrides"], (proposal["n_layer"], proposal["n_embd"])
    seconds = max(run_share, MIN_PLAN_SECONDS)
    # no epoch cap: the final run trains its whole share whatever the epochs (a cap would size the model for
    # 4 epochs it then exceeds); the diagnosis and the best checkpoint answer overfitting
    proposal = plan_run(base, None, budget=f"{seconds:.0f}s", calibrate=False, max_epochs=None).budget
    plan.notes.append(f"{proposal['n_layer']} layers x {proposal['n_embd']} wide ({proposal['params']['total']:,} "
                      f"parameters) for a {seconds:.0f} s run: {proposal['tokens_per_param']:.1f} tokens per "
                      "parameter" + ("; data-limited" if proposal["data_limited"] else ""))
    return proposal["overrides"], (proposal["n_layer"], proposal["n_embd"])
