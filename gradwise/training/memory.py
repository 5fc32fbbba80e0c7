"""The memory a training run needs, counted before anything is allocated: weights, gradients, optimizer state,
the activations autograd keeps for one micro-batch, the logits' working space and bf16 autocast copies.

Two places read it: ``gradwise plan`` (gradwise.plan), which shows every term and proposes a micro-batch that
fits, and the preflight every run passes before it builds its model (:func:`check_memory`), so that a config
no machine can hold is refused in one line, with no run directory left behind, instead of failing deep inside
PyTorch. A model that is already built (``gradwise step``, a Hugging Face model on the meta device) is
measured instead: :func:`saved_bytes`. Parameter and optimizer-state counts are exact; activations are an estimate written down term by term
in :func:`activation_bytes` (tests hold it to 30% of the bytes autograd really saves).
"""

from __future__ import annotations

from typing import Any

import torch

from gradwise.config.schema import Config
from gradwise.core.device_memory import MEMORY_HEADROOM, available_memory, fmt_bytes, refuse_beyond_free
from gradwise.core.errors import GradwiseError
from gradwise.models.chunked_ce import chunk_rows
from gradwise.models.cost import ModelSpec, ParamTensor, architecture_spec, param_tensors
from gradwise.objectives.losses import CausalLMObjective
from gradwise.optim.optimizers import OPTIMIZERS

