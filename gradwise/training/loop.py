"""The multi-step loop: repeat the step, evaluate, keep the best and last checkpoints, stop on a rule.

Stops on ``max_steps``, a wall-clock budget, early stopping (validation loss not better by
``min_delta`` for ``patience`` evaluations) or a signal (Ctrl-C / SIGTERM: the current step finishes,
a checkpoint is written, and the run can be resumed). Everything the loop needs to continue exactly
lives in :class:`LoopState` and goes into every checkpoint.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gradwise.config.schema import Config
from gradwise.config.validate import parse_duration
from gradwise.core.errors import TrainingStopped
from gradwise.core.progress import TrainingProgress
from gradwise.core.rundir import MetricsWriter, RunDir
from gradwise.core.runtime import micro_batch_seed
from gradwise.tasks.lm_eval import auto_eval_batches
from gradwise.training.averaging import WeightAverage
from gradwise.training.build import Assembled
from gradwise.training.context import RunContext
from gradwise.training.meter import FlopsMeter
from gradwise.training.step import OptimizationStep, StepResult

if TYPE_CHECKING:
    from gradwise.tasks.base import EvalReport, Task


@dataclass
class LogWindow:
    """Sums over the steps since the last log line (saved in checkpoints: resume logs the same numbers)."""

    steps: int = 0
    loss_sum: float = 0.0
    grad_norm_sum: float = 0.0
    tokens: int = 0
    seconds: float = 0.0
    skipped: int = 0
    loss_max: float = 0.0  # the worst single step: a spike the window's mean would hide
    grad_norm_max: float = 0.0
    part_sums: dict[str, float] = field(default_factory=dict)  # objective terms and penalties

    def add(self, r: StepResult, seconds: float) -> None:
        """Count a step; ``seconds`` is the whole iteration (batch sampling and transfer included)."""
        self.steps += 1
        self.tokens += r.tokens
        self.seconds += seconds
        if r.skipped:
            self.skipped += 1
        else:
            self.loss_sum += r.loss
            self.grad_norm_sum += r.grad_norm
            self.loss_max = max(self.loss_max, r.loss)
            self.grad_norm_max = max(self.grad_norm_max, r.grad_norm)
            for name, value in (r.parts or {}).items():
                self.part_sums[name] = self.part_sums.get(name, 0.0) + value


@dataclass
class LoopState:
    step: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0  # wall time of the loop (steps, evaluation, checkpoints)
    step_seconds: float = 0.0  # time inside optimization steps only
    eval_seconds: float = 0.0  # time spent evaluating on validation
    best_val_loss: float | None = None  # the validation loss of the best checkpoint
    best_score: float | None = None  # what chose it, lower is better: that loss, or 1 - train.best_on's metric
    best_step: int | None = None
    evals_since_best: int = 0
    last_eval_step: int | None = None
    last_val_loss: float | None = None
    eval_windows: int | None = None  # train.eval_batches auto: the validation windows chosen (None: not yet)
    window: LogWindow = field(default_factory=LogWindow)
    stepper: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        data = dict(data)
        data["window"] = LogWindow(**data.get("window", {}))
        data.setdefault("best_score", data.get("best_val_loss"))  # saved before train.best_on: chosen on loss
        return cls(**data)


def selection_score(best_on: str, loss: float, scalars: dict[str, float]) -> float:
    """What an evaluation is ranked by, lower is better: the val loss, or 1 - ``train.best_on``'s metric. The best
    checkpoint, early stopping and ``tune``'s objective all go by it."""
    return loss if best_on == "loss" else 1.0 - float(scalars[best_on])


PROMPT_SECONDS = 1.0  # Ctrl-C stops the run within this
GRACE_SECONDS = 0.5  # ...by abandoning work still running this long after it (the rest is for the summary)


