"""Muon's Newton-Schulz precision on this CPU: bf16 (what GPUs use) against fp32 (gradwise's CPU default).

Without native bf16 matmuls (no AVX-512 BF16 or AMX), PyTorch emulates bf16 on the CPU and the
orthogonalization dominates the step. Measured side by side in one process on the ``default`` preset's model
and batch (Muon + AdamW): median ms per optimization step and its phases, alternated bf16, fp32, bf16, fp32.

    python3 bench/muon_precision.py --record
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from benchrecord import append_record

from gradwise.config.load import load_config
from gradwise.models import build_model
from gradwise.objectives.losses import CausalLMObjective
from gradwise.optim import build_optimizer
from gradwise.training.step import OptimizationStep


def measure(dtype: str, steps: int) -> tuple[float, dict[str, float]]:
    cfg = load_config("default")
    torch.manual_seed(0)
    model = build_model(cfg.model, 65)
    optimizer = build_optimizer(model, cfg.optim, torch.device("cpu"))
    for part in getattr(optimizer, "optimizers", [optimizer]):
        for group in part.param_groups:
            if "ns_dtype" in group:
                group["ns_dtype"] = dtype
    stepper = OptimizationStep(model, optimizer, CausalLMObjective())
    x = torch.randint(0, 65, (cfg.train.batch_size, cfg.model.block_size))
    y = torch.randint(0, 65, x.shape)
    times = []
    for _ in range(steps + 1):  # the first step allocates state: not timed
        t0 = time.perf_counter()
        stepper([(x, y)])
        times.append(time.perf_counter() - t0)
    phases = stepper([(x, y)], profile=True).timings or {}
    return statistics.median(times[1:]), phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {"bfloat16": [], "float32": []}
    for dtype in ("bfloat16", "float32", "bfloat16", "float32"):
        runs[dtype].append(measure(dtype, args.steps))
        print(f"  {dtype}: {runs[dtype][-1][0] * 1e3:.0f} ms/step", flush=True)
    best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items()}
    lines = ["| Newton-Schulz in | ms/step | forward | backward | optimizer |", "|---|--:|--:|--:|--:|"]
    for dtype, (sec, ph) in best.items():
        lines.append(f"| {dtype} | {sec * 1e3:.0f} | {ph.get('forward', 0) * 1e3:.0f} | "
                     f"{ph.get('backward', 0) * 1e3:.0f} | {ph.get('optimizer', 0) * 1e3:.0f} |")
    ratio = best["bfloat16"][0] / best["float32"][0]
    lines += ["", f"fp32 Newton-Schulz makes the step {ratio:.1f}x faster here; CPU capability: "
                  f"{torch.backends.cpu.get_cpu_capability()}."]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("Muon Newton-Schulz precision on CPU", "\n".join(lines),
                      ["default preset (GPT 4 x 128, context 128, batch 16, Muon + AdamW), one process, "
                       "alternated bf16/fp32 twice, best median of each"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
