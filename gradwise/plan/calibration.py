"""The planner's calibration: a few real optimization steps of the real model, optimizer and batch shape.

Why calibrate instead of dividing FLOPs by a peak: small models run far from any peak, their FLOP/s changes
with size, batch shape, optimizer and with whatever else the machine is doing, so the only honest number for
"how long here" is a few real steps, now. The step is the one training assembles (gradwise.training.build),
and the calibration is bounded in time: see :func:`calibrate`.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradwise.config.schema import Config
from gradwise.config.validate import objective_terms
from gradwise.core.checkpoint import save_checkpoint
from gradwise.core.runtime import autocast_context, backends_for_training, select_dtype, synchronize
from gradwise.models import build_model
from gradwise.models.cost import ModelSpec
from gradwise.objectives.losses import CausalLMObjective, ClassificationObjective
from gradwise.plan.hf_shape import meta_model
from gradwise.tasks.classify import classifier
from gradwise.training.build import assemble

WARMUP_STEPS = 2  # calibration steps not timed (allocator, kernel selection, lazy optimizer state)
MAX_TIMED_STEPS = 5
TARGET_SECONDS = 2.0  # stop timing once this much was measured (and MIN_TIMED_STEPS)
MIN_TIMED_STEPS = 3  # the median of 3 shrugs off one step slowed by another process
SLOW_STEP = 10.0  # seconds: one timed step is enough
CALIBRATION_SECONDS = 60.0  # a calibration aims to finish within this; slower full steps are timed small, scaled up
ASSUMED_DISK_BYTES_PER_S = 1e9  # checkpoint cost when the state is too large to time a real save
SCALE_SAMPLES = 4  # a step too slow to time in full is timed at 1 and up to this many samples, then scaled
SCALE_REPEATS = 3  # ...each the median of this many steps when it is quicker than QUICK_STEP
QUICK_STEP = 1.0  # seconds

Batches = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def calibrate(cfg: Config, spec: ModelSpec, device: torch.device, micro: int, accum: int,
              task: Any = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time real optimization steps of ``cfg``'s model, optimizer and objective at this batch shape.

    LM batches are random tokens (the cost does not depend on which tokens); a classifier reads its real
    training batches when the data was read (the LSTM's cost follows the real lengths), else random
    full-length texts, an upper bound. Also times an evaluation forward pass and the two checkpoint writes.

    Time is bounded: a first step of one sample predicts what timing the full steps would take, and when that
    is beyond CALIBRATION_SECONDS, steps of 1 and a few samples are timed and scaled linearly to the full batch
    (``extrapolated`` in the result says so). ``say`` hears each stage, for a progress display.
    """
    t = cfg.train
    autocast = select_dtype(t.dtype, device)
    cuda = [device] if device.type == "cuda" else []
    with backends_for_training(device, t.deterministic), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)  # the run's initialisation; the caller's random state is left as it was
        model, objective, batches = _model_and_batches(cfg, spec, device, micro, task)
        # the step training runs (compile, CUDA graphs, asynchronous steps included); timed, never stopped
        built = assemble(cfg, model, objective, device, max_nonfinite=1 << 30)
        model = built.model
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # A compiled step's first call is the compilation, and other batch shapes recompile: no probe there.
        probe = 0.0 if t.compile else _step_seconds(built.step, _first(batches, 1), 0, 1, device)  # cold: an upper bound
        guess = probe * micro * accum * (WARMUP_STEPS + MIN_TIMED_STEPS)
        extrapolated = None
        if guess <= CALIBRATION_SECONDS:
            samples = _timed_steps(built.step, batches, accum, device)
            forward = _time_forward(model, batches, device, autocast, spec)
        else:
            if say is not None:
                say(f"calibrating: a 1-sample step took {probe:.1f} s, so timing full steps ({micro} x {accum} "
                    f"samples) would take about {guess / 60:.0f} min; timing steps of "
                    + (f"1 and {min(micro, SCALE_SAMPLES)} samples" if micro > 1 else "1 sample") + " instead")
            samples, forward, extrapolated = _scaled_steps(built.step, model, batches, micro, accum, device,
                                                           autocast, spec, probe, say)
        save_last, save_best = _time_checkpoints(model, built.optimizer, built.scheduler)
    out = {"step_seconds": statistics.median(samples), "samples": [round(s, 5) for s in samples],
           "warmup_steps": WARMUP_STEPS, "micro_batch": micro, "grad_accum": accum,
           "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
           "forward_seconds": forward, "save_last_seconds": save_last, "save_best_seconds": save_best,
           "batches": "random tokens" if cfg.task == "lm" else "real training batches" if task is not None
           else "random full-length texts", "extrapolated": extrapolated}
    if device.type == "cuda":
        out["peak_memory_measured"] = torch.cuda.max_memory_allocated(device)
    return out


def _first(batches: Batches, k: int) -> Batches:
    """The same batches cut to their first ``k`` samples."""
    return lambda step, m: tuple(part[:k] for part in batches(step, m))  # type: ignore[return-value]


def _step_seconds(stepper: Any, batches: Batches, step: int, accum: int, device: torch.device) -> float:
    t0 = time.perf_counter()
    stepper([batches(step, m) for m in range(accum)])
    synchronize(device)
    return time.perf_counter() - t0


