"""The single optimization step, as one instrumented unit.

zero grad → forward → loss → backward over ``grad_accum`` micro-batches → clip by global norm →
optimizer step → schedule step. It returns what happened (loss, gradient norm, learning rate, tokens,
time, whether the update was skipped) so the loop, the ``step`` command and tests all see the same
numbers. A non-finite loss or gradient skips the update instead of poisoning the weights; too many in
a row stop training with a clear message.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from gradwise.core.errors import ConfigError, TrainingStopped
from gradwise.core.runtime import autocast_context, synchronize, whole
from gradwise.objectives.losses import LossTerms, Objective
from gradwise.optim.combined import optimizer_parts

if TYPE_CHECKING:
    from gradwise.training.distributed import Distributed

Batch = tuple[torch.Tensor, torch.Tensor]
Penalty = Callable[[], dict[str, torch.Tensor]]


@dataclass
class StepResult:
    loss: float  # mean loss over the step's micro-batches (what an un-accumulated batch would give)
    grad_norm: float  # global L2 norm of the gradient before clipping
    lr: float  # learning rate this step used
    tokens: int  # tokens processed (LM: target tokens; classifier: non-padding input tokens)
    seconds: float
    skipped: bool = False  # True when a non-finite loss or gradient skipped the update
    clipped: bool = False
    update_ratio: float | None = None  # ||Δθ|| / ||θ|| when measured
    parts: dict[str, float] | None = None  # objective terms (mean over micro-batches) and penalties
    timings: dict[str, float] | None = None  # with profile=True: seconds in forward, backward, clip, optimizer
    # An asynchronous step's numbers, still on the device (loss, grad_norm, skipped, clipped and parts are
    # placeholders until OptimizationStep.settle reads them).
    pending: _Pending | None = field(default=None, repr=False)


@dataclass
class _Pending:
    loss_sum: torch.Tensor  # divided by micro_batches on the host, in float64, as a synchronous step does
    micro_batches: int
    grad_norm: torch.Tensor
    finite: torch.Tensor
    max_abs: torch.Tensor | None
    parts: dict[str, torch.Tensor]

    def tensors(self) -> list[torch.Tensor]:
        extra = [self.max_abs] if self.max_abs is not None else []
        return [self.loss_sum, self.grad_norm, self.finite, *extra, *self.parts.values()]


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every part of ``optimizer`` can skip an update on the device, given a ``found_inf`` tensor (the
    fused Adam and AdamW kernels, as GradScaler uses them): a step then needs no host sync."""
    return all(getattr(part, "_step_supports_amp_scaling", False) for part in optimizer_parts(optimizer))


def asynchronous_steps(asked: bool | None, device: torch.device, optimizer: torch.optim.Optimizer,
                       ranks: int = 1) -> bool:
    """``train.async_steps``: off unless asked (None, from configs written while it was on by default for one
    CUDA process, is off too): it has not yet run on a real GPU (issue 17). True insists, with one line where
    it cannot run."""
    if not asked:
        return False
    if asked and ranks > 1:
        raise ConfigError("train.async_steps runs in one process: under torchrun every step already waits for "
                          "the ranks' all-reduce; set train.async_steps=false")
    if asked and not skips_on_device(optimizer):
        raise ConfigError("train.async_steps needs an optimizer that can skip a non-finite step on the device "
                          "(optim.name adamw or adam, with optim.fused not false); set train.async_steps=false")
    return asked


