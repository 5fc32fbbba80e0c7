"""The compute planner: what a training run will cost, before it starts.

:func:`plan_run` answers for a config: parameters (total and non-embedding), FLOPs per token and in total,
memory for weights, gradients, optimizer state and the activations of one micro-batch, whether that fits
this machine (and which micro-batch would, keeping the global batch), tokens per parameter against the
compute-optimal ~20 of Hoffmann et al. 2022 ("Chinchilla"), and the wall time on this device from a short
calibration run of the real step (gradwise/plan_budget.py, which also makes the ``--budget`` proposal).

Parameter counts and optimizer-state sizes are exact: they follow the code that builds the models and the
optimizers (tests compare them with real ones). Activation memory is an estimate, written down term by term
in :func:`activation_bytes`; tests hold it to 30% of the bytes autograd really saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gradwise.config import (
    Config,
    objective_terms,
    parse_duration,
)
from gradwise.device_memory import available_memory
from gradwise.errors import ConfigError
from gradwise.runtime import select_device, select_dtype

if TYPE_CHECKING:
    from gradwise.plan_hf import HFShape

CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: compute-optimal training tokens per parameter
MEMORY_HEADROOM = 0.9  # plan to use at most this share of free memory (allocator slack, the OS, other tensors)
FP32 = 4


@dataclass(frozen=True)
class ParamTensor:
    """One parameter tensor as the model builds it; ``kind`` is its optimizer group (optim/optimizers.py)."""

    name: str
    shape: tuple[int, ...]
    kind: str  # matrices | embeddings | vectors
    grad: bool = True  # False: the tensor never receives a gradient (an untied LM head nobody reads)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelSpec:
    """The shape of the network a config builds: all the planner's formulas read from this."""

    arch: str  # gpt | lstm | hf
    task: str  # lm | classify
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    hidden: int = 0  # LSTM hidden size
    bidirectional: bool = False
    bias: bool = False
    tie_embeddings: bool = True
    n_classes: int = 0  # classify only
    with_lm: bool = True  # the LM head is computed (task lm, or a classifier with an lm objective term)
    drop: dict[str, float] = field(default_factory=dict)  # embd / attn / resid (GPT), between (LSTM layers)
    fused_ce: bool = False  # train.fused_ce: the loss goes through the output layer in chunks (chunked_ce.py)
    hf: HFShape | None = None  # a Hugging Face model: read from the model itself (plan_hf.py), not modelled

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1


def model_spec(cfg: Config, vocab_size: int, n_classes: int = 0) -> ModelSpec:
    """The :class:`ModelSpec` of ``cfg`` with the tokenizer's vocabulary (and the number of classes)."""
    m = cfg.model

    def rate(own: float | None) -> float:
        return m.dropout if own is None else own

    with_lm = cfg.task == "lm" or any(name == "lm" for name, _ in objective_terms(cfg))
    if m.arch == "hf":
        from gradwise.plan_hf import hf_shape

        shape, dims = hf_shape(cfg, vocab_size)
        return ModelSpec("hf", cfg.task, shape.output_rows, dims["n_layer"], dims["n_head"], dims["n_embd"],
                         m.block_size, tie_embeddings=False, hf=shape)
    return ModelSpec(m.arch, cfg.task, vocab_size, m.n_layer, m.n_head, m.n_embd, m.block_size,
                     hidden=m.hidden or m.n_embd, bidirectional=m.bidirectional, bias=m.bias,
                     tie_embeddings=m.tie_embeddings, n_classes=n_classes, with_lm=with_lm,
                     drop={"embd": rate(m.embd_dropout), "attn": rate(m.attn_dropout),
                           "resid": rate(m.resid_dropout), "between": m.dropout},
                     fused_ce=cfg.train.fused_ce and with_lm and m.arch == "gpt")


# ---------------------------------------------------------------- parameters

def param_tensors(spec: ModelSpec) -> list[ParamTensor]:
    """Every parameter tensor the model owns, once (tied weights are one tensor), in the optimizer's kinds."""
    if spec.hf is not None:
        return list(spec.hf.tensors)
    if spec.arch == "lstm":
        return _lstm_tensors(spec)
    return _gpt_tensors(spec)


