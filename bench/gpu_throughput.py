"""GPU throughput of gradwise's training step on the gpt2-124m preset: tokens/s, model TFLOP/s, MFU, memory.

One call does the whole measurement (GPU time is scarce): it measures the device's bf16 matmul peak itself
(8192³), then for each lever and batch size builds the preset's model, optimizer and gradwise's own
``OptimizationStep`` as ``gradwise train`` does, runs warm-up steps (compilation included) and times windows
of ``--steps`` steps on synthetic tokens (vocabulary 50,304), each window ended as a log line ends one: the
steps' numbers read back and the device synchronized. With fused AdamW the rows ask for asynchronous steps
(train.async_steps, off by default until verified on a GPU); one row syncs every step, the default. Each lever is measured on
its own, in one process, side by side, and compared with the reference figures of issue 7 (a minimal compiled trainer on an H100: 385k
tokens/s at batch 12, 480k at batch 32). Then it checks that the fast path learns like the eager fp32 path:
the same short run on real text (the embedded corpus, character tokens, the same seed and batches) in both,
per-step losses compared.

    python3 bench/gpu_throughput.py --record          # on a CUDA machine: every lever, the loss match
    python3 bench/gpu_throughput.py --smoke           # a tiny CPU run of the whole script (CI-sized)
    python3 bench/gpu_throughput.py --list            # the levers and their numbers

A device command may run 10 minutes; compiling takes about a minute per row, so the whole table can be split
over calls that each write their rows as they finish (a killed call keeps what it measured), then merged:
    python3 bench/gpu_throughput.py --levers 0-5 --no-match --jsonl $OUT/rows1.jsonl     # call 1
    python3 bench/gpu_throughput.py --levers 6-11 --jsonl $OUT/rows2.jsonl              # call 2
    python3 bench/gpu_throughput.py --merge rows1.jsonl rows2.jsonl --record            # here, afterwards

The fp8 rows need torchao (``pip install 'gradwise[fp8]'``); without it they become rows that say so.

MFU = tokens/s x (6N + 12·L·H·Q·T) / measured bf16 peak, N the non-embedding parameters (the output head
counted once), as in the PaLM paper's appendix B and nanoGPT. fp8 rows are also divided by the bf16 peak,
so their MFU compares with the others (fp8's own peak is twice that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from benchrecord import append_record

from gradwise.config.load import load_config
from gradwise.config.schema import Config
from gradwise.core.runtime import seed_everything, synchronize
from gradwise.models import build_model
from gradwise.models.cost import model_flops_per_token
from gradwise.objectives.losses import CausalLMObjective
from gradwise.training.build import assemble
from gradwise.training.meter import measure_matmul_peak
from gradwise.training.step import OptimizationStep

VOCAB = 50304  # GPT-2's 50,257 padded to a multiple of 128
REFERENCE = {12: 385_000, 32: 480_000}  # issue 7: a minimal compiled trainer on one H100, tokens/s
# async steps are off by default until a GPU has verified them (issue 17); the fast rows ask for them, and one
# row measures the default, a host sync every step.
BF16_FAST = ["train.dtype=bfloat16", "optim.fused=true", "train.compile=true", "train.async_steps=true"]
# Each lever on its own: (name, config overrides, batch sizes or None for all, vocabulary).
LEVERS = [
    ("eager fp32", ["train.dtype=float32", "train.compile=false", "optim.fused=false"], None, VOCAB),
    ("eager bf16 autocast", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=false"], None, VOCAB),
    ("bf16 + fused AdamW", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=true",
                            "train.async_steps=true"], None, VOCAB),
    ("bf16 + fused AdamW + compile", BF16_FAST, None, VOCAB),
    ("bf16 + chunked CE (eager)", ["train.dtype=bfloat16", "train.compile=false", "optim.fused=false",
                                   "train.fused_ce=true"], [32], VOCAB),
    ("bf16 + fused AdamW + compile + chunked CE", [*BF16_FAST, "train.fused_ce=true"], None, VOCAB),
    ("bf16 + fused AdamW + compile + fp8", [*BF16_FAST, "train.fp8=true"], None, VOCAB),
    ("bf16 + fused AdamW + compile + chunked CE + fp8", [*BF16_FAST, "train.fused_ce=true", "train.fp8=true"],
     None, VOCAB),
    ("bf16 + fused AdamW + compile, a host sync every step (the default)", [*BF16_FAST, "train.async_steps=false"], [32], VOCAB),
    ("bf16 + fused AdamW + compile + CUDA graphs", [*BF16_FAST, "train.compile_mode=reduce-overhead"], [32], VOCAB),
    ("bf16 + fused AdamW + compile max-autotune (no CUDA graphs)", [*BF16_FAST, "train.compile_mode=max-autotune-no-cudagraphs"],
     [32], VOCAB),
    ("bf16 + fused AdamW + compile, vocabulary 50,257 (unpadded)", BF16_FAST, [32], 50257),
]
MATCH_LEVERS = "5,7"  # the fast paths whose loss curves are compared with eager fp32 (bf16, and fp8)
SMOKE = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64", "train.device=cpu"]


@dataclass
class Measured:
    lever: str
    batch: int
    tokens_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    peak_mem_gib: float | None = None
    ms_per_step: float | None = None
    failed: str | None = None  # the error, in one line, when the lever did not run
    device: str = ""
    peak_tflops: float | None = None


def build(cfg: Config, vocab: int, device: torch.device) -> tuple[torch.nn.Module, OptimizationStep]:
    """The model and step as ``gradwise train`` assembles them (gradwise.training.build: fp8 swap, schedule,
    penalties, compile, CUDA graphs, asynchronous steps)."""
    torch._dynamo.reset()  # each row compiles afresh: no shapes or guards carried over from the last one
    seed_everything(cfg.seed)
    built = assemble(cfg, build_model(cfg.model, vocab), CausalLMObjective(fused=cfg.train.fused_ce), device)
    model, stepper = built.model, built.step
    return model, stepper


def measure(lever: str, overrides: list[str], batch: int, vocab: int, args: argparse.Namespace,
            device: torch.device, peak: float | None) -> Measured:
    cfg = load_config("gpt2-124m", [*overrides, f"train.batch_size={batch}", *(SMOKE if args.smoke else [])])
    vocab = 512 if args.smoke else vocab
    model, stepper = build(cfg, vocab, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, vocab, (batch, cfg.model.block_size + 1), generator=g) for _ in range(4)]
    pairs = [(b[:, :-1].to(device), b[:, 1:].to(device)) for b in batches]
    stepper.settle([stepper([pairs[i % len(pairs)]]) for i in range(args.warmup)])
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Timed as the training loop runs: windows of steps, each ended by reading the steps' numbers (an
    # asynchronous step is read only there, as at a log line); the median window, per step.
    per_window = []
    for _ in range(args.windows):
        t0 = time.perf_counter()
        results = [stepper([pairs[i % len(pairs)]]) for i in range(args.steps)]
        stepper.settle(results)
        synchronize(device)
        per_window.append((time.perf_counter() - t0) / args.steps)
    per_step = statistics.median(per_window)
    tok_s = batch * cfg.model.block_size / per_step
    flops = tok_s * model_flops_per_token(cfg, vocab)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Measured(lever, batch, tok_s, flops / 1e12, flops / peak if peak else None, mem, per_step * 1e3)


def one_line(exc: Exception) -> str:
    """A failure as a table cell: its type and the first line of its message."""
    lines = str(exc).splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0][:160]}"


def measure_or_say_why(lever: str, overrides: list[str], batch: int, vocab: int, args: argparse.Namespace,
                       device: torch.device, peak: float | None) -> Measured:
    """One row; a lever that fails (a compile mode this torch cannot do, say) becomes a row that says why."""
    try:
        row = measure(lever, overrides, batch, vocab, args, device, peak)
    except Exception as exc:  # noqa: BLE001 - one lever's failure must not cost the others' GPU time
        traceback.print_exc()
        row = Measured(lever, batch, failed=one_line(exc))
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row.device = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke run)"
    row.peak_tflops = peak / 1e12 if peak else None
    return row


def loss_match(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Eager fp32 and each fast path on the same real batches and seed: per-step losses side by side."""
    from gradwise.tasks import prepare_task

    steps = 5 if args.smoke else args.match_steps
    shape = [*SMOKE] if args.smoke else ["model.block_size=256"]
    curves: dict[str, list[float] | str] = {}
    for index in [0, *parse_levers(args.match_levers)]:
        name, overrides, _, _ = LEVERS[index]
        if args.smoke:
            overrides = [*overrides, "train.compile=false"]
        cfg = load_config("gpt2-124m", [*overrides, "data.tokenizer=char", "data.check=false", "data.dedupe=false",
                                        "train.batch_size=8", *shape])
        try:
            task = prepare_task(cfg)
            model, stepper = build(cfg, task.tokenizer.vocab_size, device)
            results = []
            for step in range(steps):
                x, y = task.micro_batch(step, 0)
                results.append(stepper([(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))]))
            stepper.settle(results)
            curves[name] = [r.loss for r in results]
        except Exception as exc:  # noqa: BLE001 - keep the other comparisons (and the table) of this GPU call
            traceback.print_exc()
            curves[name] = one_line(exc)
    (a, la), *fast = curves.items()
    lines = []
    for b, lb in fast:
        if isinstance(la, str) or isinstance(lb, str):
            lines.append(f"Loss match '{a}' vs '{b}' could not run: {lb if isinstance(lb, str) else la}")
            continue
        diffs = [abs(x - y) for x, y in zip(la, lb, strict=True)]
        rel = [d / x for d, x in zip(diffs, la, strict=True)]
        lines.append(f"Loss match over {steps} steps on the embedded corpus (char tokens, batch 8): '{a}' vs '{b}': "
                     f"first {la[0]:.4f} vs {lb[0]:.4f}, last {la[-1]:.4f} vs {lb[-1]:.4f}, max |diff| "
                     f"{max(diffs):.4f} ({max(rel):.2%} of the fp32 loss)")
    return lines


