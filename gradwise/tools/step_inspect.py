"""One optimization step, looked at closely: what `gradwise step` measures around gradwise's own step.

The step itself is :class:`gradwise.training.step.OptimizationStep`, the one training runs; this module adds the
views a person wants when studying a single update: the loss on the same batch before and after it (eval
mode, no dropout), the gradient norm per layer group before clipping, the update size relative to the
weights per layer group, and the time of forward, backward, clipping and the optimizer, plus peak memory.
"""

from __future__ import annotations

import math
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from gradwise.training.step import Batch, OptimizationStep

_INDEXED = re.compile(r"^(.*?\.\d+)\.")  # "blocks.3.attn.qkv.weight" -> "blocks.3"; "model.layers.0.mlp..." too


def layer_group(name: str) -> str:
    """The layer a parameter belongs to: the name up to its first numeric index, else its first part."""
    m = _INDEXED.match(name)
    if m:
        return m.group(1)
    parts = name.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 else name


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by layer, in model order (a tied weight counted once, where it first appears)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():  # named_parameters() already skips the second name of a tie
        if p.requires_grad:  # "hf." is the wrapper around a Hugging Face model: its own names read better
            groups.setdefault(layer_group(name.removeprefix("hf.")), []).append(p)
    return groups


def _norm(tensors: list[torch.Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])))


@dataclass
class StepReport:
    step: int
    loss_before: float  # eval mode, same batch, before the update
    loss_after: float  # eval mode, same batch, after it
    train_loss: float  # what the step itself computed (train mode: dropout on)
    grad_norm: float  # global, before clipping
    clipped: bool
    lr: float
    update_ratio: float  # ||Δθ|| / ||θ|| over all parameters
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # per layer: grad_norm, update_ratio
    timings: dict[str, float] = field(default_factory=dict)  # seconds: forward, backward, clip, optimizer
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""  # "cuda allocated" or "process RSS"
    skipped: bool = False

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def batch_loss(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
               batches: list[Batch]) -> float:
    """Mean loss over ``batches`` in eval mode (dropout off), restoring the model's mode."""
    was_training = model.training
    model.eval()
    try:
        return sum(float(loss_fn(model, x, y)) for x, y in batches) / len(batches)
    finally:
        model.train(was_training)


class StepInspector:
    """Runs ``stepper`` once per call and measures around it."""

    def __init__(self, model: nn.Module, stepper: OptimizationStep,
                 loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]):
        self.model = model
        self.stepper = stepper
        self.loss_fn = loss_fn
        self.groups = layer_groups(model)
        self.count = 0

    def __call__(self, batches: list[Batch], measure_before: bool = True) -> StepReport:
        device = batches[0][0].device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before_loss = batch_loss(self.model, self.loss_fn, batches) if measure_before else math.nan
        weights = {g: [p.detach().clone() for p in ps] for g, ps in self.groups.items()}
        grad_norms: dict[str, float] = {}

        def on_grads() -> None:
            for g, ps in self.groups.items():
                grad_norms[g] = _norm([p.grad for p in ps if p.grad is not None])

        t0 = time.perf_counter()
        result = self.stepper(batches, profile=True, on_grads=on_grads)
        elapsed = time.perf_counter() - t0
        self.count += 1
        groups = {}
        deltas_sq = weights_sq = 0.0
        for g, ps in self.groups.items():
            delta = _norm([p.detach() - w for p, w in zip(ps, weights[g], strict=True)])
            size = _norm(weights[g])
            deltas_sq += delta ** 2
            weights_sq += size ** 2
            groups[g] = {"grad_norm": grad_norms.get(g, 0.0), "update_ratio": delta / size if size > 0 else math.nan,
                         "params": sum(p.numel() for p in ps)}
        after_loss = batch_loss(self.model, self.loss_fn, batches)
        timings = dict(result.timings or {})
        timings["total"] = elapsed
        peak, kind = peak_memory(device)
        return StepReport(step=self.count, loss_before=before_loss, loss_after=after_loss, train_loss=result.loss,
                          grad_norm=result.grad_norm, clipped=result.clipped, lr=result.lr,
                          update_ratio=math.sqrt(deltas_sq / weights_sq) if weights_sq > 0 else math.nan,
                          groups=groups, timings=timings, peak_memory_bytes=peak, peak_memory_kind=kind,
                          skipped=result.skipped)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes: CUDA's allocator high-water mark, else the process's peak resident size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "process peak RSS"


def converged(losses: list[float], tol: float, window: int) -> bool:
    """True when each of the last ``window`` steps changed the loss by at most ``tol`` relative to it (absolute
    ``tol`` nats once the loss is below 1: a memorized text's loss near 0 has no useful relative change)."""
    if len(losses) <= window:
        return False
    recent = losses[-(window + 1):]
    return all(abs(b - a) <= tol * max(abs(a), 1.0) for a, b in zip(recent, recent[1:], strict=False))


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line plot of ``values`` in block characters, at most ``width`` wide (bins averaged)."""
    bars = "▁▂▃▄▅▆▇█"
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:], strict=False)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(bars[min(7, int((v - lo) / span * 7.999))] if math.isfinite(v) else " " for v in values)
