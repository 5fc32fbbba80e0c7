"""GPU throughput of gradwise's training step on the gpt2-124m preset: tokens/s, model TFLOP/s, MFU, memory.

One call does the whole measurement (GPU time is scarce): it measures the device's bf16 matmul peak itself
(8192³), then for each lever and batch size builds the preset's model, optimizer and gradwise's own
``OptimizationStep``, runs warm-up steps (compilation included) and times ``--steps`` steps on synthetic
tokens (vocabulary 50,304), synchronizing the device. Each lever is measured on its own, in one process, side
by side. Then it checks that the fast path learns like the eager fp32 path: the same short run on real text
(the embedded corpus, character tokens, the same seed and batches) in both, per-step losses compared.

    python3 bench/gpu_throughput.py --record          # on a CUDA machine
    python3 bench/gpu_throughput.py --smoke           # a tiny CPU run of the whole script (CI-sized)

MFU = tokens/s x (6N + 12·L·H·Q·T) / measured peak, N the non-embedding parameters (the output head
counted once), as in the PaLM paper's appendix B and nanoGPT.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from benchrecord import append_record

from gradwise.config import Config, load_config
from gradwise.models import build_model
from gradwise.objectives import CausalLMObjective
from gradwise.optim import build_optimizer
from gradwise.runtime import compiled, seed_everything, select_dtype, synchronize
from gradwise.step import OptimizationStep
from gradwise.throughput import measure_matmul_peak, model_flops_per_token

VOCAB = 50304
# Each lever on its own: (name, config overrides). Later levers add to the fast path as the code gains them.
LEVERS = [
    ("eager fp32", ["train.dtype=float32", "train.compile=false", "optim.fused=false"]),
    ("eager bf16 autocast", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=false"]),
    ("bf16 + fused AdamW", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=true"]),
    ("bf16 + fused AdamW + compile", ["train.dtype=bfloat16", "train.compile=true", "optim.fused=true"]),
    ("bf16 + chunked CE (eager)", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=false",
                                   "train.fused_ce=true"]),
    ("bf16 + fused AdamW + compile max-autotune", ["train.dtype=bfloat16", "train.compile=true", "optim.fused=true",
                                                   "train.compile_mode=max-autotune-no-cudagraphs"]),
    ("bf16 + fused AdamW + compile + chunked CE", ["train.dtype=bfloat16", "train.compile=true", "optim.fused=true",
                                                   "train.fused_ce=true"]),
]
SMOKE = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64", "train.device=cpu"]


@dataclass
class Measured:
    lever: str
    batch: int
    tokens_per_s: float
    tflops: float
    mfu: float | None
    peak_mem_gib: float | None
    ms_per_step: float


def build(cfg: Config, vocab: int, device: torch.device) -> tuple[torch.nn.Module, OptimizationStep]:
    seed_everything(cfg.seed)
    model = build_model(cfg.model, vocab).to(device)
    step_model = compiled(model, cfg.train.compile_mode) if cfg.train.compile else model
    optimizer = build_optimizer(model, cfg.optim, device)
    stepper = OptimizationStep(step_model, optimizer, CausalLMObjective(fused=cfg.train.fused_ce), grad_clip=cfg.train.grad_clip,
                               autocast_dtype=select_dtype(cfg.train.dtype, device))
    return model, stepper


def measure(lever: str, overrides: list[str], batch: int, args: argparse.Namespace, device: torch.device,
            peak: float | None) -> Measured:
    cfg = load_config("gpt2-124m", [*overrides, f"train.batch_size={batch}", *(SMOKE if args.smoke else [])])
    vocab = 512 if args.smoke else VOCAB
    model, stepper = build(cfg, vocab, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, vocab, (batch, cfg.model.block_size + 1), generator=g) for _ in range(4)]
    pairs = [(b[:, :-1].to(device), b[:, 1:].to(device)) for b in batches]
    for i in range(args.warmup):
        stepper([pairs[i % len(pairs)]])
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        stepper([pairs[i % len(pairs)]])
        synchronize(device)
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    tok_s = batch * cfg.model.block_size / per_step
    flops = tok_s * model_flops_per_token(cfg, vocab)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del model, stepper
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Measured(lever, batch, tok_s, flops / 1e12, flops / peak if peak else None, mem, per_step * 1e3)


def loss_match(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Eager fp32 and the fastest path on the same real batches and seed: per-step losses side by side."""
    from gradwise.tasks import prepare_task

    steps = 5 if args.smoke else args.match_steps
    shape = [*SMOKE] if args.smoke else ["model.block_size=256"]
    curves = {}
    for lever, overrides in (LEVERS[0], LEVERS[-1]):
        if args.smoke and "compile=true" in " ".join(overrides):
            overrides = [o for o in overrides if "compile" not in o] + ["train.compile=false"]
        cfg = load_config("gpt2-124m", [*overrides, "data.tokenizer=char", "data.check=false", "data.dedupe=false",
                                        "train.batch_size=8", *shape])
        task = prepare_task(cfg)
        model, stepper = build(cfg, task.tokenizer.vocab_size, device)
        losses = []
        for step in range(steps):
            x, y = task.micro_batch(step, 0)
            losses.append(stepper([(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))]).loss)
        curves[lever] = losses
    (a, la), (b, lb) = curves.items()
    diffs = [abs(x - y) for x, y in zip(la, lb, strict=True)]
    rel = [d / x for d, x in zip(diffs, la, strict=True)]
    return [f"Loss match over {steps} steps on the embedded corpus (char tokens, batch 8): '{a}' vs '{b}': "
            f"first {la[0]:.4f} vs {lb[0]:.4f}, last {la[-1]:.4f} vs {lb[-1]:.4f}, max |diff| {max(diffs):.4f} "
            f"({max(rel):.2%} of the fp32 loss)"]


