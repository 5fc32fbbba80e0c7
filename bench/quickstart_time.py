"""The quick start's `python3 -m gradwise train` against another revision of gradwise, side by side.

    python3 bench/quickstart_time.py --ref 0440adb                 # the whole quick-start run, one pair
    python3 bench/quickstart_time.py --ref 0440adb --steps 300 --pairs 2 --record

The reference revision is checked out into a temporary git worktree and run from there (PYTHONPATH), so both
sides train the same preset on the same embedded corpus with the same seed, alternately, on this machine's
threads. Each side is a fresh process timed from start to exit; its validation and test loss show whether it
computed the same run (a pure reorganisation must give the same losses)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchrecord import append_record  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_once(code: Path, out: Path, name: str, steps: int | None) -> dict:
    args = [sys.executable, "-m", "gradwise", "train", "--quiet", "--set", f"out_dir={out}", "--set", f"name={name}"]
    if steps:
        args += ["--set", f"train.max_steps={steps}"]
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=out, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{code}: gradwise train failed:\n{done.stderr[-2000:]}")
    s = json.loads((out / name / "summary.json").read_text())
    return {"seconds": seconds, "best_val_loss": s["best_val_loss"], "test_loss": s["test_loss"],
            "tokens_per_second": s["tokens_per_second"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="git revision to compare with (e.g. the commit before a change)")
    p.add_argument("--steps", type=int, help="train.max_steps (default: the preset's, the whole quick start)")
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(ref), a.ref], check=True)
        try:
            rows: dict[str, list[dict]] = {"this tree": [], a.ref: []}
            for i in range(a.pairs):
                for side, code in (("this tree", REPO), (a.ref, ref)) if i % 2 == 0 else ((a.ref, ref), ("this tree", REPO)):
                    out = Path(tmp) / f"out-{i}"
                    out.mkdir(exist_ok=True)
                    rows[side].append(run_once(code, out, side.replace(" ", "-"), a.steps))
                    print(f"pair {i + 1}: {side}: {rows[side][-1]['seconds']:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(ref)], check=False)
    mine, theirs = (statistics.median(r["seconds"] for r in rows[k]) for k in ("this tree", a.ref))
    lines = [f"| code | wall time (median of {a.pairs}) | best val loss | test loss | tokens/s |",
             "|---|--:|--:|--:|--:|"]
    for side in rows:
        r = rows[side][-1]
        t = statistics.median(x["seconds"] for x in rows[side])
        lines.append(f"| {side} | {t:.1f} s | {r['best_val_loss']:.6f} | {r['test_loss']:.6f} | "
                     f"{r['tokens_per_second']:,.0f} |")
    lines.append(f"\nratio this tree / {a.ref}: {mine / theirs:.3f}")
    table = "\n".join(lines)
    print(table)
    if a.record:
        steps = f"{a.steps} steps" if a.steps else "the whole run"
        append_record("quick start: this tree against " + a.ref, table,
                      [f"`python3 -m gradwise train` (default preset, embedded corpus), {steps}, alternated in "
                       "fresh processes"])


if __name__ == "__main__":
    main()
