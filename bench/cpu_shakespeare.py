"""CPU benchmark: gradwise's training engine against a plain PyTorch loop on character-level Shakespeare.

What it measures. Both trainers run the preset gradwise/presets/shakespeare-char-cpu.yaml (GPT 4 layers,
4 heads, width 128, context 64, batch 12, AdamW, warmup + cosine, clip 1.0, 2,000 steps) in ONE process,
with the same model class, initial weights, data split and validation windows; only the loop differs:
  gradwise  gradwise.api.train(...) as a user calls it (sampler, instrumented step, logs, checkpoints);
  plain     the nanoGPT-style loop below (set lr, zero_grad, forward, cross_entropy, backward,
            clip_grad_norm_, step) with a torch.randint sampler on the train split.
Per run: train tok/s = tokens / (loop wall time - time inside validation evaluation), so batch sampling,
logging and checkpointing count against the engine; step-only tok/s = tokens / time inside the
optimization step (summary.json's step_seconds); wall s = the loop with its evaluations; best
full-val loss = the best model (chosen on the fixed validation windows, as gradwise does) evaluated on
every non-overlapping window of the validation split. Targets: gradwise train tok/s >= 0.95x plain, and
gradwise best full-val loss <= 1.88 (at 2,000 steps).

Why this way. The question is the engine's overhead, not the model's speed. So: one process, one thread
count, the same backend settings for both (gradwise.core.runtime.backends_for_training: glibc mallopt through
tune_allocator, deterministic algorithms, as api.train sets them), an untimed warm-up,
and alternating runs (default plain, gradwise, plain) so that drift on a shared machine hits both sides;
each engine's figures are means over its runs, and a busy machine or disagreeing repeats are flagged.

    python3 bench/cpu_shakespeare.py                        # full benchmark, some minutes on 2 quiet cores
    python3 bench/cpu_shakespeare.py --steps 100            # smoke check
    python3 bench/cpu_shakespeare.py --repeats 3 --record   # p,g,p,g,p,g,p; append to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchrecord import RECORD_FILE, append_record

from gradwise.config.load import load_config
from gradwise.config.schema import Config
from gradwise.core.checkpoint import load_weights
from gradwise.core.runtime import backends_for_training, tune_allocator
from gradwise.data import Corpus, prepare_corpus
from gradwise.models import GPT, gpt_config
from gradwise.optim import lr_at, param_groups
from gradwise.tasks.lm_eval import evaluate
from gradwise.training.run import train

REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "gradwise" / "presets" / "shakespeare-char-cpu.yaml"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TOKS_TARGET, LOSS_TARGET, FULL_STEPS = 0.95, 1.88, 2000


def plain_run(cfg: Config, corpus: Corpus, device: torch.device) -> dict:
    """Train with a plain loop: gradwise's GPT, data split and val windows; everything else written here."""
    t, o, s, block = cfg.train, cfg.optim, cfg.schedule, cfg.model.block_size
    assert t.grad_accum == 1 and o.name == "adamw", "the plain loop covers the preset: adamw, no accumulation"
    torch.manual_seed(cfg.seed)  # gradwise seeds the same way before building the model: same initial weights
    model = GPT(gpt_config(cfg.model, corpus.tokenizer.vocab_size)).to(device)
    groups: dict[bool, list] = {True: [], False: []}  # weight decay on 2-D weights except embeddings
    for name, p in model.named_parameters():
        groups[p.dim() >= 2 and not name.startswith(("wte.", "wpe."))].append(p)
    fused = o.fused if o.fused is not None else device.type in ("cpu", "cuda")  # gradwise's default choice
    optimizer = torch.optim.AdamW([{"params": groups[True], "weight_decay": o.weight_decay},
                                   {"params": groups[False], "weight_decay": 0.0}],
                                  lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps, fused=fused)

    def get_lr(it: int) -> float:
        if it < s.warmup_steps:
            return o.lr * (it + 1) / (s.warmup_steps + 1)
        progress = (it - s.warmup_steps) / max(1, t.max_steps - s.warmup_steps)
        return s.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (o.lr - s.min_lr)

    # Sanity: same grouping and schedule as gradwise, or the comparison means nothing.
    ref = param_groups(model, o.weight_decay, o.weight_decay_on)  # gradwise splits the undecayed ones further
    decayed = {id(p) for g in ref if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in groups[True]} and all(g.get("lr") in (None, o.lr) for g in ref)
    assert {id(p) for g in ref for p in g["params"]} - decayed == {id(p) for p in groups[False]}
    assert all(abs(get_lr(i) - lr_at(i, s, o.lr, t.max_steps)) < 1e-12 for i in range(t.max_steps))

    train_split, val = corpus.split("train"), corpus.split("val")
    data = torch.from_numpy(train_split.store.read(0, train_split.store.n_tokens))
    starts = torch.cat([torch.arange(a, b - block) for a, b in train_split.ranges])  # windows inside train
    gen = torch.Generator().manual_seed(cfg.seed)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = starts[torch.randint(len(starts), (t.batch_size,), generator=gen)]
        x = torch.stack([data[i:i + block] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block] for i in ix])
        return x.to(device), y.to(device)

    byte_lengths = corpus.tokenizer.token_byte_lengths()
    best_loss, best_step, best_state = math.inf, 0, None
    eval_s, step_s, tokens = 0.0, 0.0, 0
    start = time.perf_counter()
    for step in range(t.max_steps + 1):
        if step % t.eval_every == 0 or step == t.max_steps:  # gradwise's cadence, incl. step 0 and the end
            t0 = time.perf_counter()
            val_loss = evaluate(model, val, block, t.batch_size, device, byte_lengths,
                                max_windows=t.eval_batches * t.batch_size).loss
            eval_s += time.perf_counter() - t0
            if val_loss < best_loss:
                best_loss, best_step = val_loss, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step == t.max_steps:
            break
        x, y = get_batch()
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step)
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        step_s += time.perf_counter() - t0
        tokens += y.numel()
    loop_s = time.perf_counter() - start
    model.load_state_dict(best_state)
    return {"engine": "plain", "steps": t.max_steps, "tokens": tokens, "loop_s": loop_s, "eval_s": eval_s,
            "step_s": step_s, "best_step": best_step, "model": model}