def _gpt_tensors(s: ModelSpec) -> list[ParamTensor]:
    C, V = s.n_embd, s.vocab_size
    out = [ParamTensor("wte", (V, C), "embeddings"), ParamTensor("wpe", (s.block_size, C), "embeddings")]

    def linear(name: str, rows: int, cols: int) -> None:
        out.append(ParamTensor(f"{name}.weight", (rows, cols), "matrices"))
        if s.bias:
            out.append(ParamTensor(f"{name}.bias", (rows,), "vectors"))

    def norm(name: str) -> None:
        out.extend(ParamTensor(f"{name}.{p}", (C,), "vectors") for p in (("weight", "bias") if s.bias else ("weight",)))

    for i in range(s.n_layer):
        norm(f"blocks.{i}.ln_1")
        linear(f"blocks.{i}.attn.qkv", 3 * C, C)
        linear(f"blocks.{i}.attn.proj", C, C)
        norm(f"blocks.{i}.ln_2")
        linear(f"blocks.{i}.mlp.fc", 4 * C, C)
        linear(f"blocks.{i}.mlp.proj", C, 4 * C)
    norm("ln_f")
    if not s.tie_embeddings:
        # A GPT's lm_head is an "embeddings" tensor; inside a classifier the grouping does not find it (the
        # classifier has no lm_head attribute), so it is a matrix there, with a gradient only if read.
        classifier = s.task == "classify"
        out.append(ParamTensor("lm_head.weight", (V, C), "matrices" if classifier else "embeddings",
                               grad=s.with_lm))
    if s.task == "classify":
        out += [ParamTensor("head.weight", (s.n_classes, C), "matrices"), ParamTensor("head.bias", (s.n_classes,), "vectors")]
    return out


