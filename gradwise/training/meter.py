"""Model FLOP/s and MFU: how much of the device's measured matmul peak a run turns into training.

MFU = tokens/s x training FLOPs per token (6N + 12·L·H·Q·T for a GPT, :func:`gradwise.plan.estimate.flops_per_token`;
6N for an LSTM; read from the parameters of a Hugging Face model) / peak FLOP/s. The peak is measured, not taken from a datasheet: a large bf16 matmul on this very device
(cached per device name and torch version), since clocks, power limits and the library decide what a chip
really reaches. ``train.peak_tflops`` overrides it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from gradwise.core.runtime import synchronize


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