def gradwise_run(overrides: list[str], cfg: Config, corpus: Corpus, name: str) -> dict:
    """Train with gradwise.api.train as a user would; timings come from its summary.json."""
    call_start = time.perf_counter()
    result = train(str(PRESET), overrides=[*overrides, f"name={name}"], quiet=True)
    call_s = time.perf_counter() - call_start
    s = result.summary
    model = GPT(gpt_config(cfg.model, corpus.tokenizer.vocab_size))
    load_weights(result.best_checkpoint, model)
    return {"engine": "gradwise", "steps": s["steps"], "tokens": s["tokens_seen"], "loop_s": s["train_seconds"],
            "eval_s": s["eval_seconds"], "step_s": s["step_seconds"], "best_step": s["best_step"],
            "call_s": call_s, "model": model}


def warm_up(cfg: Config, vocab: int, steps: int = 10) -> None:
    """Untimed steps on a throwaway model, so thread pools and the heap are set up before any timing."""
    model, x = GPT(gpt_config(cfg.model, vocab)), torch.randint(vocab, (cfg.train.batch_size, cfg.model.block_size))
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        opt.step()


def report(runs: list[dict], steps: int, load: float) -> tuple[str, list[str]]:
    """The markdown table (one row per run, one mean row per engine) and the verdict lines."""
    keys = ("tok_s", "step_tok_s", "loop_s", "full_val")
    row = "| {} | {} | {} | {:,.0f} | {:,.0f} | {:.1f} | {} | {:.4f} |"
    lines = ["| run | engine | steps | train tok/s | step-only tok/s | wall s (incl. eval) | best step "
             "| best full-val loss |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    lines += [row.format(i, r["engine"], r["steps"], *(r[k] for k in keys[:3]), r["best_step"], r["full_val"])
              for i, r in enumerate(runs, 1)]
    means, notes = {}, []
    for engine in ("plain", "gradwise"):
        if rs := [r for r in runs if r["engine"] == engine]:
            m = means[engine] = {k: sum(r[k] for r in rs) / len(rs) for k in keys}
            lines.append(row.format(f"mean of {len(rs)}", engine, steps, *(m[k] for k in keys[:3]), "-",
                                    m["full_val"]))
            spread = (max(r["tok_s"] for r in rs) - min(r["tok_s"] for r in rs)) / m["tok_s"]
            if spread > 0.1:
                notes.append(f"WARNING: the {engine} runs' tok/s differ by {spread:.0%}: the machine was not quiet")
    if len(means) == 2:
        g, p = means["gradwise"], means["plain"]
        ratio = g["tok_s"] / p["tok_s"]
        notes.append(f"gradwise/plain train tok/s: **{ratio:.3f}x** (step-only "
                     f"{g['step_tok_s'] / p['step_tok_s']:.3f}x); target >= {TOKS_TARGET}x: "
                     f"{'MET' if ratio >= TOKS_TARGET else 'NOT MET'}")
    if "gradwise" in means:
        loss = means["gradwise"]["full_val"]
        short = "" if steps >= FULL_STEPS else f" (shortened run: the target is for {FULL_STEPS:,} steps)"
        notes.append(f"gradwise best full-val loss {loss:.4f}; target <= {LOSS_TARGET}: "
                     f"{'MET' if loss <= LOSS_TARGET else 'NOT MET'}{short}")
    if load > 0.5:
        notes.append(f"WARNING: the 1-minute load average was {load:.2f} before the runs began: "
                     "the machine may have been busy")
    return "\n".join(lines), notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="tinyshakespeare.txt (default: %(default)s)")
    ap.add_argument("--steps", type=int, help="train this many steps instead of the preset's 2,000 (smoke check)")
    ap.add_argument("--order", default="plain,gradwise,plain", help="runs, in order (default: %(default)s)")
    ap.add_argument("--repeats", type=int, help="alternate plain,gradwise N times, then plain (overrides --order)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads for both loops (default: torch's choice)")
    ap.add_argument("--record", action="store_true", help=f"append the results to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    order = ["plain", "gradwise"] * args.repeats + ["plain"] if args.repeats else args.order.split(",")
    if any(e not in ("plain", "gradwise") for e in order):
        ap.error(f"--order takes plain and gradwise separated by commas; got {args.order!r}")
    data = Path(args.data).expanduser()
    if not data.is_file():
        print(f"skipped: corpus not found at {data}; pass --data PATH to tinyshakespeare.txt")
        return 0

    tune_allocator()  # api.train does this first thing; here it comes before either loop runs
    if args.threads:
        torch.set_num_threads(args.threads)
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gradwise-bench-") as tmp, contextlib.ExitStack() as stack:
        overrides = [f"data.path={json.dumps(str(data.resolve()))}", f"data.cache_dir={json.dumps(tmp + '/cache')}",
                     f"out_dir={json.dumps(tmp + '/runs')}", "train.device=cpu"]
        overrides += [f"train.max_steps={args.steps}"] if args.steps else []
        cfg, device = load_config(PRESET, overrides), torch.device("cpu")
        t, block = cfg.train, cfg.model.block_size
        stack.enter_context(backends_for_training(device, t.deterministic))  # api.train's settings, for both loops
        corpus = prepare_corpus(cfg.data)  # tokenized once into the temporary cache; gradwise reuses it
        print(f"cpu_shakespeare: GPT {cfg.model.n_layer}x{cfg.model.n_head}x{cfg.model.n_embd}, context {block}, "
              f"batch {t.batch_size}, {t.max_steps:,} steps; runs {','.join(order)}\n"
              f"same for both loops: torch {torch.__version__}, {threads} threads, fp32, deterministic algorithms "
              f"{'on' if t.deterministic else 'off'}, gradwise.core.runtime.tune_allocator() (glibc mallopt) applied"
              + (" but disabled by GRADWISE_NO_MALLOPT" if os.environ.get("GRADWISE_NO_MALLOPT") else ""))
        warm_up(cfg, corpus.tokenizer.vocab_size)
        val, byte_lengths = corpus.split("val"), corpus.tokenizer.token_byte_lengths()
        runs = []
        for i, engine in enumerate(order, 1):
            r = plain_run(cfg, corpus, device) if engine == "plain" else gradwise_run(overrides, cfg, corpus, f"b{i}")
            assert torch.get_num_threads() == threads, "the thread count changed between runs"
            r["full_val"] = evaluate(r.pop("model"), val, block, t.batch_size, device, byte_lengths).loss
            r["tok_s"], r["step_tok_s"] = r["tokens"] / (r["loop_s"] - r["eval_s"]), r["tokens"] / r["step_s"]
            runs.append(r)
            print(f"  run {i}/{len(order)} {engine:<8} {r['tok_s']:>9,.0f} tok/s  loop {r['loop_s']:.1f}s "
                  f"(eval {r['eval_s']:.1f}s)  best full-val loss {r['full_val']:.4f}"
                  + (f"  (whole api.train call {r['call_s']:.1f}s)" if "call_s" in r else ""), flush=True)
    table, notes = report(runs, t.max_steps, load)
    print("\n" + table + "\n\n" + "\n".join(notes))
    if args.record:
        append_record("cpu_shakespeare", table, notes)
        print(f"\nrecorded in {RECORD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