def _lstm_tensors(s: ModelSpec) -> list[ParamTensor]:
    H, D = s.hidden, s.directions
    out = [ParamTensor("embed.weight", (s.vocab_size, s.n_embd), "embeddings")]
    for layer in range(s.n_layer):
        width = s.n_embd if layer == 0 else H * D
        for suffix in ("", "_reverse")[:D]:
            out += [ParamTensor(f"lstm.weight_ih_l{layer}{suffix}", (4 * H, width), "matrices"),
                    ParamTensor(f"lstm.weight_hh_l{layer}{suffix}", (4 * H, H), "matrices"),
                    ParamTensor(f"lstm.bias_ih_l{layer}{suffix}", (4 * H,), "vectors"),
                    ParamTensor(f"lstm.bias_hh_l{layer}{suffix}", (4 * H,), "vectors")]
    return out + [ParamTensor("head.weight", (s.n_classes, H * D), "matrices"),
                  ParamTensor("head.bias", (s.n_classes,), "vectors")]


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Total and non-embedding parameters, as ``num_params`` of the models counts them.

    Non-embedding drops the position table and an untied token table (GPT), or the embedding (LSTM): the N
    of the 6N FLOP rule, where a tied table still counts once because it is also the output layer.
    """
    tensors = param_tensors(spec)
    total = sum(t.numel for t in tensors)
    dropped = {"wpe"} | ({"embed.weight"} if spec.arch == "lstm" else set())
    if spec.arch == "gpt" and not spec.tie_embeddings:
        dropped.add("wte")
    embedding = spec.hf.input_tables if spec.hf is not None else sum(t.numel for t in tensors if t.name in dropped)
    return {"total": total, "non_embedding": total - embedding,
            "trainable": sum(t.numel for t in tensors if t.grad), "tensors": len(tensors)}


# ---------------------------------------------------------------- FLOPs

def flops_per_token(spec: ModelSpec) -> tuple[float, str]:
    """Training FLOPs per token (forward + backward) and the formula used, in words."""
    if spec.hf is not None:
        return spec.hf.flops_per_token, ("4N + 2N_trained + 12*L*H*Q*T, N read from the model's parameters: each "
                                         "weight a token meets costs 2 FLOPs forward and 2 for the input's "
                                         "gradient, 2 more when it trains; lookups count nothing")
    if spec.arch == "lstm":
        H, D = spec.hidden, spec.directions
        widths = [spec.n_embd] + [H * D] * (spec.n_layer - 1)
        n = sum(D * 4 * H * (w + H) for w in widths)
        return 6.0 * n, ("6N, N = LSTM gate weights = sum over layers of 4 gates x (input + hidden) x hidden, x2 "
                         "when bidirectional (2 FLOPs per multiply-add, x3 for forward + backward); "
                         "embedding lookups and the per-record head ignored")
    C, L, T = spec.n_embd, spec.n_layer, spec.block_size
    n = param_counts(spec)["non_embedding"]
    if spec.task == "classify":  # the class head reads one position per record; the LM head only with an lm term
        n -= spec.n_classes * (C + 1) + (0 if spec.with_lm else spec.vocab_size * C)
    return 6.0 * n + 12.0 * L * C * T, ("6N + 12*L*H*Q*T (PaLM appendix B, nanoGPT's MFU): N non-embedding "
                                        "parameters (output head included), H*Q = n_embd, attention over the "
                                        "full context T without causal halving")


# ---------------------------------------------------------------- memory

def optimizer_state_bytes(tensors: list[ParamTensor], name: str, momentum: float = 0.9) -> int:
    """Bytes of optimizer state after the first step, as gradwise's optimizers keep it (fp32 throughout).

    adamw/adam/radam: exp_avg + exp_avg_sq + a scalar step per tensor; nadam adds a scalar mu_product;
    sgd: momentum_buffer only when momentum > 0; lion: exp_avg; adafactor: row and column second moments of
    a matrix (a vector's in full) + step; muon: momentum_buffer for hidden matrices, AdamW for everything
    else. Tensors without a gradient get no state.
    """
    total = 0
    for t in (t for t in tensors if t.grad):
        kind = "adamw" if name == "muon" and t.kind != "matrices" else name
        if kind in ("adamw", "adam", "radam"):
            total += 2 * t.numel * FP32 + FP32
        elif kind == "nadam":
            total += 2 * t.numel * FP32 + 2 * FP32
        elif kind == "sgd":
            total += t.numel * FP32 if momentum > 0 else 0
        elif kind in ("lion", "muon"):
            total += t.numel * FP32
        elif kind == "adafactor":
            rows_cols = math.prod(t.shape[:-1]) + math.prod(t.shape[:-2]) * t.shape[-1] if len(t.shape) >= 2 else t.numel
            total += rows_cols * FP32 + FP32
        else:
            raise ValueError(f"unknown optimizer {name!r}")
    return total


def activation_bytes(spec: ModelSpec, batch: int, act_bytes: int, device_type: str = "cpu") -> int:
    """Bytes autograd saves for backward in one micro-batch of ``batch`` full-length sequences.

    ``act_bytes`` is 4 (fp32) or 2 (bf16 autocast: matmul inputs and outputs are bf16, the residual stream,
    layer-norm inputs and the loss stay fp32). Per GPT block and token: both layer-norm inputs (2C fp32) and
    their mean and rstd (4 fp32), the qkv input and output (C + 3C), the attention output, which is also the
    projection input (C), the MLP input (C), the GELU input and output (4C + 4C), and the attention
    log-sum-exp (H fp32). CPU attention dropout takes PyTorch's math kernel, which keeps three T x T maps per
    head instead; each other dropout keeps its mask (act_bytes each on CPU, one byte on CUDA). Then per token:
    ids and targets (int64), the final norm (C fp32 + C), and the log-softmax over the vocabulary (V fp32).
    With ``train.fused_ce`` the head keeps instead the gradient of the final norm's output (C fp32 per token)
    and of the output weight (V x C fp32, once). Measured on torch 2.13 CPU this is within 0.2% (dropout or
    not); the LSTM: :func:`_lstm_bytes_per_token`.
    """
    if spec.hf is not None:  # measured on the meta device in fp32 (plan_hf.py): an upper bound under bf16
        h = spec.hf
        return 0 if h.activations_fixed is None else h.activations_fixed + h.activations_per_sample * batch
    tokens = batch * spec.block_size
    if spec.arch == "lstm":
        return tokens * _lstm_bytes_per_token(spec, act_bytes)
    C, H, T, a = spec.n_embd, spec.n_head, spec.block_size, act_bytes
    mask = 1 if device_type == "cuda" else a
    attention = 3 * H * T * a if spec.drop["attn"] > 0 and device_type != "cuda" else H * FP32
    block = 2 * C * FP32 + 4 * FP32 + 14 * C * a + attention + (2 * C * mask if spec.drop["resid"] > 0 else 0)
    if spec.fused_ce:
        head = C * FP32 + 2 * FP32 + C * FP32
        once = spec.vocab_size * C * FP32
    else:
        head = C * FP32 + 2 * FP32 + C * a + (spec.vocab_size * FP32 + 8 if spec.with_lm else 0)
        once = 0
    embed = 8 + (C * (1 if device_type == "cuda" else FP32) if spec.drop["embd"] > 0 else 0)
    return tokens * (spec.n_layer * block + head + embed) + once


def _lstm_bytes_per_token(s: ModelSpec, a: int) -> int:
    """The LSTM on CPU runs oneDNN, whose training workspace per layer, direction and token holds about
    6 * max(input, hidden) * (T+1)/T + 9.25 * hidden values (gates and states; fitted on torch 2.13 CPU,
    within 5% for hidden >= 64), plus the embedded input, each layer's output and dropout masks between layers."""
    H, D, T = s.hidden, s.directions, s.block_size
    values = s.n_embd
    for layer in range(s.n_layer):
        width = s.n_embd if layer == 0 else H * D
        values += D * (6 * max(width, H) * (T + 1) / T + 9.25 * H) + D * H
        if layer and s.drop["between"] > 0:
            values += D * H
    return int(values * a) + 8


def autocast_weight_bytes(spec: ModelSpec) -> int:
    """bf16 autocast keeps a bf16 copy of every linear weight it multiplies with (2 bytes per value)."""
    if spec.hf is not None:
        return 2 * spec.hf.autocast_values
    n = sum(t.numel for t in param_tensors(spec) if t.grad and (t.kind == "matrices" or t.name == "lm_head.weight"))
    if spec.arch == "gpt" and spec.tie_embeddings and spec.with_lm:  # the tied table, as the output layer
        n += spec.vocab_size * spec.n_embd
    return 2 * n


def logits_working_bytes(spec: ModelSpec, batch: int) -> int:
    """Around the loss two (B, T, V) fp32 tensors live at once (the logits, then their gradient); with
    ``train.fused_ce`` two (chunk, V) ones."""
    if not spec.with_lm or spec.arch == "lstm":
        return 0
    rows = batch * spec.block_size
    if spec.fused_ce:
        from gradwise.chunked_ce import chunk_rows

        rows = chunk_rows(rows, spec.n_embd, spec.vocab_size)
    return 2 * rows * spec.vocab_size * FP32


def memory_bytes(spec: ModelSpec, optimizer: str, momentum: float, batch: int, bf16: bool,
                 device_type: str) -> dict[str, int]:
    """Every term of the training memory for a micro-batch of ``batch`` (bytes), and their total."""
    tensors = param_tensors(spec)
    out = {"weights": sum(t.numel for t in tensors) * FP32,
           "grads": sum(t.numel for t in tensors if t.grad) * FP32,
           "optimizer": optimizer_state_bytes(tensors, optimizer, momentum),
           "activations": activation_bytes(spec, batch, 2 if bf16 else FP32, device_type),
           "logits": logits_working_bytes(spec, batch),
           "autocast_weights": autocast_weight_bytes(spec) if bf16 else 0}
    out["total"] = sum(out.values())
    return out


def fitting_micro_batch(spec: ModelSpec, optimizer: str, momentum: float, batch: int, accum: int, bf16: bool,
                        device_type: str, available: int) -> tuple[int, int] | None:
    """The largest micro-batch (a divisor of the global batch) whose memory fits; None if even 1 does not."""
    global_batch = batch * accum
    for micro in sorted((d for d in range(1, global_batch + 1) if global_batch % d == 0), reverse=True):
        if micro <= batch and memory_bytes(spec, optimizer, momentum, micro, bf16, device_type)["total"] \
                <= MEMORY_HEADROOM * available:
            return micro, global_batch // micro
    return None


# ---------------------------------------------------------------- data and budget

def read_data(cfg: Config, data: bool) -> tuple[dict[str, Any], Any]:
    """Vocabulary, split sizes and evaluation windows from the config's corpus (tokenized once, then cached);
    with ``data=False`` only what the config says, and assumptions stated in ``notes``."""
    from gradwise.tasks import adopt_init_run, prepare_task

    if not data:
        if cfg.model.arch == "hf":  # its own tokenizer: the vocabulary without reading the corpus
            from gradwise.hf.auto_tokenizer import load_hf_tokenizer

            tok = load_hf_tokenizer(cfg.model.hf_path)
        else:
            tok = adopt_init_run(cfg)
        d = cfg.data
        vocab = tok.vocab_size if tok is not None else (d.vocab_size if d.tokenizer == "bpe" else 256)
        info: dict[str, Any] = {"read": False, "vocab_size": vocab, "notes": []}
        if tok is None and d.tokenizer == "char":
            info["notes"].append("corpus not read: a character vocabulary of 256 is assumed")
        if cfg.task == "classify":
            info["classes"] = 2
            info["notes"].append("corpus not read: 2 classes assumed")
        return info, None
    task = prepare_task(cfg)
    source = task.corpus.source.describe() if cfg.task == "lm" else str(cfg.data.path)
    info = {"read": True, "source": source, "vocab_size": task.tokenizer.vocab_size,
            "tokenizer": task.tokenizer.kind, "unit": "tokens" if cfg.task == "lm" else "records",
            "splits": task.split_sizes(), "notes": []}
    T = cfg.model.block_size
    if cfg.task == "lm":
        info["val_windows_all"] = len(task.corpus.split("val").eval_starts(T))
        info["test_windows_all"] = len(task.corpus.split("test").eval_starts(T))
    else:
        info["classes"] = len(task.classes)
        info["mean_tokens_per_record"] = float(np.mean([len(ids) for ids in task.splits["train"].ids]))
    return info, task


def budget_seconds(budget: str | float) -> float:
    """A budget as seconds: a duration such as "10m" (as train.max_time reads it) or a positive number."""
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        if not budget > 0 or not math.isfinite(budget):
            raise ConfigError(f"--budget must be a positive duration such as 10m or 2h; got {budget!r}")
        return float(budget)
    return parse_duration(str(budget), "--budget")  # type: ignore[return-value]


# ---------------------------------------------------------------- the plan

@dataclass
class Plan:
    """What ``gradwise plan`` prints: one section per question (see :meth:`to_json` for the keys)."""

    config: dict[str, Any]
    params: dict[str, Any]
    flops: dict[str, Any]
    data: dict[str, Any]
    memory: dict[str, Any]
    time: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "params": self.params, "flops": self.flops, "data": self.data,
                "memory": self.memory, "time": self.time, "budget": self.budget, "notes": self.notes}