class StopSignal:
    """Ctrl-C / SIGTERM as a stop request that is answered within PROMPT_SECONDS.

    The loop finishes the work in hand (the step, an evaluation), saves and stops, so the run resumes from
    where it stopped. But a Ctrl-C starts a clock: whatever is still running GRACE_SECONDS later (a slow
    step, a long evaluation, a large checkpoint) is abandoned at once, nothing after it is saved, and the last
    checkpoint, written atomically, is what resumes. A second Ctrl-C abandons at once. SIGTERM finishes and
    saves without a clock (a scheduler's grace period is for that); so does a Ctrl-C across ranks (torchrun),
    whose ranks must stop together."""

    def __init__(self, prompt: bool = True) -> None:
        self.requested = False
        self.abandoned = False  # work was cut short: the state in memory may be mid-update, never saved
        self.prompt = prompt and hasattr(signal, "setitimer")
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM) + ((signal.SIGALRM,) if self.prompt else ()):
                self._previous[sig] = signal.signal(sig, self._handle)
        else:
            self.prompt = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGALRM or (signum == signal.SIGINT and self.requested):
            self.abandoned = True
            raise KeyboardInterrupt
        self.requested = True
        if signum == signal.SIGINT and self.prompt:
            signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)

    def disarm(self) -> None:
        if self.prompt:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc: Any) -> None:
        self.disarm()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainLoop:
    def __init__(self, cfg: Config, ctx: RunContext, task: Task, run: RunDir, built: Assembled, state: LoopState,
                 metrics: MetricsWriter, progress: TrainingProgress,
                 on_eval: Callable[[int, float], bool] | None = None, flops: FlopsMeter | None = None,
                 average: WeightAverage | None = None):
        self.cfg = cfg
        self.average = average  # train.ema: updated after each step; what validation and the best checkpoint see
        self.flops = flops  # model TFLOP/s and MFU on the log lines
        # Called after each evaluation with (step, its selection_score); True stops the run ("pruned").
        self.on_eval = on_eval
        self._last_score = math.nan
        self.model: nn.Module = built.evaluated  # possibly compiled
        self.raw_model: nn.Module = built.model  # what checkpoints save
        self.stepper: OptimizationStep = built.step
        self.clock = built.clock  # schedule.horizon time: told the share of train.max_time spent before each step
        self.task = task
        self.run_dir = run
        self.device, self.autocast_dtype = ctx.device, ctx.autocast_dtype
        self.state = state
        self.metrics = metrics
        self.progress = progress
        self.max_time = parse_duration(cfg.train.max_time)
        t = cfg.train
        self.checkpoint_every = t.checkpoint_every or t.eval_every
        # Ranks under torchrun: this rank's micro-batches, agreed decisions, rank 0 writes (one process: no-ops)
        self.dist = ctx.dist
        # steps run, not yet in the log window: (result, start time, the step's index)
        self._unsettled: list[tuple[StepResult, float, int]] = []

    # ------------------------------------------------------------ batches
    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for micro in self.dist.micro_indices(self.cfg.train.grad_accum):  # one process: all of them
            x, y = self.task.micro_batch(step, micro)
            out.append((self._to_device(x), self._to_device(y)))
        return out

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    # ------------------------------------------------------------ evaluation
    def evaluate_val(self) -> EvalReport:
        """The fixed validation set (LM: the same windows every time; classification: every record).

        With ranks every rank evaluates it (FSDP needs all of them in each forward) and rank 0's report is
        taken by all, so the best checkpoint and early stopping are decided alike everywhere."""
        st, t = self.state, self.cfg.train
        auto = t.eval_batches == "auto" and self.cfg.task == "lm"
        res = self.task.evaluate(self.model, "val", self.device, self.autocast_dtype, fixed_subset=True,
                                 windows=st.eval_windows if auto else None).shared(self.dist)
        if auto and st.eval_windows is None and st.step > 0:
            # the first trained evaluation: the count whose error meets eval_target_se, kept from now on
            details = res.details or {}
            pilot = max(1, math.ceil(int(details.get("windows") or 0) / t.batch_size))
            every = max(1, math.ceil(int(details.get("windows_all") or 0) / t.batch_size))
            chosen = auto_eval_batches(res.scalars.get("loss_se", math.nan), pilot, t.eval_target_se, every)
            st.eval_windows = min(chosen * t.batch_size, int(details.get("windows_all") or 0))  # a partial last batch
            if chosen != pilot:
                res = self.task.evaluate(self.model, "val", self.device, self.autocast_dtype, fixed_subset=True,
                                         windows=st.eval_windows).shared(self.dist)
            self.progress.message(f"eval     {chosen:,} of the {every:,} validation batches from now on (train."
                                  f"eval_batches auto: a standard error of about {t.eval_target_se:g} nats against the whole "
                                  "split's loss)")
        return res

    def _eval_and_track(self) -> bool:
        """Evaluate, update the best checkpoint; True when early stopping says stop."""
        st, t = self.state, self.cfg.train
        t0 = time.perf_counter()
        with self.average.swapped_into(self.raw_model) if self.average is not None else nullcontext():
            res = self.evaluate_val()
            took = time.perf_counter() - t0
            improved = self._track(res)
        st.eval_seconds += took
        if not improved:
            st.evals_since_best += 1
        self.metrics.write({"kind": "eval", "step": st.step, "val_loss": res.loss,
                            **{f"val_{k}": v for k, v in res.scalars.items()}, "best_val_loss": st.best_val_loss,
                            "tokens": st.tokens_seen, "elapsed_s": round(st.train_seconds, 3),
                            "eval_s": round(took, 3),  # evaluation time, apart from training's elapsed_s
                            **({"eval_windows": res.details["windows"]} if (res.details or {}).get("windows") else {})})
        best = "n/a" if st.best_score is None else (f"{st.best_score:.4f}" if t.best_on == "loss"
                                                     else f"{t.best_on.replace('_', ' ')} {1 - st.best_score:.4f}")
        shown = "".join(f" | {k.replace('_', ' ')} {v:.4f}" for k, v in res.scalars.items()
                        if k not in ("perplexity", "loss_se"))
        se = res.scalars.get("loss_se")
        pm = f" ± {se:.4f}" if se is not None and math.isfinite(se) else ""
        self.progress.message(f"step {st.step:>6} | val loss {res.loss:.4f}{pm}{shown} | best {best} @ {st.best_step}")
        return t.patience is not None and st.evals_since_best >= t.patience

    def _track(self, res: EvalReport) -> bool:
        """Record an evaluation; when it is the best so far, save the weights it evaluated as the best checkpoint."""
        st, t = self.state, self.cfg.train
        st.last_eval_step, st.last_val_loss = st.step, res.loss
        score = self._last_score = selection_score(t.best_on, res.loss, res.scalars)
        improved = math.isfinite(res.loss) and math.isfinite(score) and (
            st.best_score is None or score < st.best_score - t.min_delta
            or (score == st.best_score and st.best_val_loss is not None and res.loss < st.best_val_loss))
        if improved:
            st.best_val_loss, st.best_score, st.best_step, st.evals_since_best = res.loss, score, st.step, 0
            self.dist.save_checkpoint(self.run_dir.best, self.raw_model,
                                      {"step": st.step, "val_loss": res.loss, "kind": "best"})
        return improved

    def save_last(self) -> None:
        self._settle()  # the log window and the non-finite count go into the checkpoint
        st = self.state
        st.stepper = self.stepper.state_dict()
        self.dist.save_checkpoint(self.run_dir.last, self.raw_model,  # rank 0 writes (FSDP: all gather first)
                                  {"step": st.step, "kind": "last", "loop": st.to_json()},
                                  optimizer=self.stepper.optimizer, scheduler=self.stepper.scheduler,
                                  extra_tensors=self.average.state_tensors() if self.average is not None else None)
        self._saved_step = st.step

    # ------------------------------------------------------------ logging
    def _settle(self) -> None:
        """Count the steps not yet in the log window, reading asynchronous ones from the device first (one sync).
        Each step's seconds run from its start to the next one's, the last to now: the sync's wait is counted."""
        if not self._unsettled:
            return
        waiting, self._unsettled = self._unsettled, []
        t_sync = time.perf_counter()
        try:
            self.stepper.settle([r for r, _, _ in waiting])
        except TrainingStopped as exc:  # the stop record names the step that ended the streak, as a synchronous
            failed = getattr(exc, "result", None)  # run's does, not the later step where it was read
            exc.step = next((step for r, _, step in waiting if r is failed), self.state.step)  # type: ignore[attr-defined]
            raise
        finally:
            now = time.perf_counter()
            self.state.step_seconds += now - t_sync
            ends = [start for _, start, _ in waiting[1:]] + [now]
            for (result, start, _), end in zip(waiting, ends, strict=True):
                self.state.window.add(result, end - start)

    def _log(self) -> None:
        self._settle()
        st, w = self.state, self.state.window
        if w.steps == 0:
            return
        good = w.steps - w.skipped
        loss = w.loss_sum / good if good else float("nan")
        tok_s = w.tokens / w.seconds if w.seconds > 0 else float("nan")
        record = {"kind": "train", "step": st.step, "train_loss": loss,
                  "grad_norm": w.grad_norm_sum / good if good else float("nan"), "lr": self._last_lr,
                  "train_loss_max": w.loss_max if good else float("nan"),
                  "grad_norm_max": w.grad_norm_max if good else float("nan"),
                  "tokens": st.tokens_seen, "elapsed_s": round(st.train_seconds, 3), "tokens_per_s": round(tok_s, 1)}
        for name, total in w.part_sums.items():  # e.g. train_lm, train_z_loss, train_reg_l2
            record[f"train_{name}"] = total / good if good else float("nan")
        if w.skipped:
            record["skipped_steps"] = w.skipped
        if self._last_update_ratio is not None:
            record["update_ratio"] = self._last_update_ratio
        shown = f"{tok_s / 1000:.1f}k tok/s"
        if self.flops is not None and math.isfinite(tok_s):
            record.update(self.flops.fields(tok_s))
            if "mfu" in record:
                shown += f" | MFU {record['mfu']:.1%}"
        self.metrics.write(record)
        self.progress.update(st.step, f"loss {loss:.4f} | lr {self._last_lr:.2e} | {shown}")
        st.window = LogWindow()

    def record_stop(self, reason: str, step: int | None = None) -> None:
        """Log the steps since the last line and why training could not go on (diagnosis reads it); ``step``
        is where it stopped going on when that was before the current step (asynchronous steps)."""
        self._log()
        self.metrics.write({"kind": "stop", "step": self.state.step if step is None else step, "reason": reason,
                            "elapsed_s": round(self.state.train_seconds, 3)})

    # ------------------------------------------------------------ the loop
    def run(self) -> str:
        prefetch = BatchPrefetcher(self.micro_batches, self.cfg.train.max_steps)
        try:
            return self._run(prefetch)
        finally:
            prefetch.close()

    def _run(self, prefetch: BatchPrefetcher) -> str:
        st = self.state
        self._last_lr = self.stepper.optimizer.param_groups[0]["lr"]
        self._last_update_ratio: float | None = None
        self._saved_step: int | None = st.step if st.step > 0 else None  # a resumed run starts from its checkpoint
        session_start = time.perf_counter()
        base_seconds = st.train_seconds

        def tick() -> None:
            st.train_seconds = base_seconds + time.perf_counter() - session_start

        with StopSignal(prompt=not self.dist.enabled) as stop:
            try:
                stopped_because = self._steps(prefetch, stop, tick)
                self._wind_up(stopped_because)
            except KeyboardInterrupt:
                if not stop.abandoned:
                    raise
                stopped_because = "interrupted"  # work cut short: the state in memory is not saved
                self.progress.message(f"stopped  at once (Ctrl-C); the last checkpoint is step {self._saved_step}"
                                      if self._saved_step is not None else "stopped  at once (Ctrl-C), before any "
                                      "checkpoint was written")
            finally:
                stop.disarm()  # the run is wound up: nothing left for the clock to cut short
            tick()
        return stopped_because

    def _wind_up(self, stopped_because: str) -> None:
        """The end of a run that stopped on a rule: the last log window and evaluation, and the last save."""
        st = self.state
        if stopped_because not in ("interrupted", "pruned"):  # resumable mid-window: keep its sums
            self._log()
            if st.last_eval_step != st.step:
                self._eval_and_track()
        if self._saved_step != st.step and stopped_because != "pruned":  # nobody resumes a pruned trial
            self.save_last()

    def _steps(self, prefetch: BatchPrefetcher, stop: StopSignal, tick: Callable[[], None]) -> str:
        """Steps, evaluations and checkpoints until a stop rule fires; returns why it stopped."""
        st, t = self.state, self.cfg.train
        if st.step == 0 and st.last_eval_step is None:
            self._eval_and_track()  # the untrained baseline: the curve starts at step 0
        while st.step < t.max_steps:
            tick()
            # Ranks act on one reading, in one collective a step: a signal to any rank stops all, and the
            # slowest rank's clock is everyone's, for the time budget and a clock schedule's position alike.
            interrupted, seconds = self.dist.largest(float(stop.requested), st.train_seconds)
            if interrupted:
                return "interrupted"
            if self.max_time is not None and seconds >= self.max_time:
                return "time_budget"
            if self.clock is not None and self.max_time:
                self.clock.share = seconds / self.max_time
            measure = (st.step + 1) % t.log_every == 0
            t_iter = time.perf_counter()
            seeds = [micro_batch_seed(self.cfg.seed, st.step, m)
                     for m in self.dist.micro_indices(t.grad_accum)]  # dropout: the same masks on any ranks
            result = self.stepper(prefetch.get(st.step), measure_update=measure, seeds=seeds)
            if self.average is not None:
                self.average.update(self.raw_model)
            st.step += 1
            st.tokens_seen += result.tokens
            st.step_seconds += result.seconds
            self._last_lr = result.lr
            self.progress.advance(st.step)
            if measure:
                self._last_update_ratio = result.update_ratio
            self._unsettled.append((result, t_iter, st.step - 1))
            log_now = st.step % t.log_every == 0 or st.step == t.max_steps
            eval_now = st.step % t.eval_every == 0 or st.step == t.max_steps
            save_now = st.step % self.checkpoint_every == 0
            # An asynchronous step's numbers are read where something needs them: a log line, an evaluation
            # or a checkpoint (or the end), before the clock ticks, so the wait for the device is counted.
            # Until then the host queues the next step without waiting.
            if result.pending is None or log_now or eval_now or save_now:
                self._settle()
            tick()
            if log_now:
                self._log()
            early_stop = False
            if eval_now:
                early_stop = self._eval_and_track()
                if self.on_eval is not None and bool(self.on_eval(st.step, self._last_score)):
                    return "pruned"
                tick()
            if save_now or early_stop:
                self.save_last()
            if early_stop:
                return "early_stopping"
        return "max_steps"


class BatchPrefetcher:
    """The next step's micro-batches read and sent to the device by a background thread while this step runs.

    A batch is a pure function of (seed, step, micro-batch), so reading it early changes nothing but the wait:
    the device is not left idle while the host gathers, pins and copies the next batch. A step asked for out of
    order (the first one, a resumed one) is made on the spot."""

    def __init__(self, make: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]], max_steps: int):
        self.make, self.max_steps = make, max_steps
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="gradwise-batches")
        self.pending: tuple[int, Future] | None = None

    def get(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pending, self.pending = self.pending, None
        batches = pending[1].result() if pending is not None and pending[0] == step else self.make(step)
        if step + 1 < self.max_steps:
            self.pending = (step + 1, self.pool.submit(self.make, step + 1))
        return batches

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
