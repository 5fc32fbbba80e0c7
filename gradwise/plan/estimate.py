"""The planner's estimates: what a training run will cost, before it starts.

:func:`gradwise.plan.planner.plan_run` answers for a config, from these formulas and those of
gradwise.models.cost: parameters (total and non-embedding), FLOPs per token and in total,
memory for weights, gradients, optimizer state and the activations of one micro-batch, whether that fits
this machine (and which micro-batch would, keeping the global batch), tokens per parameter against the
compute-optimal ~20 of Hoffmann et al. 2022 ("Chinchilla"), and the wall time on this device from a short
calibration run of the real step (gradwise/plan/budget.py, which also makes the ``--budget`` proposal).

Parameter counts and optimizer-state sizes are exact: they follow the code that builds the models and the
optimizers (tests compare them with real ones). Activation memory is an estimate, written down term by term
in :func:`activation_bytes`; tests hold it to 30% of the bytes autograd really saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradwise.config.schema import Config
from gradwise.config.validate import parse_duration
from gradwise.core.errors import ConfigError
from gradwise.hf.auto_tokenizer import load_hf_tokenizer
from gradwise.models.chunked_ce import chunk_rows
from gradwise.models.cost import ModelSpec, ParamTensor, architecture_spec, param_tensors
from gradwise.optim.optimizers import OPTIMIZERS
from gradwise.plan.hf_shape import hf_shape
from gradwise.tasks import prepare_task
from gradwise.tasks.init_from import init_tokenizer

CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: compute-optimal training tokens per parameter
MEMORY_HEADROOM = 0.9  # plan to use at most this share of free memory (allocator slack, the OS, other tensors)
FP32 = 4


def model_spec(cfg: Config, vocab_size: int, n_classes: int = 0) -> ModelSpec:
    """The planner's :class:`ModelSpec` of ``cfg``: gradwise's own models from their config
    (:func:`gradwise.models.cost.architecture_spec`), a Hugging Face model read from the model itself, built on
    the meta device (gradwise.plan.hf_shape)."""
    hf = hf_shape(cfg, vocab_size) if cfg.model.arch == "hf" else None
    return architecture_spec(cfg, vocab_size, n_classes, hf)


# ---------------------------------------------------------------- memory

def optimizer_state_bytes(tensors: list[ParamTensor], name: str, momentum: float = 0.9) -> int:
    """Bytes of optimizer state after the first step, as gradwise's optimizers keep it (fp32 throughout; each
    optimizer's count is its ``state_floats`` in gradwise.optim.optimizers.OPTIMIZERS).

    adamw/adam/radam: exp_avg + exp_avg_sq + a scalar step per tensor; nadam adds a scalar mu_product;
    sgd: momentum_buffer only when momentum > 0; lion: exp_avg; adafactor: row and column second moments of
    a matrix (a vector's in full) + step; muon: momentum_buffer for hidden matrices, AdamW for everything
    else. Tensors without a gradient get no state.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    total = 0
    for t in (t for t in tensors if t.grad):
        kind = "adamw" if name == "muon" and t.kind != "matrices" else name
        total += OPTIMIZERS[kind].state_floats(t.shape, momentum) * FP32
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
    if spec.arch == "ngram":  # the looked-up vectors (B, T, n_embd), kept for the sum's backward
        return tokens * spec.n_embd * FP32
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
    if not spec.with_lm or spec.arch in ("lstm", "ngram"):
        return 0
    rows = batch * spec.block_size
    if spec.fused_ce:
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

    if not data:
        # a Hugging Face model's own tokenizer: the vocabulary without reading the corpus
        tok = load_hf_tokenizer(cfg.model.hf_path) if cfg.model.arch == "hf" else init_tokenizer(cfg)
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


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimization step reads (classification: records x block_size, an upper bound)."""
    t = cfg.train
    return t.batch_size * t.grad_accum * cfg.model.block_size


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