def _scaled_steps(stepper: Any, model: torch.nn.Module, batches: Batches, micro: int, accum: int,
                  device: torch.device, autocast: torch.dtype | None, spec: ModelSpec, probe: float,
                  say: Callable[[str], None] | None) -> tuple[list[float], float, dict[str, Any]]:
    """A full step from warm steps of 1 and k (up to SCALE_SAMPLES) samples: what a step costs once (the
    optimizer) plus a cost per sample, scaled to micro x accum samples; forward seconds likewise. Fast small
    steps are each the median of a few, so that noise on a shared machine does not become the slope. A
    1-sample step slower than SLOW_STEP is timed once, and scaled as all cost per sample (an upper bound)."""
    k = min(micro, SCALE_SAMPLES)
    one = _median_step(stepper, _first(batches, 1), 1, device) if probe <= SLOW_STEP else probe
    many = _median_step(stepper, _first(batches, k), 2, device) if k >= 2 and one <= SLOW_STEP else None
    per_sample = max((many - one) / (k - 1), 0.0) if many is not None else one
    fixed = max(one - per_sample, 0.0)  # noise can make the k-sample step look more than k times the 1-sample one
    total = micro * accum
    step = fixed + per_sample * total
    forward = _time_forward(model, _first(batches, 1), device, autocast, spec) * micro
    if say is not None:
        say(f"calibrating: 1 sample {one:.2f} s" + (f", {k} samples {many:.2f} s" if many is not None else "") +
            f" -> about {step:.1f} s per step of {total} samples (extrapolated)")
    return [step], forward, {"from_samples": [1, k] if many is not None else [1], "to_samples": total,
                             "step_seconds_measured": [round(one, 5)] + ([round(many, 5)] if many is not None else [])}


def _median_step(stepper: Any, batches: Batches, step: int, device: torch.device) -> float:
    """One step's seconds; the median of SCALE_REPEATS when the first is quick (they then cost little)."""
    times = [_step_seconds(stepper, batches, step, 1, device)]
    while len(times) < SCALE_REPEATS and times[0] < QUICK_STEP:
        times.append(_step_seconds(stepper, batches, step + len(times), 1, device))
    return statistics.median(times)


def _timed_steps(stepper: Any, batches: Batches, accum: int, device: torch.device) -> list[float]:
    """Seconds of the steps after WARMUP_STEPS: at least MIN_TIMED_STEPS and TARGET_SECONDS in all, at most
    MAX_TIMED_STEPS; a step slower than SLOW_STEP is timed once (a big model on a CPU: minutes prove no more)."""
    samples: list[float] = []
    for i in range(WARMUP_STEPS + MAX_TIMED_STEPS):
        seconds = _step_seconds(stepper, batches, i, accum, device)
        if i >= WARMUP_STEPS:
            samples.append(seconds)
            if sum(samples) >= TARGET_SECONDS and (len(samples) >= MIN_TIMED_STEPS or seconds > SLOW_STEP):
                break
    return samples


def _model_and_batches(cfg: Config, spec: ModelSpec, device: torch.device, micro: int,
                       task: Any) -> tuple[torch.nn.Module, Any, Batches]:
    """The model ``cfg`` builds, its objective, and a source of micro-batches (step, micro) -> (x, y)."""
    V, T = spec.vocab_size, spec.block_size
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.task == "lm":
        # a Hugging Face model: its own shape with random weights (a step's time does not depend on them);
        # fp8 layers, where asked, are swapped in by the assembly, as training does
        model = meta_model(cfg, device) if spec.hf is not None else build_model(cfg.model, V).to(device)

        def lm_batch(step: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.randint(0, V, (micro, T + 1), generator=gen)
            return x[:, :-1].to(device), x[:, 1:].to(device)

        return model, CausalLMObjective(cfg.objective.label_smoothing, cfg.objective.z_loss,
                                 fused=cfg.train.fused_ce), lm_batch
    pad = task.pad_id if task is not None else V - 1
    model = classifier(cfg, V, spec.n_classes, pad).to(device)
    objective = task.objective() if task is not None else ClassificationObjective(
        objective_terms(cfg), None, cfg.objective.label_smoothing, pad)

    def cls_batch(step: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        if task is not None:
            x, y = task.splits["train"].batch(cfg.seed, step, m, micro, pad)
            return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        x = torch.randint(0, V - 1, (micro, T), generator=gen)
        if cfg.data.multi_label:
            y = torch.randint(0, 2, (micro, spec.n_classes), generator=gen).float()
        else:
            y = torch.randint(0, spec.n_classes, (micro,), generator=gen)
        return x.to(device), y.to(device)

    return model, objective, cls_batch


@torch.no_grad()
def _time_forward(model: torch.nn.Module, batches: Batches, device: torch.device,
                  autocast: torch.dtype | None, spec: ModelSpec) -> float:
    """Seconds of one evaluation batch (no gradient, eval mode), as evaluate() and predict() run it."""
    model.eval()
    times = []
    for i in range(3):
        x, y = batches(10_000 + i, 0)
        t0 = time.perf_counter()
        with autocast_context(device, autocast):
            out = CausalLMObjective.summed(model, x, y) if spec.task == "lm" else model(x).float().softmax(-1)
        out.cpu()
        if i:
            times.append(time.perf_counter() - t0)
    model.train()
    return statistics.median(times)


def _time_checkpoints(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: Any) -> tuple[float, float]:
    """Seconds to write the last checkpoint (weights + optimizer) and the best (weights), into a temp dir."""
    frozen_left_out = getattr(model, "frozen_base", None) is not None  # LoRA: a checkpoint holds the adapters
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not frozen_left_out)
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v))
    if weights + state > 2 << 30:  # do not write gigabytes to time a write
        return (weights + state) / ASSUMED_DISK_BYTES_PER_S, weights / ASSUMED_DISK_BYTES_PER_S
    with tempfile.TemporaryDirectory(prefix="gradwise-plan-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "last", model, {"step": 0, "kind": "last", "loop": {}}, optimizer=optimizer,
                        scheduler=scheduler)
        t1 = time.perf_counter()
        save_checkpoint(Path(tmp) / "best", model, {"step": 0, "kind": "best"})
        return t1 - t0, time.perf_counter() - t1
