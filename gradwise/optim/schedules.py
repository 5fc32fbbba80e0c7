"""Learning-rate schedules: linear warmup, then constant, linear or cosine decay to a floor."""

from __future__ import annotations

import math

import torch

from gradwise.config import ScheduleConfig


def lr_at(step: int, cfg: ScheduleConfig, base_lr: float, max_steps: int) -> float:
    """The learning rate for optimization step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return base_lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.name == "constant":
        return base_lr
    decay_end = cfg.decay_steps or max_steps
    if step >= decay_end:
        return cfg.min_lr
    span = max(1, decay_end - cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / span
    if cfg.name == "linear":
        return base_lr + (cfg.min_lr - base_lr) * progress
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - cfg.min_lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, base_lr: float,
                    max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose multiplier follows :func:`lr_at`; its state is only the step count."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, cfg, base_lr, max_steps) / base_lr)