class OptimizationStep:
    """One optimization step over a list of micro-batches; call it once per step."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, objective: Objective, *,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, grad_clip: float = 1.0,
                 autocast_dtype: torch.dtype | None = None, max_nonfinite: int = 10, clip_mode: str = "norm",
                 penalty: Penalty | None = None, dist: Distributed | None = None, cuda_graphs: bool = False,
                 asynchronous: bool = False):
        if asynchronous and not skips_on_device(optimizer):
            raise ValueError("an asynchronous step needs an optimizer that skips on the device (fused AdamW "
                             "or Adam)")
        self.model = model
        self.optimizer = optimizer
        self.objective = objective
        self.scheduler = scheduler
        self.grad_clip = grad_clip
        if clip_mode not in ("norm", "value"):
            raise ValueError(f"clip_mode must be 'norm' or 'value', not {clip_mode!r}")
        self.clip_mode = clip_mode
        self.penalty = penalty
        self.autocast_dtype = autocast_dtype
        self.max_nonfinite = max_nonfinite
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        # Data-parallel ranks (torchrun): ``model`` is DDP/FSDP-wrapped, each rank gets its share of the
        # micro-batches and reports the global step. None (or one rank): the single-process step, unchanged.
        self.dist = dist if dist is not None and dist.enabled else None
        # torch.compile's CUDA graphs (compile modes reduce-overhead, max-autotune) replay into buffers they own;
        # marking each step's start tells them the previous step's outputs are no longer read.
        self.cuda_graphs = cuda_graphs
        # Asynchronous (train.async_steps): no host sync per step. A non-finite step is skipped by the fused
        # optimizer on the device, and loss, norm and the non-finite count are read later, by settle().
        self.asynchronous = asynchronous

    def __call__(self, micro_batches: Sequence[Batch], measure_update: bool = False, profile: bool = False,
                 on_grads: Callable[[], None] | None = None, seeds: Sequence[int] | None = None) -> StepResult:
        """One step. ``profile`` times each phase (synchronizing the device: slower, for study only);
        ``on_grads`` is called once the gradients are complete, before clipping (to read them per layer);
        ``seeds`` (one per micro-batch) seed the RNG before each forward, so dropout masks do not depend on
        which process runs the micro-batch or what ran before it."""
        if not micro_batches:
            raise ValueError("a step needs at least one micro-batch")
        t0 = time.perf_counter()
        clock = _PhaseClock(micro_batches[0][0].device) if profile else None
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        device = micro_batches[0][0].device
        if self.cuda_graphs and device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        n = len(micro_batches)
        loss_sum = torch.zeros((), device=device)
        part_sums: dict[str, torch.Tensor] = {}
        tokens = 0
        for i, (inputs, targets) in enumerate(micro_batches):
            # Ranks: gradients are averaged across ranks on the last micro-batch only (no_sync before it).
            if seeds is not None:
                torch.manual_seed(seeds[i])
            with self._grad_sync(last=i == n - 1):
                with autocast_context(device, self.autocast_dtype):
                    out = self.objective(self.model, inputs, targets)
                loss = out.total if isinstance(out, LossTerms) else out
                if clock:
                    clock.lap("forward")
                (loss / n).backward()
                if clock:
                    clock.lap("backward")
            loss_sum += loss.detach()
            if isinstance(out, LossTerms) and len(out.parts) > 1:
                for name, value in out.parts.items():
                    part_sums[name] = part_sums.get(name, 0.0) + value.detach() / n
            counter = getattr(self.objective, "tokens_in", None)  # e.g. a classifier: its non-padding inputs
            tokens += counter(inputs, targets) if counter else targets.numel()
        n_total = n
        if self.dist is not None:  # every rank reports the global step: loss and tokens summed over ranks
            loss_sum, part_sums, tokens = self.dist.sum_step(loss_sum, part_sums, tokens)
            n_total = n * self.dist.world_size
            part_sums = {k: v / self.dist.world_size for k, v in part_sums.items()}
        if self.penalty is not None:  # once per step, on the weights as they are
            terms = self.penalty()
            if terms:
                sum(terms.values()).backward()
                if self.dist is not None and self.dist.sharded:  # FSDP: each rank penalised its own shard
                    terms = {name: self.dist.sum_tensor(value.detach().clone()) for name, value in terms.items()}
                part_sums.update({name: value.detach() for name, value in terms.items()})

        if clock:
            clock.lap("backward")  # the penalties' backward, if any
        if on_grads is not None:
            on_grads()
            if clock:
                clock.lap("inspect")  # reading the gradients is not the step's own cost
        grad_norm_t, max_abs_t = self._clip()
        if clock:
            clock.lap("clip")
        if self.asynchronous:
            return self._step_on_device(loss_sum, n_total, grad_norm_t, max_abs_t, part_sums, tokens, t0,
                                        measure_update)
        loss_value = loss_sum.item() / n_total
        # The norm is global: DDP's gradients are already averaged, FSDP's norm is reduced over shards. With the
        # all-reduced loss, every rank sees the same numbers and skips a non-finite step together.
        grad_norm = _item(grad_norm_t)
        lr = self.optimizer.param_groups[0]["lr"]
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
        update_ratio = None
        if finite:
            self.nonfinite_streak = 0
            before = [p.detach().clone() for p in self.params] if measure_update else None
            if clock:
                clock.lap("other")
            self.optimizer.step()
            if clock:
                clock.lap("optimizer")
            if before is not None:
                update_ratio = _relative_update(before, self.params, self.dist)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._count_nonfinite(loss_value, grad_norm)
        if self.scheduler is not None:
            self.scheduler.step()
        return StepResult(loss=loss_value, grad_norm=grad_norm, lr=lr, tokens=tokens,
                          seconds=time.perf_counter() - t0, skipped=not finite,
                          clipped=self._clipped(finite, grad_norm,
                                                _item(max_abs_t) if max_abs_t is not None and finite else None),
                          update_ratio=update_ratio,
                          parts={k: float(v) for k, v in part_sums.items()} if part_sums else None,
                          timings=clock.times if clock else None)

    def _clipped(self, finite: bool, grad_norm: float, max_abs: float | None) -> bool:
        """Whether clipping changed the gradient: by norm, the norm was over the threshold; by value, an element."""
        return finite and self.grad_clip > 0 and (
            max_abs > self.grad_clip if max_abs is not None else grad_norm > self.grad_clip)

    def _count_nonfinite(self, loss: float, grad_norm: float) -> None:
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        if self.nonfinite_streak >= self.max_nonfinite:
            raise TrainingStopped(
                f"{self.nonfinite_streak} non-finite steps in a row (loss {loss}, grad norm {grad_norm}); "
                "lower optim.lr, keep train.grad_clip on, or check the data for broken records")

    def _step_on_device(self, loss_sum: torch.Tensor, n_total: int, grad_norm: torch.Tensor,
                        max_abs: torch.Tensor | None,
                        part_sums: dict[str, torch.Tensor], tokens: int, t0: float,
                        measure_update: bool) -> StepResult:
        """The update without reading anything back: the fused optimizer skips it when ``found_inf`` is set."""
        grad_norm, max_abs = whole(grad_norm), (whole(max_abs) if max_abs is not None else None)
        finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        before = [p.detach().clone() for p in self.params] if measure_update else None
        parts = optimizer_parts(self.optimizer)
        found_inf = (~finite).float()
        for part in parts:
            part.found_inf, part.grad_scale = found_inf, None
        try:
            self.optimizer.step()
        finally:
            for part in parts:
                del part.found_inf, part.grad_scale
        update_ratio = _relative_update(before, self.params, self.dist) if before is not None else None
        if self.scheduler is not None:
            self.scheduler.step()
        nan = float("nan")
        return StepResult(loss=nan, grad_norm=nan, lr=lr, tokens=tokens, seconds=time.perf_counter() - t0,
                          update_ratio=update_ratio,
                          pending=_Pending(loss_sum.detach(), n_total, grad_norm.detach(), finite, max_abs,
                                           part_sums))

    def settle(self, results: Sequence[StepResult]) -> None:
        """Read asynchronous steps' numbers from the device (one transfer), in step order, and apply the
        non-finite rule to them; synchronous results pass through. Raises TrainingStopped, once every result
        is filled in, when too many non-finite steps came in a row."""
        waiting = [r for r in results if r.pending is not None]
        if not waiting:
            return
        flat = [t for r in waiting for t in r.pending.tensors()]
        values = iter(torch.stack([t.detach().float().reshape(()) for t in flat]).tolist())
        stop: TrainingStopped | None = None
        for r in waiting:
            pending, r.pending = r.pending, None
            loss_sum, r.grad_norm, finite = next(values), next(values), bool(next(values))
            r.loss = loss_sum / pending.micro_batches
            max_abs = next(values) if pending.max_abs is not None else None
            r.parts = {name: next(values) for name in pending.parts} or None
            r.skipped = not finite
            r.clipped = self._clipped(finite, r.grad_norm, max_abs)
            if finite:
                self.nonfinite_streak = 0
                continue
            r.update_ratio = None  # nothing was updated (a synchronous step does not measure it either)
            try:
                self._count_nonfinite(r.loss, r.grad_norm)
            except TrainingStopped as exc:
                if stop is None:  # the first time the rule fired; later steps are still counted
                    stop, exc.result = exc, r  # type: ignore[attr-defined]  # which step: the loop's stop record
        if stop is not None:
            raise stop

    def _grad_sync(self, last: bool) -> contextlib.AbstractContextManager:
        return self.dist.grad_sync(self.model, last) if self.dist is not None else contextlib.nullcontext()

    def _clip(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clip in place; return the global norm before clipping (and, by value, the largest |element|)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            raise ValueError("no parameter received a gradient: does the objective use the model's output?")
        if self.grad_clip > 0 and self.clip_mode == "norm":
            return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True), None
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if self.grad_clip > 0:  # by value
            max_abs = torch.nn.utils.get_total_norm(grads, norm_type=float("inf"), foreach=True)
            torch.nn.utils.clip_grad_value_(self.params, self.grad_clip, foreach=True)
            return norm, max_abs
        return norm, None

    def state_dict(self) -> dict:
        return {"nonfinite_streak": self.nonfinite_streak, "nonfinite_total": self.nonfinite_total}

    def load_state_dict(self, state: dict) -> None:
        self.nonfinite_streak = int(state.get("nonfinite_streak", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))


class _PhaseClock:
    """Seconds per phase of a step, the device synchronized at each lap so GPU work lands in its phase."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, float] = {}
        synchronize(device)
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.times[phase] = self.times.get(phase, 0.0) + now - self._last
        self._last = now


def _item(t: torch.Tensor) -> float:
    """A scalar as a float; FSDP's norms are DTensors (replicated on every rank)."""
    return whole(t).item()


@torch.no_grad()
def _relative_update(before: list[torch.Tensor], after: list[torch.Tensor],
                     dist: Distributed | None = None) -> float:
    if dist is not None and dist.sharded:  # FSDP: each rank holds a shard; sum the squares over ranks
        sums = torch.zeros(2, dtype=torch.float64, device=dist.device)
        for a, b in zip(after, before, strict=True):
            a, b = a.to_local(), b.to_local()
            sums[0] += (a - b).double().square().sum()
            sums[1] += b.double().square().sum()
        delta_sq, weight_sq = dist.sum_tensor(sums).tolist()
        return delta_sq ** 0.5 / max(weight_sq ** 0.5, 1e-12)
    deltas = torch._foreach_sub([p.detach() for p in after], before)
    delta_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas)))
    weight_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
    return (delta_norm / weight_norm.clamp_min(1e-12)).item()
