"""Time to quality on character-level Shakespeare: the plain nanoGPT-recipe loop against a gradwise preset.

The reference is the plain PyTorch loop of bench/cpu_shakespeare.py on the shakespeare-char-cpu recipe
(nanoGPT's CPU preset: GPT 4x4x128, context 64, batch 12, AdamW, 2,000 steps, evaluation every 250 steps on
200 batches). Its best checkpoint's loss on the whole validation split is the quality to reach. The
contender is `gradwise train PRESET` (default configs/shakespeare-char-fast.yaml) as a user runs it. Both
run as whole processes, alternated (reference, preset, reference, preset, ...), on the same data cache
warmed once; each is timed from process start to exit. Both best checkpoints are then scored by the same
code on every window of the validation split (characters 90-95% of the corpus), each at its own context.

Done means (issue 22): the preset's loss at or below the reference's, in at most 0.33x its wall clock, as
the median of the pairs.

    python3 bench/cpu_time_to_quality.py --record          # 3 pairs, ~8 minutes on 2 cores
    python3 bench/cpu_time_to_quality.py --pairs 1 --ref-steps 100 --set train.max_steps=50   # smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchrecord import RECORD_FILE, append_record

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "gradwise" / "presets" / "shakespeare-char-cpu.yaml"
FAST = REPO / "configs" / "shakespeare-char-fast.yaml"
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET_RATIO = 0.33


def reference_child(out: Path, data: Path, cache: Path, steps: int | None) -> None:
    """In its own process: the plain loop on the reference recipe; the best weights and timings to ``out``."""
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).parent))
    from cpu_shakespeare import plain_run

    from gradwise.config.load import load_config
    from gradwise.core.runtime import backends_for_training, tune_allocator
    from gradwise.data import prepare_corpus

    tune_allocator()
    overrides = [f"data.path={json.dumps(str(data))}", f"data.cache_dir={json.dumps(str(cache))}", "train.device=cpu"]
    overrides += [f"train.max_steps={steps}"] if steps else []
    cfg, device = load_config(REFERENCE, overrides), torch.device("cpu")
    with backends_for_training(device, cfg.train.deterministic):
        r = plain_run(cfg, prepare_corpus(cfg.data), device)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in r.pop("model").state_dict().items() if k != "lm_head.weight"}  # tied to wte
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    (out / "timing.json").write_text(json.dumps({k: r[k] for k in ("steps", "loop_s", "eval_s", "step_s")}))


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {rc}):\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def full_val(model: torch.nn.Module, cfg, corpus) -> float:
    from gradwise.tasks.lm_eval import evaluate

    return evaluate(model, corpus.split("val"), cfg.model.block_size, cfg.train.batch_size, torch.device("cpu"),
                    corpus.tokenizer.token_byte_lengths()).loss


def score_reference(out: Path, data: Path, cache: Path) -> float:
    from safetensors.torch import load_file

    from gradwise.config.load import load_config
    from gradwise.data import prepare_corpus
    from gradwise.models import GPT, gpt_config

    cfg = load_config(REFERENCE, [f"data.path={json.dumps(str(data))}", f"data.cache_dir={json.dumps(str(cache))}"])
    corpus = prepare_corpus(cfg.data)
    model = GPT(gpt_config(cfg.model, corpus.tokenizer.vocab_size))
    missing, unexpected = model.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected and model.lm_head.weight is model.wte.weight  # tied
    return full_val(model, cfg, corpus)


def score_run(run: Path) -> float:
    from gradwise.inference import evaluate_run

    return evaluate_run(run, "val").loss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=str(FAST), help="the gradwise config to time (default: %(default)s)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--ref-steps", type=int, help="shorten the reference (smoke check only)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="overrides for the preset's run (smoke check only)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    ap.add_argument("--reference-child", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    data = Path(args.data).resolve()
    if args.reference_child:
        reference_child(Path(args.reference_child), data, Path(args.cache), args.ref_steps)
        return 0
    if not data.is_file():
        print(f"skipped: corpus not found at {data}; pass --data PATH to tinyshakespeare.txt")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradwise-ttq-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        base = ["--data", str(data), "--set", f"data.cache_dir={json.dumps(str(cache))}"]
        warm = [a for s in [f"out_dir={json.dumps(str(tmp))}", "name=warm", "train.max_steps=1"] for a in ("--set", s)]
        timed([sys.executable, "-m", "gradwise", "train", args.preset, *base, *warm, "--no-bar"], tmp / "warm.log")
        for i in range(args.pairs):
            out = tmp / f"ref{i}"
            cmd = [sys.executable, __file__, "--reference-child", str(out), "--cache", str(cache), "--data", str(data)]
            wall = timed(cmd + (["--ref-steps", str(args.ref_steps)] if args.ref_steps else []), tmp / f"ref{i}.log")
            t = json.loads((out / "timing.json").read_text())
            rows.append({"pair": i + 1, "engine": "reference (plain loop)", "wall": wall, "steps": t["steps"],
                         "step_s": t["step_s"], "eval_s": t["eval_s"], "val": score_reference(out, data, cache)})
            print(f"  pair {i + 1} reference  {wall:6.1f} s  val {rows[-1]['val']:.4f}", flush=True)
            sets = [a for s in [f"out_dir={json.dumps(str(tmp))}", f"name=fast{i}", *args.sets] for a in ("--set", s)]
            wall = timed([sys.executable, "-m", "gradwise", "train", args.preset, *base, *sets, "--no-bar"],
                         tmp / f"fast{i}.log")
            s = json.loads((tmp / f"fast{i}" / "summary.json").read_text())
            rows.append({"pair": i + 1, "engine": Path(args.preset).stem, "wall": wall, "steps": s["steps"],
                         "step_s": s["step_seconds"], "eval_s": s["eval_seconds"], "val": score_run(tmp / f"fast{i}")})
            print(f"  pair {i + 1} preset     {wall:6.1f} s  val {rows[-1]['val']:.4f}", flush=True)
    lines = ["| pair | run | whole process s | steps | step s | eval s | whole-val loss |",
             "|--:|---|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['pair']} | {r['engine']} | {r['wall']:.1f} | {r['steps']:,} | {r['step_s']:.1f} | "
              f"{r['eval_s']:.1f} | {r['val']:.4f} |" for r in rows]
    refs, fasts = rows[0::2], rows[1::2]
    ratios = [f["wall"] / r["wall"] for r, f in zip(refs, fasts, strict=True)]
    ratio = statistics.median(ratios)
    target = statistics.median(r["val"] for r in refs)
    reached = all(f["val"] <= target for f in fasts)
    lines += ["", f"Wall-clock ratio (preset / reference), median of {len(ratios)} pairs: **{ratio:.3f}x** "
              f"({', '.join(f'{x:.3f}' for x in ratios)}). Reference whole-val loss (median) {target:.4f}; the "
              f"preset's {'reached it in every run' if reached else 'did NOT reach it in every run'}. Target: at "
              f"most {TARGET_RATIO}x at or below the reference's loss: "
              f"{'MET' if ratio <= TARGET_RATIO and reached else 'NOT MET'}."]
    print("\n" + "\n".join(lines))
    if args.record:
        append_record(f"cpu_time_to_quality ({Path(args.preset).stem} vs the plain nanoGPT-recipe loop)",
                      "\n".join(lines), ["whole processes, alternated; both scored on every validation window "
                                         "(characters 90-95%), each at its own context"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
