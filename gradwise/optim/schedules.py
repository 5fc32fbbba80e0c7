"""Learning-rate schedules, each a pure function of the step (so a schedule's state is the step count).

- constant / linear / cosine: linear warmup, then hold, or decay linearly or by a cosine to ``min_lr``.
- wsd (warmup-stable-decay): warmup, hold at ``lr``, then decay linearly to ``min_lr`` over the final
  ``decay_fraction`` of the steps. The stable phase makes any step before the decay a good branch
  point for a longer run.
- inverse_sqrt: warmup, then ``lr * sqrt(warmup / step)`` (floored at ``min_lr``); no end date needed.
- onecycle: a cosine rise from ``lr / 25`` to ``lr`` over ``warmup_steps``, then a cosine to ``min_lr``.

``schedule.horizon: time`` moves a schedule along whichever is further, the steps or the clock
(``train.max_time``), so a run that the clock stops has still decayed: a run sized from a speed estimate
that turns out slower would otherwise stop at a high learning rate (:class:`ScheduleClock`).
"""

from __future__ import annotations

import math

import torch

from gradwise.config.schema import ScheduleConfig

ONECYCLE_START_DIVISOR = 25.0


def _cosine(progress: float, start: float, end: float) -> float:
    return end + 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) * (start - end)


def lr_at(step: int, cfg: ScheduleConfig, base_lr: float, max_steps: int) -> float:
    """The learning rate for optimization step ``step`` (0-based)."""
    warmup = cfg.warmup_steps
    decay_end = cfg.decay_steps or max_steps
    if cfg.name == "onecycle":
        start = base_lr / ONECYCLE_START_DIVISOR
        if step < warmup:
            return _cosine(step / warmup, start, base_lr) if warmup else base_lr
        return _cosine((step - warmup) / max(1, decay_end - warmup), base_lr, cfg.min_lr)
    if step < warmup:
        return base_lr * (step + 1) / (warmup + 1)
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "inverse_sqrt":
        return max(cfg.min_lr, base_lr * math.sqrt(max(warmup, 1) / max(step, warmup, 1)))
    if step >= decay_end:
        return cfg.min_lr
    if cfg.name == "wsd":
        decay_start = decay_end - max(1, round(cfg.decay_fraction * decay_end))
        if step < decay_start:
            return base_lr
        progress = (step - decay_start) / max(1, decay_end - decay_start)
        return base_lr + (cfg.min_lr - base_lr) * progress
    progress = (step - warmup) / max(1, decay_end - warmup)
    if cfg.name == "linear":
        return base_lr + (cfg.min_lr - base_lr) * progress
    return _cosine(progress, base_lr, cfg.min_lr)


class ScheduleClock:
    """Where a ``horizon: time`` schedule stands: the share of ``train.max_time`` spent so far, set by the loop
    before each step. The schedule reads step ``max(step, share x max_steps)``, so it ends with the clock when
    the clock runs out first, and with the steps otherwise. A wall clock is not reproducible: such a run
    resumes at its saved time, not bit-exactly."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps
        self.share = 0.0

    def position(self, step: int) -> int:
        return max(step, min(self.max_steps, int(self.share * self.max_steps)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float,
                    max_steps: int, clock: ScheduleClock | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :func:`lr_at` (at the clock's position when ``clock`` is given). Every parameter
    group is scaled by the same factor, so groups with their own learning rate (embeddings, Muon's matrices)
    keep their ratio to the main one."""
    def factor(step: int) -> float:
        return lr_at(clock.position(step) if clock is not None else step, cfg, base_lr, max_steps) / base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
