"""``gradwise plan``: what a training run will cost, before it starts, assembled from the estimates, the calibration and the budget search."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradwise.config.schema import Config
from gradwise.core.device_memory import fmt_bytes
from gradwise.core.errors import ConfigError
from gradwise.core.runtime import select_device, select_dtype
from gradwise.models.cost import ModelSpec, flops_per_token, param_counts
from gradwise.plan.budget import MAX_EPOCHS, estimate_time, propose  # plan_budget builds on this module
from gradwise.plan.estimate import (
    CHINCHILLA_TOKENS_PER_PARAM,
    Plan,
    budget_seconds,
    model_spec,
    read_data,
    tokens_per_step,
)
from gradwise.plan.hf_shape import HFModelShape
from gradwise.training.memory import FP32, activation_bytes, fit_advice, memory_fit
from gradwise.training.run_config import resolve_train_config


def resolve_config(config: Config | str | Path | None, overrides: list[str] | None) -> Config:
    """The config ``gradwise train`` would run with (a Config, a file, a preset name or the default preset),
    a Hugging Face model's context fitted to it as training fits it."""

    return resolve_train_config(config, overrides)[0]


def plan_run(config: Config | str | Path | None = None, overrides: list[str] | None = None,
             budget: str | float | None = None, *, data: bool = True, calibrate: bool = True,
             progress: Callable[[str], None] | None = None, max_epochs: float | None = MAX_EPOCHS) -> Plan:
    """Plan a training run: sizes, FLOPs, memory and fit, tokens per parameter, and (``calibrate``) wall time
    from a few real steps on this device; with ``budget`` ("10m", or seconds) also a compute-optimal proposal.

    ``data=False`` skips reading the corpus (a char vocabulary is then assumed to be 256 symbols and a
    classifier to have 2 classes); tokens per parameter still come from the planned steps. ``progress`` hears
    the calibration's stages as they happen (the command line prints them on stderr). ``max_epochs`` caps the
    tokens a proposal may plan on (None: as many as the budget affords, for a run that trains its whole time).
    """

    if budget is not None:
        budget_seconds(budget)  # a bad --budget fails before any work
    cfg = resolve_config(config, overrides)
    if cfg.model.arch == "hf" and cfg.task == "classify":
        raise ConfigError("gradwise plan models gradwise's own classifiers and Hugging Face language models; a Hugging "
                          "Face classifier is sized from its loaded weights: gradwise train checks its memory before "
                          "the run starts (train.memory_check)")
    if budget is not None and cfg.model.arch == "hf":
        raise ConfigError("--budget proposes the shape and steps of a gradwise GPT; a Hugging Face model's shape is "
                          "fixed: plan it without --budget and set train.max_steps or train.max_time")
    device = select_device(cfg.train.device)
    bf16 = select_dtype(cfg.train.dtype, device) == torch.bfloat16
    info, task = read_data(cfg, data)
    spec = model_spec(cfg, info["vocab_size"], info.get("classes", 0))
    plan = Plan(config=_config_section(cfg, spec, device, bf16), params=param_counts(spec), flops={}, data=info,
                memory=memory_section(cfg, spec, device, bf16), notes=list(info.pop("notes", [])))
    plan.flops = flops_section(cfg, spec)
    if spec.hf is not None:
        plan.notes += _hf_notes(spec.hf, device, bf16)
    _token_section(plan, cfg)
    if not plan.memory["fits"]:
        plan.notes.append(f"does not fit in memory: needs {fmt_bytes(plan.memory['total'])} of "
                          f"{fmt_bytes(plan.memory['available'])} free; {fit_advice(plan.memory, device, bf16)}")
    if calibrate:
        plan.time = estimate_time(cfg, spec, info, task, device, plan, progress)
    if budget is not None:
        plan.budget = propose(cfg, spec, info, device, bf16, budget, plan, max_epochs)
    return plan


def _hf_notes(h: HFModelShape, device: torch.device, bf16: bool) -> list[str]:
    if h.activation_note:
        return [h.activation_note]
    if bf16:
        return ["activations of a Hugging Face model are measured in fp32 (a meta-device pass): bf16 autocast "
                "keeps many of them in half the bytes, so they are an upper bound here"]
    return []


def _config_section(cfg: Config, spec: ModelSpec, device: torch.device, bf16: bool) -> dict[str, Any]:
    t = cfg.train
    hf = {"hf_path": spec.hf.path, "model_type": spec.hf.model_type, "lora_r": spec.hf.lora_r} if spec.hf else {}
    return {**hf, "task": cfg.task, "arch": spec.arch, "n_layer": spec.n_layer, "n_head": spec.n_head,
            "n_embd": spec.n_embd, "hidden": spec.hidden if spec.arch == "lstm" else None,
            "bidirectional": spec.bidirectional if spec.arch == "lstm" else None, "block_size": spec.block_size,
            "vocab_size": spec.vocab_size, "n_classes": spec.n_classes or None, "optimizer": cfg.optim.name,
            "device": str(device), "precision": "bf16 autocast" if bf16 else "fp32", "batch_size": t.batch_size,
            "grad_accum": t.grad_accum, "max_steps": t.max_steps, "eval_every": t.eval_every}


def memory_section(cfg: Config, spec: ModelSpec, device: torch.device, bf16: bool) -> dict[str, Any]:
    """Memory terms for this run's precision, the other precision's activations, the free memory and the fit."""
    fit = memory_fit(spec, cfg, device, bf16)
    other = activation_bytes(spec, cfg.train.batch_size, FP32 if bf16 else 2, device.type)
    return {**fit, "precision": "bf16 autocast" if bf16 else "fp32",
            "activations_fp32": other if bf16 else fit["activations"],
            "activations_bf16": fit["activations"] if bf16 else other,
            "activations_counted": spec.hf is None or spec.hf.activations_fixed is not None}


def flops_section(cfg: Config, spec: ModelSpec) -> dict[str, Any]:
    per_token, formula = flops_per_token(spec)
    per_step = per_token * tokens_per_step(cfg)
    return {"per_token": per_token, "per_step": per_step, "total": per_step * cfg.train.max_steps,
            "formula": formula}


def _token_section(plan: Plan, cfg: Config) -> None:
    """Planned tokens, tokens per parameter (against ~20) and epochs over the training split."""
    steps = cfg.train.max_steps
    per_step = tokens_per_step(cfg)
    n = plan.params["non_embedding"]
    planned = per_step * steps
    d = plan.data
    d.update({"tokens_per_step": per_step, "planned_tokens": planned, "tokens_per_param": planned / max(n, 1),
              "compute_optimal_tokens": int(CHINCHILLA_TOKENS_PER_PARAM * n)})
    train = (d.get("splits") or {}).get("train")
    if train and cfg.task == "lm":
        d["epochs"] = planned / train
    elif train:
        d["epochs"] = cfg.train.batch_size * cfg.train.grad_accum * steps / train
    pretrained = cfg.model.arch == "hf"  # fine-tuning: the compute-optimal count is about pretraining
    if cfg.task == "lm" and not pretrained and 0 < d["tokens_per_param"] < CHINCHILLA_TOKENS_PER_PARAM / 4:
        plan.notes.append(f"{d['tokens_per_param']:.2g} tokens per parameter, far below the compute-optimal ~20: "
                          "the model is large for this many steps (more steps, or a smaller model)")
