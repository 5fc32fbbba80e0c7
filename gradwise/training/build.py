"""The one assembly of the training step: model on its device (fp8 swapped in, FSDP-sharded), optimizer,
schedule, penalties, the DDP wrapper and ``torch.compile`` around what the step runs, and the
:class:`OptimizationStep` itself.

Training, the learning-rate finder, the planner's calibration, ``gradwise step`` and the GPU benchmark all
build their step here, so what each of them times or tests is the step training runs. They pass only what
they do differently (lr-find's growing learning rate, a calibration that never stops on a non-finite step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradwise.config import Config
from gradwise.core.runtime import compiled, select_dtype, uses_cuda_graphs
from gradwise.objectives.losses import Objective
from gradwise.objectives.penalties import Penalties
from gradwise.optim import ScheduleClock, build_optimizer, build_scheduler
from gradwise.training.distributed import Distributed
from gradwise.training.fp8 import fp8_if_asked
from gradwise.training.step import OptimizationStep, asynchronous_steps

Scheduler = torch.optim.lr_scheduler.LRScheduler


@dataclass
class Assembled:
    """What a training step is made of. ``model`` is the module checkpoints and the FLOP meter read (sharded
    under FSDP); ``step`` runs its DDP wrapper, compiled when ``train.compile`` asks."""

    model: nn.Module
    evaluated: nn.Module  # what validation runs: ``model``, compiled when train.compile asks
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    step: OptimizationStep
    clock: ScheduleClock | None = None  # schedule.horizon time: the loop sets the share of train.max_time spent


def assemble(cfg: Config, model: nn.Module, objective: Objective, device: torch.device,
             dist: Distributed | None = None, *,
             scheduler: Callable[[torch.optim.Optimizer], Scheduler | None] | None = None,
             max_nonfinite: int | None = None, asynchronous: bool | None = None) -> Assembled:
    """Assemble ``cfg``'s step around an already built (and initialised) ``model``.

    ``scheduler`` replaces the config's schedule (lr-find's exponential range; ``lambda opt: None`` for
    none); ``max_nonfinite`` the config's stop rule; ``asynchronous=False`` keeps every step's numbers on the
    host (a caller that reads each step's loss)."""
    t, r = cfg.train, cfg.regularization
    dist = dist or Distributed(device=device)
    # fp8 linear layers are swapped in before sharding, wrapping and compiling see the model;
    # FSDP2 shards in place, before the optimizer sees the parameters
    model = dist.shard(fp8_if_asked(model.to(device), t.fp8, device))
    optimizer = build_optimizer(model, cfg.optim, device)
    clock = ScheduleClock(t.max_steps) if cfg.schedule.horizon == "time" and scheduler is None else None
    schedule = (build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, t.max_steps, clock) if scheduler is None
                else scheduler(optimizer))
    penalties = Penalties(model, r.l1, r.l2, r.params)
    # Ranks: the step trains through DDP (gradients all-reduced); evaluation and checkpoints use the plain model.
    # train.compile compiles what the step runs (the DDP wrapper included), so training is what gets faster.
    trained = dist.wrap(model)
    if t.compile:
        trained = compiled(trained, t.compile_mode)
    asked = t.async_steps if asynchronous is None else asynchronous
    step = OptimizationStep(trained, optimizer, objective, scheduler=schedule, grad_clip=t.grad_clip,
                            autocast_dtype=select_dtype(t.dtype, device),
                            max_nonfinite=t.max_nonfinite if max_nonfinite is None else max_nonfinite,
                            clip_mode=t.grad_clip_mode, penalty=penalties if penalties.active else None,
                            dist=dist, cuda_graphs=uses_cuda_graphs(t.compile, t.compile_mode),
                            asynchronous=asynchronous_steps(asked, device, optimizer, dist.world_size))
    evaluated = compiled(model, t.compile_mode) if t.compile else model
    return Assembled(model, evaluated, optimizer, schedule, step, clock)
