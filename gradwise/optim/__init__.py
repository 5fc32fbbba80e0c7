"""Strategy: optimizers with their parameter groups, and learning-rate schedules."""

from gradwise.optim.optimizers import OPTIMIZERS, build_optimizer, param_groups
from gradwise.optim.schedules import ScheduleClock, build_scheduler, lr_at

__all__ = ["OPTIMIZERS", "build_optimizer", "param_groups", "build_scheduler", "lr_at", "ScheduleClock"]