def resolve_config(config: Config | str | Path | None, overrides: list[str] | None) -> Config:
    """The config ``gradwise train`` would run with (a Config, a file, a preset name or the default preset),
    a Hugging Face model's context fitted to it as training fits it."""
    from gradwise.api import resolve_train_config

    return resolve_train_config(config, overrides)[0]


def plan_run(config: Config | str | Path | None = None, overrides: list[str] | None = None,
             budget: str | float | None = None, *, data: bool = True, calibrate: bool = True) -> Plan:
    """Plan a training run: sizes, FLOPs, memory and fit, tokens per parameter, and (``calibrate``) wall time
    from a few real steps on this device; with ``budget`` ("10m", or seconds) also a compute-optimal proposal.

    ``data=False`` skips reading the corpus (a char vocabulary is then assumed to be 256 symbols and a
    classifier to have 2 classes); tokens per parameter still come from the planned steps.
    """
    from gradwise.plan_budget import estimate_time, propose  # plan_budget builds on this module

    if budget is not None:
        budget_seconds(budget)  # a bad --budget fails before any work
    cfg = resolve_config(config, overrides)
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
        s = plan.memory["suggestion"]
        plan.notes.append(f"does not fit in memory: needs {fmt_bytes(plan.memory['total'])} of "
                          f"{fmt_bytes(plan.memory['available'])} free" + (
                              f"; --set train.batch_size={s['batch_size']} --set train.grad_accum={s['grad_accum']} "
                              "keeps the global batch and fits" if s else
                              "; not even a micro-batch of 1 fits: shrink the model or the context, or use bf16"))
    if calibrate:
        plan.time = estimate_time(cfg, spec, info, task, device, plan)
    if budget is not None:
        plan.budget = propose(cfg, spec, info, device, bf16, budget, plan)
    return plan


