"""Model FLOP/s and MFU: how much of the device's measured matmul peak a run turns into training.

MFU = tokens/s x training FLOPs per token (6N + 12·L·H·Q·T for a GPT, :func:`gradwise.plan.flops_per_token`;
6N for an LSTM; read from the parameters of a Hugging Face model) / peak FLOP/s. The peak is measured, not taken from a datasheet: a large bf16 matmul on this very device
(cached per device name and torch version), since clocks, power limits and the library decide what a chip
really reaches. ``train.peak_tflops`` overrides it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from gradwise.config import Config
from gradwise.errors import GradwiseError
from gradwise.runtime import synchronize


def model_flops_per_token(cfg: Config, vocab_size: int, n_classes: int = 0) -> float:
    """Training FLOPs per token of ``cfg``'s model (forward + backward): gradwise's GPT and LSTM."""
    from gradwise.plan import flops_per_token, model_spec

    return flops_per_token(model_spec(cfg, vocab_size, n_classes))[0]


def transformer_flops_per_token(model: torch.nn.Module, n_layer: int, attention_width: int, context: int) -> float:
    """Training FLOPs per token of any transformer, read from its parameters (a Hugging Face model).

    Each weight a token meets in a matmul costs 2 FLOPs forward and 2 for the input's gradient, plus 2 for its
    own gradient when it trains: 6N for full training, about 4N on a frozen LoRA base. Embedding lookups cost
    nothing, except a table tied to the output layer (it is then a matmul). Attention adds 12·L·H·Q·T, as in
    the GPT formula."""
    lookups = {id(p) for p in lookup_tables(model)}
    matmul = [p for p in model.parameters() if id(p) not in lookups]
    n = sum(p.numel() for p in matmul)
    trained = sum(p.numel() for p in matmul if p.requires_grad)
    return 4.0 * n + 2.0 * trained + 12.0 * n_layer * attention_width * context


def lookup_tables(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The embedding tables a token is only looked up in: every one but a table tied to the output layer."""
    out = getattr(model, "get_output_embeddings", lambda: None)()
    out_weight = getattr(out, "weight", None)
    tables = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return [w for i, w in tables.items() if i != id(out_weight)]


def hf_attention_shape(config: Any, where: str) -> tuple[int, int, int]:
    """(layers, heads, heads x head width) from a Hugging Face config: what the attention term of the FLOPs
    and the planner's shape read; a config without them is one line naming ``where`` it came from."""
    layers, heads = getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None)
    if not layers or not heads:
        raise GradwiseError(f"{where}: its config.json names no num_attention_heads / num_hidden_layers (not a "
                            "transformer decoder gradwise can size)")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers, heads, heads * head_dim


def hf_flops_per_token(model: torch.nn.Module, context: int) -> float:
    """:func:`transformer_flops_per_token` with the shape a Hugging Face model's config gives."""
    config = model.base_model().config
    layers, _, width = hf_attention_shape(config, f"hf:{getattr(config, '_name_or_path', '') or 'model'}")
    return transformer_flops_per_token(model, layers, width, context)


def measure_matmul_peak(device: torch.device, n: int = 8192, dtype: torch.dtype = torch.bfloat16,
                        seconds: float = 1.0) -> float:
    """FLOP/s of an ``n``³ matmul in ``dtype`` on ``device``, best of repeated timed batches."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best, spent = 0.0, 0.0
    reps = 10
    while spent < seconds:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        dt = time.perf_counter() - t0
        spent += dt
        best = max(best, 2.0 * n ** 3 * reps / dt)
    return best


def device_peak(device: torch.device, cache_dir: Path, override_tflops: float | None = None) -> float | None:
    """The device's measured bf16 matmul peak in FLOP/s (cached), or ``override_tflops``; None off CUDA."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None  # a CPU's "peak" depends on threads and neighbours: MFU there would mislead
    name = torch.cuda.get_device_name(device)
    key = f"{name}|torch {torch.__version__}"
    path = cache_dir / "matmul_peak.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = measure_matmul_peak(device)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    return float(known[key])


class FlopsMeter:
    """Turns a window's tokens/s into model TFLOP/s and MFU."""

    def __init__(self, flops_per_token: float, peak: float | None):
        self.flops_per_token = flops_per_token
        self.peak = peak

    def fields(self, tokens_per_s: float) -> dict[str, float]:
        flops = tokens_per_s * self.flops_per_token
        out = {"model_tflops": round(flops / 1e12, 3)}
        if self.peak:
            out["mfu"] = round(flops / self.peak, 4)
        return out
