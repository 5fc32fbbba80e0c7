"""The single-step study behind `gradwise step`: a model, a text, an optimizer, N measured steps.

The classic first example of training (load GPT-2, one Adam step on "The quick brown fox jumps over the lazy
dog") made into a tool: the same :class:`~gradwise.training.step.OptimizationStep` that training runs, measured by
:class:`~gradwise.tools.step_inspect.StepInspector`, repeated on the same batch if asked, and saved in the format
the model came in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradwise.config import Config, OptimConfig, TrainConfig
from gradwise.core.device_memory import refuse_beyond_free
from gradwise.core.errors import GradwiseError
from gradwise.core.runtime import seed_everything, select_device
from gradwise.objectives.losses import IGNORE_INDEX, CausalLMObjective
from gradwise.tools.step_inspect import StepInspector, StepReport
from gradwise.tools.step_target import load_step_target
from gradwise.training.build import assemble
from gradwise.training.memory import loaded_step_bytes

MAX_WINDOWS = 64  # a --text-file longer than this many context windows is cut (the step is for study)


@dataclass
class StepRun:
    reports: list[StepReport] = field(default_factory=list)
    converged: bool = False
    diverged: bool = False  # a step's loss or gradient went non-finite: the update was skipped and we stopped
    saved: Path | None = None
    kind: str = ""


def text_batch(ids: list[int], block_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inputs and next-token targets: one row per context window; a short last row is padded and ignored."""
    if len(ids) < 2:
        raise GradwiseError("the text is too short: it needs at least two tokens to predict one from the other")
    rows = []
    for start in range(0, len(ids) - 1, block_size):
        rows.append(ids[start:start + block_size + 1])
        if len(rows) == MAX_WINDOWS:
            break
    width = max(len(r) for r in rows) - 1
    x = torch.zeros(len(rows), width, dtype=torch.long)
    y = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r) - 1] = torch.tensor(r[:-1])
        y[i, :len(r) - 1] = torch.tensor(r[1:])
    return x.to(device), y.to(device), int((y != IGNORE_INDEX).sum())


def mean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the real (not padded) targets."""
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX)


def check_step_memory(model: torch.nn.Module, optimizer: str, x: torch.Tensor, device: torch.device) -> None:
    """Refuse a step the loaded model has no room for (gradients, optimizer state, and per context window what
    autograd keeps: :func:`~gradwise.training.memory.loaded_step_bytes`), against the memory still free."""
    windows, width = x.shape
    fixed, per_window = loaded_step_bytes(model, optimizer, OptimConfig().momentum, width)
    lighter = "" if optimizer in ("sgd", "adafactor") else \
        ", or --optimizer adafactor (a row and a column of state per matrix)"

    def advice(usable: float) -> str:
        fit = int((usable - fixed) // per_window)
        if fit >= 1:
            return f"give a shorter text: {min(fit, windows - 1)} context window(s) of {width} tokens fit, this one has {windows}"
        return f"not even one context window fits beside the gradients and optimizer state{lighter}"

    refuse_beyond_free(fixed + windows * per_window, device, f"a {optimizer} step on {windows} context window(s)", advice)


def run_steps(model_path: str | Path, text: str, *, optimizer: str = "adam", lr: float = 1e-3,
              weight_decay: float = 0.0, grad_clip: float = 0.0, steps: int = 1, device: str = "auto",
              seed: int = 0, on_step: Callable[[StepReport, dict[str, Any]], bool] | None = None,
              save: Path | None = None) -> StepRun:
    """Take up to ``steps`` optimization steps on ``text``; ``on_step`` returning True stops early (converged)."""
    if lr <= 0:
        raise GradwiseError(f"--lr must be positive, not {lr:g}")
    if save is not None and save.exists() and any(save.iterdir()):
        raise GradwiseError(f"--save {save} exists and is not empty; choose a new directory")
    seed_everything(seed)
    dev = select_device(device)
    target = load_step_target(model_path, dev)
    model = target.model.to(dev)
    x, y, tokens = text_batch(target.encode(text), target.block_size, dev)
    check_step_memory(model, optimizer, x, dev)
    # the training step, in fp32 with a constant learning rate, synchronous so every number can be read
    cfg = Config(optim=OptimConfig(name=optimizer, lr=lr, weight_decay=weight_decay),
                 train=TrainConfig(grad_clip=grad_clip, dtype="float32", compile=False, async_steps=False))
    stepper = assemble(cfg, model, CausalLMObjective(), dev, scheduler=lambda opt: None,
                       max_nonfinite=steps + 1).step
    inspector = StepInspector(model, stepper, mean_loss)
    setup = {"model": target.describe, "device": f"{dev.type} fp32", "windows": int(x.shape[0]), "tokens": tokens,
             "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "grad_clip": grad_clip,
             "kind": target.kind}
    run = StepRun(kind=target.kind)
    previous = None
    for _ in range(steps):
        report = inspector([(x, y)], measure_before=previous is None)
        if previous is not None:  # the loss before this step is the one after the last: no second forward
            report.loss_before = previous
        previous = report.loss_after
        run.reports.append(report)
        stop = on_step is not None and on_step(report, setup)
        if report.skipped:
            run.diverged = True
            break
        if stop:
            run.converged = True
            break
    if save is not None:
        model.eval()
        target.save(save)
        run.saved = save
    return run