def _hf_notes(h: HFShape, device: torch.device, bf16: bool) -> list[str]:
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
    t, o = cfg.train, cfg.optim
    mem = memory_bytes(spec, o.name, o.momentum, t.batch_size, bf16, device.type)
    available, source = available_memory(device)
    other = activation_bytes(spec, t.batch_size, FP32 if bf16 else 2, device.type)
    fits = mem["total"] <= MEMORY_HEADROOM * available
    suggestion = None
    if not fits:
        micro = fitting_micro_batch(spec, o.name, o.momentum, t.batch_size, t.grad_accum, bf16, device.type, available)
        suggestion = {"batch_size": micro[0], "grad_accum": micro[1]} if micro else None
    return {**mem, "precision": "bf16 autocast" if bf16 else "fp32",
            "activations_fp32": other if bf16 else mem["activations"],
            "activations_bf16": mem["activations"] if bf16 else other,
            "available": available, "available_source": source, "headroom": MEMORY_HEADROOM, "fits": fits,
            "suggestion": suggestion,
            "activations_counted": spec.hf is None or spec.hf.activations_fixed is not None}


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimization step reads (classification: records x block_size, an upper bound)."""
    t = cfg.train
    return t.batch_size * t.grad_accum * cfg.model.block_size


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


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_count(x: float) -> str:
    """3.2M, 450k, 1.1G, 7.5T: enough digits to compare, not to read off."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