def table(rows: list[Measured], peak: float | None, device: torch.device) -> list[str]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke run)"
    lines = [f"Device: {name}; measured bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s" if peak else f"Device: {name}",
             "", "| lever | batch | ms/step | tokens/s | model TFLOP/s | MFU | peak memory |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r.lever} | {r.batch} | {r.ms_per_step:.1f} | {r.tokens_per_s:,.0f} | {r.tflops:.1f} | "
                     f"{f'{r.mfu:.1%}' if r.mfu is not None else '-'} | "
                     f"{f'{r.peak_mem_gib:.1f} GiB' if r.peak_mem_gib is not None else '-'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="12,32", help="micro-batch sizes (default 12,32)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default 30)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first, compilation included (10)")
    ap.add_argument("--match-steps", type=int, default=100, help="steps of the loss comparison (default 100)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    ap.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, batches = 2, 1, [2]
    else:
        batches = [int(b) for b in args.batches.split(",")]
        if not torch.cuda.is_available():
            print("no CUDA device: this benchmark measures a GPU (use --smoke to check the script on a CPU)",
                  file=sys.stderr)
            return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak = None if args.smoke else measure_matmul_peak(device)
    rows = []
    for lever, overrides in LEVERS:
        if args.smoke and "compile=true" in " ".join(overrides):
            continue  # compiling on a CPU takes minutes and measures nothing here
        for batch in batches:
            rows.append(measure(lever, overrides, batch, args, device, peak))
            r = rows[-1]
            print(f"  {lever:<32} batch {batch:>3}: {r.tokens_per_s:>12,.0f} tokens/s"
                  f"{f', MFU {r.mfu:.1%}' if r.mfu is not None else ''}", flush=True)
    lines = table(rows, peak, device) + [""] + loss_match(args, device)
    print("\n".join(lines))
    if args.record and not args.smoke:
        append_record("GPU throughput: gpt2-124m preset", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
