"""The Python API: ``train``, ``evaluate_run`` and ``generate_text``. The command line only calls these."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradwise.checkpoint import load_checkpoint, load_weights
from gradwise.config import Config, apply_overrides, build_config, load_config, read_config_file, save_config
from gradwise.data import Corpus, load_tokenizer, prepare_corpus, save_tokenizer
from gradwise.errors import ConfigError, GradwiseError
from gradwise.evaluate import EvalResult, evaluate
from gradwise.loop import LoopState, TrainLoop
from gradwise.models import GPT, build_model
from gradwise.objectives import CausalLMObjective
from gradwise.optim import build_optimizer, build_scheduler
from gradwise.plots import plot_losses
from gradwise.progress import TrainingProgress, format_seconds
from gradwise.regularization import Penalties
from gradwise.rundir import MetricsWriter, RunDir, default_run_name, read_metrics, write_json
from gradwise.runtime import backends_for_training, seed_everything, select_device, select_dtype
from gradwise.step import OptimizationStep

# Keys that must not change when a run is resumed: they decide the data, the model and the state's shape.
FROZEN_ON_RESUME = ("data", "model", "seed", "optim.name")


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

def resolve_train_config(config: Config | str | Path | None = None, overrides: list[str] | None = None,
                         resume: str | Path | None = None) -> tuple[Config, RunDir | None, str]:
    """The config a ``train`` call runs with, the run it resumes (if any) and a name stem for new runs."""
    overrides = list(overrides or [])
    if resume is None:
        if isinstance(config, Config):
            return (build_config(apply_overrides(config.to_dict(), overrides)) if overrides else config), None, "run"
        stem = Path(str(config)).stem if config is not None else "default"
        return load_config(config, overrides), None, stem
    run = RunDir.existing(resume)
    saved = build_config(read_config_file(run.config))
    if config is None:
        cfg = build_config(apply_overrides(saved.to_dict(), overrides))
    elif isinstance(config, Config):
        cfg = build_config(apply_overrides(config.to_dict(), overrides))
    else:
        cfg = load_config(config, overrides)
    for key in FROZEN_ON_RESUME:
        a, b = _lookup(saved, key), _lookup(cfg, key)
        if a != b:
            raise ConfigError(f"{key} differs from the run being resumed ({_short(b)} vs the run's {_short(a)}); "
                              "resume with the run's own config (drop the config file) or start a new run")
    cfg.name, cfg.out_dir = run.path.name, str(run.path.parent)
    return cfg, run, run.path.name


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg.to_dict()
    for part in dotted.split("."):
        node = node[part]
    return node


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- train

def train(config: Config | str | Path | None = None, *, overrides: list[str] | None = None,
          resume: str | Path | None = None, live_progress: bool | None = None, quiet: bool = False) -> RunResult:
    """Train a model end to end: data → model → steps with validation → best checkpoint → one test evaluation.

    ``config`` is a Config, a YAML/TOML path or a preset name (default preset when None);
    ``overrides`` are dotted ``key=value`` strings; ``resume`` is a run directory to continue exactly.
    """
    cfg, resumed, stem = resolve_train_config(config, overrides, resume)
    t = cfg.train
    if resumed is not None:
        run = resumed
    else:
        run = RunDir(Path(cfg.out_dir) / (cfg.name or default_run_name(stem)))
        if run.path.exists() and any(run.path.iterdir()):
            raise GradwiseError(f"run directory {run.path} already exists; continue it with --resume {run.path} "
                                "or choose another name with --set name=NEW")
    device = select_device(t.device)
    with backends_for_training(device, t.deterministic):
        return _run(cfg, run, resumed is not None, device, live_progress, quiet)


def _run(cfg: Config, run: RunDir, resumed: bool, device: torch.device, live_progress: bool | None,
         quiet: bool) -> RunResult:
    t = cfg.train
    seed_everything(cfg.seed)
    autocast_dtype = select_dtype(t.dtype, device)
    corpus = prepare_corpus(cfg.data, tokenizer=load_tokenizer(run.tokenizer) if resumed else None)
    for name in ("train", "val") + (("test",) if t.test_eval else ()):
        corpus.split(name).check_fits(cfg.model.block_size)

    model = build_model(cfg.model, corpus.tokenizer.vocab_size).to(device)
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optim.lr, t.max_steps)
    objective = CausalLMObjective(cfg.objective.label_smoothing, cfg.objective.z_loss)
    r = cfg.regularization
    penalties = Penalties(model, r.l1, r.l2, r.params)
    stepper = OptimizationStep(model, optimizer, objective, scheduler=scheduler, grad_clip=t.grad_clip,
                               autocast_dtype=autocast_dtype, max_nonfinite=t.max_nonfinite,
                               clip_mode=t.grad_clip_mode, penalty=penalties if penalties.active else None)
    state = LoopState()
    if resumed:
        saved = load_checkpoint(run.last, model, optimizer, scheduler)
        state = LoopState.from_json(saved["loop"])
        stepper.load_state_dict(state.stepper)
        if state.step >= t.max_steps:
            raise ConfigError(f"run {run.path} already reached train.max_steps ({t.max_steps}); to train further "
                              f"raise it, e.g. --set train.max_steps={t.max_steps * 2}")

    run.path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config)
    if not resumed:
        save_tokenizer(corpus.tokenizer, run.tokenizer)

    progress = TrainingProgress(t.max_steps, state.step, live=live_progress, quiet=quiet)
    _print_header(progress, cfg, run, corpus, model, device, autocast_dtype, state)
    compiled = torch.compile(model) if t.compile else model
    metrics = MetricsWriter(run.metrics, resume_step=state.step if resumed else None)
    try:
        loop = TrainLoop(cfg, compiled, stepper, corpus, run, device, autocast_dtype, state, metrics, progress,
                         raw_model=model)
        try:
            stopped_because = loop.run()
        finally:
            progress.close()
        summary = _finish(cfg, run, corpus, model, device, autocast_dtype, state, stopped_because, metrics, stepper)
    finally:
        metrics.close()
    _print_footer(progress, run, summary)
    return RunResult(run.path, summary)


def _finish(cfg: Config, run: RunDir, corpus: Corpus, model: GPT, device: torch.device,
            autocast_dtype: torch.dtype | None, state: LoopState, stopped_because: str,
            metrics: MetricsWriter, stepper: OptimizationStep) -> dict[str, Any]:
    t = cfg.train
    test: EvalResult | None = None
    if t.test_eval and stopped_because != "interrupted" and state.best_step is not None:
        load_weights(run.best, model)  # the honest number: the checkpoint chosen on validation, tested once
        test = evaluate(model, corpus.split("test"), cfg.model.block_size, t.batch_size, device,
                        corpus.tokenizer.token_byte_lengths(), autocast_dtype=autocast_dtype)
        metrics.write({"kind": "test", "step": state.best_step, "test_loss": test.loss, "test_ppl": test.perplexity,
                       "test_bpb": test.bits_per_byte, "test_tokens": test.tokens})
    train_only = state.train_seconds - state.eval_seconds
    summary: dict[str, Any] = {
        "run": str(run.path), "best_val_loss": state.best_val_loss, "best_step": state.best_step,
        "last_val_loss": state.last_val_loss,
        "test_loss": test.loss if test else None, "test_perplexity": test.perplexity if test else None,
        "test_bits_per_byte": test.bits_per_byte if test else None,
        "steps": state.step, "tokens_seen": state.tokens_seen, "train_seconds": round(state.train_seconds, 3),
        "eval_seconds": round(state.eval_seconds, 3),
        "step_seconds": round(state.step_seconds, 3),
        # Training throughput over the loop's wall time minus validation: sampling, transfers, logging
        # and checkpoints count against it, so it is what a user actually gets.
        "tokens_per_second": round(state.tokens_seen / train_only, 1) if train_only > 0 else None,
        "stopped_because": stopped_because, "nonfinite_steps": stepper.nonfinite_total,
        "params": model.num_params(), "vocab_size": corpus.tokenizer.vocab_size,
        "split_tokens": {k: s.n_tokens for k, s in corpus.splits.items()},
    }
    write_json(run.summary, summary)
    plot_losses(read_metrics(run.metrics), run.plot, title=run.path.name)
    return summary


def _print_header(progress: TrainingProgress, cfg: Config, run: RunDir, corpus: Corpus, model: GPT,
                  device: torch.device, autocast_dtype: torch.dtype | None, state: LoopState) -> None:
    t = cfg.train
    splits = ", ".join(f"{k} {s.n_tokens:,}" for k, s in corpus.splits.items())
    precision = "bf16 autocast" if autocast_dtype == torch.bfloat16 else "fp32"
    progress.message(f"run      {run.path}" + (f"  (resuming at step {state.step})" if state.step else ""))
    progress.message(f"data     {corpus.source.describe()} | {corpus.tokenizer.kind} tokenizer, vocab "
                     f"{corpus.tokenizer.vocab_size:,} | tokens: {splits}")
    progress.message(f"model    GPT {cfg.model.n_layer} layers, {cfg.model.n_head} heads, width {cfg.model.n_embd}, "
                     f"context {cfg.model.block_size} | {model.num_params():,} parameters "
                     f"({model.num_params(non_embedding=True):,} non-embedding)")
    progress.message(f"train    {t.max_steps:,} steps x {t.batch_size * t.grad_accum * cfg.model.block_size:,} tokens "
                     f"| {cfg.optim.name} lr {cfg.optim.lr:g} {cfg.schedule.name} | {device.type} {precision}")


def _print_footer(progress: TrainingProgress, run: RunDir, s: dict[str, Any]) -> None:
    def fmt(x: float | None) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"

    progress.message(f"stopped  {s['stopped_because']} after {s['steps']:,} steps, "
                     f"{format_seconds(s['train_seconds'])}, {s['tokens_per_second'] or 0:,.0f} tokens/s")
    progress.message(f"best     val loss {fmt(s['best_val_loss'])} at step {s['best_step']} | test loss "
                     f"{fmt(s['test_loss'])}, bits/byte {fmt(s['test_bits_per_byte'])}")
    if s["stopped_because"] == "interrupted":
        progress.message(f"resume   gradwise train --resume {run.path}")
    progress.message(f"saved    {run.path}/ (summary.json, metrics.jsonl, loss.png, checkpoints/)")


# ---------------------------------------------------------------- eval / generate

def load_run(run_path: str | Path, checkpoint: str = "best",
             device: str = "auto") -> tuple[Config, RunDir, GPT, torch.device]:
    """A trained model back from its run directory (config, tokenizer-sized GPT, chosen checkpoint)."""
    run = RunDir.existing(run_path)
    cfg = build_config(read_config_file(run.config))
    tok = load_tokenizer(run.tokenizer)
    dev = select_device(device)
    model = build_model(cfg.model, tok.vocab_size)
    load_weights(run.checkpoint(checkpoint), model)
    return cfg, run, model.to(dev).eval(), dev


def evaluate_run(run_path: str | Path, split: str = "test", checkpoint: str = "best",
                 device: str = "auto") -> EvalResult:
    """Loss, perplexity and bits per byte of a run's checkpoint on a whole split of its corpus."""
    if split not in ("train", "val", "test"):
        raise GradwiseError(f"unknown split '{split}'; use train, val or test")
    cfg, run, model, dev = load_run(run_path, checkpoint, device)
    corpus = prepare_corpus(cfg.data, tokenizer=load_tokenizer(run.tokenizer))
    corpus.split(split).check_fits(cfg.model.block_size)
    return evaluate(model, corpus.split(split), cfg.model.block_size, cfg.train.batch_size, dev,
                    corpus.tokenizer.token_byte_lengths(), autocast_dtype=select_dtype(cfg.train.dtype, dev))


def generate_text(run_path: str | Path, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8,
                  top_k: int | None = None, top_p: float | None = None, num_samples: int = 1, seed: int = 0,
                  checkpoint: str = "best", device: str = "auto") -> list[str]:
    """Sample continuations of ``prompt`` from a run's model (the prompt is included in each sample)."""
    if max_new_tokens < 0 or num_samples < 1:
        raise GradwiseError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise GradwiseError(f"--top-p must be in (0, 1]; got {top_p}")
    cfg, run, model, dev = load_run(run_path, checkpoint, device)
    tok = load_tokenizer(run.tokenizer)
    ids = tok.encode(prompt).tolist() if prompt else [tok.eot_id]
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=gen)
    start = len(ids) if not prompt else 0
    return [tok.decode(row[start:].tolist()) for row in out]
