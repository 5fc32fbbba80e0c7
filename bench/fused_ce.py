"""Chunked cross-entropy (train.fused_ce) against the plain loss on CPU: peak memory and time per step.

A small GPT (4 layers, width 256) with GPT-2's padded vocabulary (50,304) at context 256: the output layer's
logits dominate memory, as they do for GPT-2 small on a GPU. Each variant runs in a fresh process (peak RSS
is per process): a few optimization steps of gradwise's own OptimizationStep on the same random tokens; the
first step's loss shows both compute the same number. The GPU table (bench/gpu_throughput.py)
measures the same lever for speed; this one needs no GPU.

    python3 bench/fused_ce.py --record      # ~2 minutes; appends to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchrecord import append_record

CHILD = r"""
import json, resource, statistics, sys, time
import torch
from gradwise.config.schema import load_config
from gradwise.models import build_model
from gradwise.objectives.losses import CausalLMObjective
from gradwise.optim import build_optimizer
from gradwise.core.runtime import seed_everything
from gradwise.training.step import OptimizationStep

fused, batch, steps = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3])
cfg = load_config("default", ["model.n_layer=4", "model.n_head=4", "model.n_embd=256", "model.block_size=256",
                              "model.dropout=0.0"])
vocab = 50304
seed_everything(0)
model = build_model(cfg.model, vocab)
stepper = OptimizationStep(model, build_optimizer(model, cfg.optim, torch.device("cpu")),
                           CausalLMObjective(fused=fused))
g = torch.Generator().manual_seed(0)
data = torch.randint(0, vocab, (batch, 257), generator=g)
x, y = data[:, :-1], data[:, 1:]
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times, losses = [], []
for _ in range(steps):
    t0 = time.perf_counter()
    losses.append(stepper([(x, y)]).loss)
    times.append(time.perf_counter() - t0)
print(json.dumps({"loss": losses[0], "ms": 1e3 * statistics.median(times[1:]),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "before_mb": base_rss / 1024}))
"""


def run(fused: bool, batch: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if fused else "0", str(batch), str(steps)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (default 8: 2,048 tokens)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args(argv)
    rows = {}
    for fused in (False, True, False, True):  # alternated: the machine is shared and noisy
        r = run(fused, args.batch, args.steps)
        prev = rows.get(fused)
        rows[fused] = r if prev is None else {**r, "ms": min(prev["ms"], r["ms"])}
        print(f"  fused={fused}: {r}", flush=True)
    plain, fused = rows[False], rows[True]
    tokens = args.batch * 256
    lines = ["| loss path | step time | peak RSS | peak RSS above model + optimizer | first step's loss |",
             "|---|--:|--:|--:|--:|"]
    for name, r in (("plain (B·T×V logits)", plain), ("train.fused_ce (chunked)", fused)):
        lines.append(f"| {name} | {r['ms']:.0f} ms | {r['peak_mb']:,.0f} MB | {r['peak_mb'] - r['before_mb']:,.0f} MB "
                     f"| {r['loss']:.6f} |")
    logits_mb = tokens * 50304 * 4 / 2**20
    lines += ["", f"{tokens:,} tokens per step x 50,304 vocabulary: one fp32 copy of the logits is {logits_mb:,.0f} MB. "
              f"Peak memory {plain['peak_mb']:,.0f} -> {fused['peak_mb']:,.0f} MB "
              f"({plain['peak_mb'] / fused['peak_mb']:.2f}x less), step time {fused['ms'] / plain['ms']:.2f}x the "
              f"plain path's, loss difference {abs(plain['loss'] - fused['loss']):.2e}."]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("chunked cross-entropy on CPU", "\n".join(lines),
                      [f"GPT 4 layers x 256 wide, context 256, batch {args.batch}, vocab 50,304, AdamW, fp32; "
                       "each variant in a fresh process, run twice alternately (best time, last peak)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