def table(rows: list[Measured]) -> list[str]:
    ran = [r for r in rows if r.failed is None]
    first = ran[0] if ran else rows[0]
    head = f"Device: {first.device}" + (f"; measured bf16 matmul peak: {first.peak_tflops:.0f} TFLOP/s"
                                        if first.peak_tflops else "")
    lines = [head, "", "| lever | batch | ms/step | tokens/s | vs reference | model TFLOP/s | MFU | peak memory |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if r.failed is not None:
            lines.append(f"| {r.lever} | {r.batch} | failed: {r.failed} | | | | | |")
            continue
        ref = REFERENCE.get(r.batch)
        lines.append(f"| {r.lever} | {r.batch} | {r.ms_per_step:.1f} | {r.tokens_per_s:,.0f} | "
                     f"{f'{r.tokens_per_s / ref:.2f}x' if ref and not first.device.startswith('cpu') else '-'} | "
                     f"{r.tflops:.1f} | {f'{r.mfu:.1%}' if r.mfu is not None else '-'} | "
                     f"{f'{r.peak_mem_gib:.1f} GiB' if r.peak_mem_gib is not None else '-'} |")
    lines += ["", "Reference (issue 7, one H100): a minimal compiled trainer, 385,000 tokens/s at batch 12 and "
              "480,000 at batch 32; the target is 1.25x at batch 32 (600,000 tokens/s)."]
    return lines


def parse_levers(spec: str | None) -> list[int]:
    """``0-3,7`` → [0, 1, 2, 3, 7]; None → every lever."""
    if not spec:
        return list(range(len(LEVERS)))
    chosen: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        chosen += range(int(lo), int(hi or lo) + 1)
    bad = [i for i in chosen if not 0 <= i < len(LEVERS)]
    if bad:
        raise SystemExit(f"--levers: no lever {bad[0]}; there are {len(LEVERS)} (0-{len(LEVERS) - 1}, see --list)")
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="12,32", help="micro-batch sizes (default 12,32)")
    ap.add_argument("--levers", help="which levers, by number: e.g. 0-5 or 3,6 (default all; see --list)")
    ap.add_argument("--list", action="store_true", help="print the levers with their numbers and stop")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window (default 10, a log line's)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per row; the median is kept (3)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first, compilation included (10)")
    ap.add_argument("--match-steps", type=int, default=100, help="steps of the loss comparison (default 100)")
    ap.add_argument("--match-levers", default=MATCH_LEVERS, help=f"the fast paths compared with eager fp32 in the "
                    f"loss match (default {MATCH_LEVERS})")
    ap.add_argument("--no-match", action="store_true", help="skip the loss comparison")
    ap.add_argument("--jsonl", type=Path, help="append each row to this file as soon as it is measured")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSONL", help="no measuring: the table from rows "
                    "written by earlier --jsonl runs (with their loss match lines)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU: checks the script, measures nothing")
    ap.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.list:
        for i, (name, overrides, only, _) in enumerate(LEVERS):
            print(f"{i:>2}  {name}  [{' '.join(overrides)}]" + (f"  batch {only[0]} only" if only else ""))
        return 0
    if args.merge:
        return merged_table(args)
    chosen = parse_levers(args.levers)
    if args.smoke:
        args.steps, args.windows, args.warmup, batches = 2, 1, 1, [2]
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
    for index in chosen:
        lever, overrides, only, vocab = LEVERS[index]
        if args.smoke:  # compiling on a CPU takes minutes and measures nothing: every other part of the row runs
            overrides = [*overrides, "train.compile=false"]
        for batch in batches:
            if only and batch not in only and not args.smoke:
                continue
            rows.append(measure_or_say_why(lever, overrides, batch, vocab, args, device, peak))
            r = rows[-1]
            print(f"  {lever:<48} batch {batch:>3}: " + (f"failed: {r.failed}" if r.failed else
                  f"{r.tokens_per_s:>12,.0f} tokens/s" + (f", MFU {r.mfu:.1%}" if r.mfu is not None else "")),
                  flush=True)
            if args.jsonl:
                with args.jsonl.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(r)) + "\n")
    match = [] if args.no_match else loss_match(args, device)
    if args.jsonl and match:
        with args.jsonl.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"match": match}) + "\n")
    lines = table(rows) + [""] + match if rows else match
    print("\n".join(lines))
    if args.record and not args.smoke:
        append_record("GPU throughput: gpt2-124m preset", "\n".join(lines))
    return 0


def merged_table(args: argparse.Namespace) -> int:
    rows, match = [], []
    for path in args.merge:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "match" in record:
                match += record["match"]
            else:
                rows.append(Measured(**record))
    if not rows:
        print(f"no measured rows in {', '.join(map(str, args.merge))}", file=sys.stderr)
        return 2
    lines = table(rows) + ([""] + match if match else [])
    print("\n".join(lines))
    if args.record and not rows[0].device.startswith("cpu"):
        append_record("GPU throughput: gpt2-124m preset", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
