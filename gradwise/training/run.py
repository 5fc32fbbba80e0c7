"""A whole training run: data → model → steps with validation → best checkpoint → one test evaluation →
summary and diagnosis. ``gradwise train`` and ``gradwise.train`` call :func:`train`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradwise.config.load import (
    save_config,
)
from gradwise.config.schema import Config
from gradwise.core.checkpoint import read_trainer_tensors
from gradwise.core.errors import ConfigError, GradwiseError, TrainingStopped
from gradwise.core.plots import plot_losses
from gradwise.core.progress import TrainingProgress, format_seconds
from gradwise.core.rundir import (
    MetricsWriter,
    RunDir,
    check_dir_path,
    default_run_name,
    read_metrics,
    write_json,
)
from gradwise.core.runtime import (
    backends_for_training,
    seed_everything,
    select_device,
    unverified_on_gpu,
)
from gradwise.data.quality.check import data_warnings
from gradwise.data.store import default_cache_dir
from gradwise.data.tokenizers import fingerprint
from gradwise.models.cost import hf_flops_per_token, model_flops_per_token
from gradwise.tasks import Task, prepare_task
from gradwise.tasks.classify_baseline import baseline_line, footer_line
from gradwise.tasks.classify_metrics import format_report
from gradwise.tasks.init_from import load_init_weights
from gradwise.training.averaging import WeightAverage
from gradwise.training.build import Assembled, assemble
from gradwise.training.context import RunContext
from gradwise.training.diagnose import diagnose, format_verdicts
from gradwise.training.distributed import NoMetrics, joined
from gradwise.training.fp8 import fp8_layers
from gradwise.training.loop import LoopState, TrainLoop
from gradwise.training.memory import check_loaded_memory, check_memory
from gradwise.training.meter import FlopsMeter, device_peak
from gradwise.training.run_config import resolve_train_config

__all__ = ["RunResult", "train"]


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]

    @property
    def best_checkpoint(self) -> Path:
        return RunDir(self.run_dir).best

    @property
    def last_checkpoint(self) -> Path:
        return RunDir(self.run_dir).last


# ---------------------------------------------------------------- config resolution

# ---------------------------------------------------------------- train

def train(config: Config | str | Path | None = None, *, overrides: list[str] | None = None,
          resume: str | Path | None = None, live_progress: bool | None = None, quiet: bool = False,
          on_eval: Callable[[int, float], bool] | None = None) -> RunResult:
    """Train a model end to end: data → model → steps with validation → best checkpoint → one test evaluation.

    ``config`` is a Config, a YAML/TOML path or a preset name (default preset when None);
    ``overrides`` are dotted ``key=value`` strings; ``resume`` is a run directory to continue exactly.
    ``on_eval(step, score)`` is called after each evaluation with the score the best checkpoint is chosen on
    (gradwise.training.loop.selection_score); returning True stops the run ("pruned"), which is how a
    hyperparameter search stops a hopeless trial.
    """
    cfg, resumed, stem = resolve_train_config(config, overrides, resume)
    t = cfg.train
    # Under torchrun (WORLD_SIZE > 1) join the process group (gradwise.training.distributed); one process: a no-op.
    with joined(select_device(t.device), t.parallel) as dist:
        dist.check(cfg)
        if resumed is not None:
            run = resumed
        else:  # ranks take rank 0's timestamped name
            run = RunDir(check_dir_path(Path(cfg.out_dir) / (cfg.name or dist.broadcast_json(default_run_name(stem))),
                                        "the run directory (out_dir/name)"))
            if run.path.exists() and any(run.path.iterdir()):
                raise GradwiseError(f"run directory {run.path} already exists; continue it with --resume {run.path} "
                                    "or choose another name with --set name=NEW")
        with backends_for_training(dist.device, t.deterministic):
            return _run(cfg, RunContext.of(cfg, dist), run, resumed is not None, live_progress, quiet, on_eval)


def _run(cfg: Config, ctx: RunContext, run: RunDir, resumed: bool, live_progress: bool | None, quiet: bool,
         on_eval: Callable[[int, float], bool] | None = None) -> RunResult:
    t, dist = cfg.train, ctx.dist
    seed_everything(cfg.seed)
    # Ranks: rank 0 tokenizes (and fills the cache) first, the others then read it; all must agree.
    task = dist.in_turn(lambda: prepare_task(cfg, run.path if resumed else None))
    dist.check_same(fingerprint(task.tokenizer) + json.dumps(task.split_sizes()), "tokenizer and data split")
    task.check(("train", "val") + (("test",) if t.test_eval else ()))
    data_report = task.data_check() if cfg.data.check and not resumed and dist.is_main else None
    baseline = task.baseline() if cfg.data.baseline and dist.is_main else None  # the bar to beat (classify)

    n_classes = len(task.classes) if cfg.task == "classify" else 0
    check_memory(cfg, task.tokenizer.vocab_size, n_classes, ctx.device, ctx.autocast_dtype)  # before allocating
    model = task.build_model()
    if cfg.model.arch == "hf":  # its shape is read from the loaded weights
        check_loaded_memory(cfg, model, ctx.device)
    if cfg.model.init_from and not resumed:
        load_init_weights(cfg, model)
    built = assemble(cfg, model, task.objective(), ctx.device, dist)
    model = built.model
    state = LoopState()
    if resumed:
        saved = dist.load_checkpoint(run.last, model, built.optimizer, built.scheduler)
        state = LoopState.from_json(saved["loop"])
        built.step.load_state_dict(state.stepper)
        if state.step >= t.max_steps:
            raise ConfigError(f"run {run.path} already reached train.max_steps ({t.max_steps}); to train further "
                              f"raise it, e.g. --set train.max_steps={t.max_steps * 2}")
    # train.ema: made from the weights training continues from; a resumed run takes its saved average back
    average = WeightAverage(model, t.ema) if t.ema else None
    if average is not None and resumed:
        average.load_state_tensors(read_trainer_tensors(run.last))

    if dist.is_main:  # rank 0 writes the run directory
        run.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config)
        if not resumed:
            task.save(run.path)
        if data_report is not None:
            write_json(run.path / "data_check.json", data_report)

    progress = TrainingProgress(t.max_steps, state.step, live=live_progress, quiet=quiet or not dist.is_main)
    _print_header(progress, cfg, ctx, run, task, model, state)
    if dist.enabled:
        progress.message(f"parallel {dist.describe()} | each rank {t.grad_accum // dist.world_size} of "
                         f"{t.grad_accum} micro-batches per step")
    for line in data_warnings(data_report):
        progress.message(f"data     warning: {line}")
    if baseline is not None:
        progress.message(f"baseline {baseline_line(baseline)}")
    mirror = None
    if t.tensorboard and dist.is_main:
        from gradwise.core.tensorboard import TensorBoardMirror

        mirror = TensorBoardMirror(run.path / "tensorboard")
    metrics = (MetricsWriter(run.metrics, resume_step=state.step if resumed else None, mirror=mirror)
               if dist.is_main else NoMetrics())  # ranks: rank 0 alone writes metrics
    try:
        loop = TrainLoop(cfg, ctx, task, run, built, state, metrics, progress, on_eval=on_eval,
                         flops=_flops_meter(cfg, ctx, task, model), average=average)
        stopped: TrainingStopped | None = None
        try:
            stopped_because = loop.run()
        except TrainingStopped as exc:  # diverged: keep what happened, test the best checkpoint, then say so
            stopped, stopped_because = exc, "diverged"
            loop.record_stop(str(exc), getattr(exc, "step", None))
        finally:
            progress.close()
        summary = _finish(cfg, ctx, run, task, built, state, stopped_because, metrics, baseline)
    finally:
        metrics.close()
    _print_footer(progress, run, summary)
    if stopped is not None:
        raise stopped
    return RunResult(run.path, summary)


def _flops_meter(cfg: Config, ctx: RunContext, task: Task, model: torch.nn.Module) -> FlopsMeter:
    """Model FLOP/s on every log line; MFU where the device's peak is known (CUDA). Logged tokens/s are summed
    over ranks, so the peak is too (one device's peak x ranks)."""
    peak = device_peak(ctx.device, default_cache_dir(cfg.data.cache_dir), cfg.train.peak_tflops)
    if cfg.model.arch == "hf":
        per_token = hf_flops_per_token(model, cfg.model.block_size)
    else:
        classes = len(task.classes) if cfg.task == "classify" else 0
        per_token = model_flops_per_token(cfg, task.tokenizer.vocab_size, classes)
    return FlopsMeter(per_token, peak * ctx.dist.world_size if peak else None)


def _finish(cfg: Config, ctx: RunContext, run: RunDir, task: Task, built: Assembled, state: LoopState,
            stopped_because: str, metrics: MetricsWriter | NoMetrics, baseline: dict[str, Any] | None) -> dict[str, Any]:
    t, dist, model = cfg.train, ctx.dist, built.model
    test = None
    if t.test_eval and stopped_because != "interrupted" and state.best_step is not None:
        dist.load_weights(run.best, model)  # the honest number: the checkpoint chosen on validation, tested once
        test = task.evaluate(model, "test", ctx.device, ctx.autocast_dtype, fixed_subset=False).shared(dist)
        metrics.write({"kind": "test", "step": state.best_step, "test_loss": test.loss,
                       **{f"test_{k}": v for k, v in test.scalars.items()}})
    train_only = state.train_seconds - state.eval_seconds
    summary: dict[str, Any] = {
        "run": str(run.path), "task": cfg.task, "best_val_loss": state.best_val_loss, "best_step": state.best_step,
        "best_on": t.best_on, "best_score": state.best_score,  # what chose the best checkpoint (selection_score)
        "last_val_loss": state.last_val_loss, "test_loss": test.loss if test else None,
        **{f"test_{k}": (test.scalars.get(k) if test else None) for k in _TEST_KEYS[cfg.task]},
        "steps": state.step, "tokens_seen": state.tokens_seen, "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3), "step_seconds": round(state.step_seconds, 3),
        # Training throughput over the loop's wall time minus validation: sampling, transfers, logging
        # and checkpoints count against it, so it is what a user actually gets.
        "tokens_per_second": round(state.tokens_seen / train_only, 1) if train_only > 0 else None,
        "stopped_because": stopped_because, "nonfinite_steps": built.step.nonfinite_total,
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "vocab_size": task.tokenizer.vocab_size,
        "split_sizes": task.split_sizes(),
    }
    if task.dedupe is not None:
        summary["dedupe"] = task.dedupe
    if state.eval_windows is not None:
        summary["eval_windows"] = state.eval_windows  # train.eval_batches auto: what it chose
    if test is not None and cfg.task == "classify":
        summary["test_report"] = test.details
    if dist.is_main:  # rank 0 writes the summary and the plot
        records = read_metrics(run.metrics)
        at_best = [r for r in records if r.get("kind") == "eval" and r.get("step") == state.best_step]
        summary["best_val_metrics"] = ({k.removeprefix("val_"): v for k, v in at_best[-1].items()
                                        if k.startswith("val_")} if at_best else None)
        if baseline is not None:  # its test score is shown only beside a tested model's
            summary["baseline"] = {k: v for k, v in baseline.items() if k != "test" or test is not None}
        check_file = run.path / "data_check.json"
        if check_file.is_file():
            summary["data_warnings"] = data_warnings(json.loads(check_file.read_text()))
        if stopped_because not in ("interrupted", "pruned"):  # how it fits, read off its own curves
            summary["diagnosis"] = diagnose(records, summary, cfg.to_dict()).to_json()["verdicts"]
        write_json(run.summary, summary)
        if stopped_because != "interrupted":  # a Ctrl-C is answered at once; the resumed run draws the plot
            plot_losses(records, run.plot, title=run.path.name)
    return summary


# The test metrics every summary.json carries for its task (null when the run was not tested).
_TEST_KEYS = {"lm": ("perplexity", "bits_per_byte", "loss_se"), "classify": ("accuracy", "macro_f1")}


def _print_header(progress: TrainingProgress, cfg: Config, ctx: RunContext, run: RunDir, task: Task,
                  model: torch.nn.Module, state: LoopState) -> None:
    t, m, device = cfg.train, cfg.model, ctx.device
    precision = "bf16 autocast" if ctx.autocast_dtype == torch.bfloat16 else "fp32"
    params = sum(p.numel() for p in model.parameters())
    shape = (f"GPT {m.n_layer} layers, {m.n_head} heads, width {m.n_embd}, context {m.block_size}" if m.arch == "gpt"
             else f"n-gram bag, vectors of {m.n_embd}, at most {m.block_size} n-grams per text" if m.arch == "ngram"
             else f"LSTM {m.n_layer} layer(s), hidden {m.hidden or m.n_embd}"
             f"{', bidirectional' if m.bidirectional else ''}, texts cut to {m.block_size} tokens")
    progress.message(f"run      {run.path}" + (f"  (resuming at step {state.step})" if state.step else ""))
    progress.message(f"data     {task.describe()}")
    if m.arch == "gpt" and cfg.task == "classify":
        shape += f", reading the {m.pool} token" if m.pool == "last" else ", mean over tokens"
    if m.init_from:
        shape += f", from {m.init_from}"
    if m.arch == "hf":  # a Hugging Face model: its class, and how much of it trains
        shape = f"{type(model.base_model()).__name__} from hf:{m.hf_path}, context {m.block_size}"
        if m.lora is not None:
            shape += f", LoRA r={m.lora.r} alpha={m.lora.alpha:g} on {'+'.join(m.lora.targets or [])}"
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        shape += f" | {trainable:,} trainable of" if trainable != params else ""
    progress.message(f"model    {shape} | {params:,} parameters")
    per_step = f"{t.batch_size * t.grad_accum * m.block_size:,} tokens" if cfg.task == "lm" else \
        f"{t.batch_size * t.grad_accum:,} records"
    if t.fp8:
        emulated = (" (emulated on the CPU: slow, for checks)" if device.type == "cpu" else
                    "" if t.compile else " (without train.compile its casts are not fused: expect little speed-up)")
        precision += f", fp8 matmuls in {sum(1 for _ in fp8_layers(model))} linear layers{emulated}"
    progress.message(f"train    {t.max_steps:,} steps x {per_step} | {cfg.optim.name} lr {cfg.optim.lr:g} "
                     f"{cfg.schedule.name} | {device.type} {precision}")
    unverified = unverified_on_gpu(t, device)
    if unverified:
        progress.message(f"note     not yet verified on a GPU: {', '.join(unverified)} (gradwise's CUDA paths have "
                         "not run on real hardware; check losses against a run without them)")


def _print_footer(progress: TrainingProgress, run: RunDir, s: dict[str, Any]) -> None:
    def fmt(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"

    progress.message(f"stopped  {s['stopped_because']} after {s['steps']:,} steps, "
                     f"{format_seconds(s['train_seconds'])}, {s['tokens_per_second'] or 0:,.0f} tokens/s")
    tested = ", ".join(f"{k.removeprefix('test_').replace('_', ' ')} {fmt(s[k])}" for k in s
                       if k.startswith("test_") and k not in ("test_loss", "test_report", "test_perplexity",
                                                              "test_loss_se"))
    se = s.get("test_loss_se")
    pm = f" ± {se:.4f}" if se is not None and math.isfinite(se) else ""
    progress.message(f"best     val loss {fmt(s['best_val_loss'])} at step {s['best_step']} | test loss "
                     f"{fmt(s['test_loss'])}{pm}, {tested}")
    if s.get("test_report"):
        progress.message(format_report(s["test_report"]))
    compared = footer_line(s)
    if compared:
        progress.message(f"baseline {compared}")
    for i, line in enumerate(format_verdicts(s.get("diagnosis") or [])):
        progress.message(line if line.startswith(" ") else f"{'fit' if i == 0 else '':<9}{line}")
    if s["stopped_because"] == "interrupted":
        progress.message(f"resume   gradwise train --resume {run.path}")
    progress.message(f"saved    {run.path}/ (summary.json, metrics.jsonl, loss.png, checkpoints/)")