FP32 = 4


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
    and of the output weight (V x C fp32, once). The modern options, measured: rotary positions keep the
    rotated queries and keys (3C per block and token), QK-norm keeps the normalised ones and their rstd
    (3C + 2H fp32, and the fp32 copies autocast makes: 2C fp32; with rope the rotation adds nothing more),
    ReLU² keeps what GELU keeps, and a logit soft-cap keeps its tanh (V per token; nothing with fused_ce).
    Measured on torch 2.13 CPU this is within 0.2% (dropout or not); the LSTM: :func:`_lstm_bytes_per_token`.
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
    if spec.qk_norm:
        block += 3 * C * a + 2 * H * FP32 + (2 * C * FP32 if a != FP32 else 0)
    elif spec.pos == "rope":
        block += 3 * C * a
    if spec.fused_ce:
        head = C * FP32 + 2 * FP32 + C * FP32
        once = spec.vocab_size * C * FP32
    else:
        head = C * FP32 + 2 * FP32 + C * a + (spec.vocab_size * FP32 + 8 if spec.with_lm else 0)
        head += spec.vocab_size * a if spec.softcap and spec.with_lm else 0
        once = 0
    embed = 8 + (C * (1 if device_type == "cuda" else FP32) if spec.drop["embd"] > 0 else 0)
    if spec.pos == "rope":
        once += T * (C // H) * FP32  # the cos and sin tables (T x D/2 each), saved once for every block
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


def memory_fit(spec: ModelSpec, cfg: Config, device: torch.device, bf16: bool) -> dict[str, Any]:
    """The run's memory terms at its micro-batch, the device's free memory, whether it fits (with
    MEMORY_HEADROOM), and when it does not, the micro-batch that would with the same global batch
    (``suggestion``, None if not even 1 fits). What ``gradwise plan`` shows and the preflight decides on."""
    t, o = cfg.train, cfg.optim
    mem = memory_bytes(spec, o.name, o.momentum, t.batch_size, bf16, device.type)
    available, source = available_memory(device)
    fits = mem["total"] <= MEMORY_HEADROOM * available
    micro = None if fits else fitting_micro_batch(spec, o.name, o.momentum, t.batch_size, t.grad_accum, bf16,
                                                  device.type, available)
    return {**mem, "available": available, "available_source": source, "headroom": MEMORY_HEADROOM, "fits": fits,
            "suggestion": {"batch_size": micro[0], "grad_accum": micro[1]} if micro else None}


def fit_advice(fit: dict[str, Any], device: torch.device, bf16: bool) -> str:
    """What to change when :func:`memory_fit` says no: the fitting micro-batch, or the keys to shrink."""
    s = fit["suggestion"]
    if s:
        return f"--set train.batch_size={s['batch_size']} --set train.grad_accum={s['grad_accum']} keeps the global " \
               "batch and fits"
    return ("not even a micro-batch of 1 fits: shrink model.n_embd, model.n_layer or model.block_size"
            + ("" if bf16 or device.type != "cuda" else ", or train in bf16 (train.dtype=bf16)"))


def check_memory(cfg: Config, vocab_size: int, n_classes: int, device: torch.device,
                 autocast_dtype: torch.dtype | None) -> None:
    """Refuse, before the model is built, a run whose estimated training memory is beyond what ``device`` has
    free: one line with the estimate, what is free, and the key to change (:func:`fit_advice`).
    ``train.memory_check: false`` skips it (the estimate is for gradwise's own models; a Hugging Face model's
    shape is read from its weights once it is loaded, by :func:`check_loaded_memory`)."""
    if not cfg.train.memory_check or cfg.model.arch == "hf":  # a Hugging Face model: check_loaded_memory
        return
    bf16 = autocast_dtype == torch.bfloat16
    fit = memory_fit(architecture_spec(cfg, vocab_size, n_classes), cfg, device, bf16)
    if fit["fits"]:
        return
    raise GradwiseError(f"this run needs about {fmt_bytes(fit['total'])} of memory on {device.type} and "
                        f"{fmt_bytes(fit['available'])} is free ({fit['available_source']}): "
                        f"{fit_advice(fit, device, bf16)} (gradwise plan shows every term; "
                        "train.memory_check=false skips this check)")


def saved_bytes(model: torch.nn.Module, batch: int, context: int, classifier: bool = False) -> int:
    """Bytes of the storages one training forward of the language-model objective (``classifier``: a loss over
    class logits) keeps for backward, each counted once (a saved view keeps its whole storage alive),
    parameters left out (they are the weights).
    On the meta device it costs nothing; on a real one it is a forward of ``batch`` x ``context`` tokens."""
    device = next(model.parameters()).device
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    held: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            held[storage._cdata] = storage.nbytes()
        return t

    x = torch.zeros(batch, context, dtype=torch.long, device=device)
    x[:, 0] = 1  # one id that is not padding, for a classifier that masks its pad id (0 or not)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if classifier:  # class logits (B, C): a cross-entropy over classes
            model(x).float().logsumexp(-1).sum()
        else:
            CausalLMObjective.summed(model, x, torch.zeros_like(x))
    return sum(held.values())


def loaded_step_bytes(model: torch.nn.Module, optimizer: str, momentum: float, width: int) -> tuple[int, int]:
    """(fixed, per sequence) bytes a training step adds to a model already in memory: its gradients and
    optimizer state, exact from the trainable parameters (Muon's AdamW share for what is not a matrix), and
    what autograd keeps for one sequence of ``width`` tokens, measured by a forward (:func:`saved_bytes`), plus
    the logits' gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    tensors = [ParamTensor(str(i), tuple(p.shape), "matrices" if p.dim() == 2 else "vectors") for i, p in enumerate(params)]
    fixed = sum(p.numel() * p.element_size() for p in params) + optimizer_state_bytes(tensors, optimizer, momentum)
    x = torch.ones(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        out = model(x)
    classifier = out.dim() == 2  # class logits (B, C), not a logit per position (B, T, V)
    logits = out.shape[-1] if classifier else width * out.shape[-1]
    return fixed, saved_bytes(model, 1, width, classifier) + logits * FP32


def check_loaded_memory(cfg: Config, model: torch.nn.Module, device: torch.device) -> None:
    """The preflight for a model whose shape is known once it is loaded (a Hugging Face model): its step at
    the run's micro-batch (:func:`loaded_step_bytes`) against the memory still free, before the optimizer or
    the run directory exists. Measured in fp32: under bf16 an upper bound."""
    if not cfg.train.memory_check:
        return
    t = cfg.train
    fixed, per_sample = loaded_step_bytes(model.train(), cfg.optim.name, cfg.optim.momentum, cfg.model.block_size)
    if next(model.parameters()).device != device:  # loaded on the CPU, trained on the GPU: the weights move too
        fixed += sum(p.numel() * p.element_size() for p in model.parameters())
    global_batch = t.batch_size * t.grad_accum

    def advice(usable: float) -> str:
        for micro in range(t.batch_size - 1, 0, -1):
            if global_batch % micro == 0 and fixed + micro * per_sample <= usable:
                return f"--set train.batch_size={micro} --set train.grad_accum={global_batch // micro} keeps the " \
                       "global batch and fits (train.memory_check=false skips this check)"
        return "not even a micro-batch of 1 fits: lower model.block_size, train with LoRA (model.lora.r=8), or " \
               "train.memory_check=false to try anyway"

    refuse_beyond_free(fixed + t.batch_size * per_sample, device, "this run's training step beside the loaded model",
                       advice)
