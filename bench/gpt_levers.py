"""The modern GPT options one at a time and together, on character-level Shakespeare or on a preset's own data.

Every run is `gradwise train shakespeare-char-cpu` as a whole process with Muon at lr 8e-3, 400 steps, an
evaluation every 200 (`train.eval_batches: auto`), plus one lever or a set of them. The best checkpoint of
each is scored on every window of the validation split (characters 90-95% of the corpus). The loss is
deterministic on a CPU (same seed), so one run per row is enough. The wall clock is one run's, so compare it
only roughly.

`--preset default` runs the default preset as it is (its embedded corpus, its recipe, its steps unless
--steps says otherwise) with each lever: what decides whether a lever goes into it.

    python3 bench/gpt_levers.py --record     # 9 runs, about 3 minutes on 2 cores
    python3 bench/gpt_levers.py --preset default --rows none,rope,qk_norm,"rope + qk_norm" --record
    python3 bench/gpt_levers.py --steps 20   # smoke check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchrecord import RECORD_FILE, append_record

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAKESPEARE = "shakespeare-char-cpu"
BASE = ["optim.name=muon", "optim.lr=8e-3", "train.eval_batches=auto", "train.test_eval=false"]
ROPE, QK, RELU2 = "model.pos=rope", "model.qk_norm=true", "model.activation=relu2"
ZERO, SOFTCAP = "model.zero_init=true", ["model.tie_embeddings=false", "model.logit_softcap=15"]
ROWS = [("none (learned positions, GELU, tied)", []), ("rope", [ROPE]), ("qk_norm", [QK]), ("relu2", [RELU2]),
        ("zero_init", [ZERO]), ("untied + logit_softcap 15", SOFTCAP), ("rope + qk_norm", [ROPE, QK]),
        ("rope + qk_norm + relu2", [ROPE, QK, RELU2]), ("all five", [ROPE, QK, RELU2, ZERO, *SOFTCAP])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="the corpus (default: tinyshakespeare; with --preset, the preset's own)")
    ap.add_argument("--preset", default=SHAKESPEARE, help=f"default {SHAKESPEARE}, with Muon 8e-3")
    ap.add_argument("--steps", type=int, help="default 400 (with --preset: the preset's own)")
    ap.add_argument("--rows", help="comma-separated row labels, as the table names them (none: the plain model; default: all)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    shakespeare = args.preset == SHAKESPEARE
    data = args.data or (str(DATA) if shakespeare else None)
    if data is not None and not Path(data).is_file():
        print(f"skipped: corpus not found at {data}; pass --data PATH to tinyshakespeare.txt")
        return 0
    from gradwise.config.load import load_config
    from gradwise.inference import evaluate_run

    steps = args.steps or (400 if shakespeare else load_config(args.preset).train.max_steps)
    wanted = None if args.rows is None else [r.strip() for r in args.rows.split(",")]
    rows = [(label, levers) for label, levers in ROWS
            if wanted is None or label.split(" (")[0] in wanted]
    lines = [f"| levers | whole-val loss at {steps} steps | vs none | wall s |", "|---|--:|--:|--:|"]
    none = None
    with tempfile.TemporaryDirectory(prefix="gradwise-levers-") as tmp:
        sets = [*(BASE if shakespeare else ["train.test_eval=false"]), f"train.max_steps={steps}",
                *([f"train.eval_every={max(1, steps // 2)}"] if shakespeare else []),
                f"data.cache_dir={json.dumps(tmp + '/cache')}", f"out_dir={json.dumps(tmp)}"]
        for i, (label, levers) in enumerate(rows):
            cmd = [sys.executable, "-m", "gradwise", "train", args.preset, *(["--data", data] if data else []),
                   "--no-bar", *[a for s in [*sets, *levers, f"name=r{i}"] for a in ("--set", s)]]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{label}: gradwise train failed:\n{proc.stderr[-2000:]}")
            loss = evaluate_run(Path(tmp) / f"r{i}", "val").loss
            none = loss if none is None else none
            lines.append(f"| {label} | {loss:.4f} | {loss - none:+.4f} | {wall:.1f} |")
            print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    if args.record:
        title = "GPT levers on shakespeare-char-cpu (Muon 8e-3)" if shakespeare else \
            f"GPT levers on the {args.preset} preset, its own data and recipe"
        append_record(title, "\n".join(lines), [f"one whole process per row, {steps} steps"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
