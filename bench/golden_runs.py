"""Golden runs: a few seeded runs whose every logged loss and score must not move when code is only
reorganised (issue 18's "no behaviour change").

    python bench/golden_runs.py --write golden.json     # record, with the code as it is
    python bench/golden_runs.py --check bench/golden/cpu-2core.json   # after a refactor: bit-identical or a diff

It runs, on the CPU with one thread each: an LM run of the character-level Shakespeare preset (300 steps;
the embedded corpus stands in when ../shared is absent), a classification run of the LSTM preset on
fortunes4 (skipped when absent), and a 3-trial random-search tune of the LM config. Every train/val loss
in metrics.jsonl and every score in summary.json is compared exactly (float equality, not a tolerance)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
SCORES = ("best_val_loss", "best_step", "last_val_loss", "test_loss", "test_perplexity", "test_bits_per_byte",
          "test_accuracy", "test_macro_f1", "steps", "tokens_seen", "nonfinite_steps", "params", "stopped_because")


def _gradwise(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: bit-identical sums from run to run
    done = subprocess.run([sys.executable, "-m", "gradwise", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"gradwise {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def _record(run: Path) -> dict:
    losses = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        kept = {k: v for k, v in row.items() if k in ("kind", "step") or k.endswith("loss") or k.startswith("test_")
                or k in ("grad_norm", "lr")}
        losses.append(kept)
    summary = json.loads((run / "summary.json").read_text())
    return {"metrics": losses, "summary": {k: summary.get(k) for k in SCORES}}


def run_all(work: Path) -> dict:
    out: dict[str, dict] = {}
    corpus = SHARED / "tinyshakespeare.txt"
    lm = ["shakespeare-char-cpu", "--data", str(corpus)] if corpus.is_file() else ["default"]
    common = ["--set", "train.max_steps=300", "--set", "train.eval_every=100", "--set", "train.eval_batches=20",
              "--set", "train.log_every=25", "--set", f"out_dir={work}"]
    _gradwise("train", *lm, *common, "--set", "name=lm", cwd=work)
    out["lm"] = _record(work / "lm")
    labelled = SHARED / "fortunes4.jsonl"
    if labelled.is_file():
        _gradwise("train", "classify-lstm", "--data", str(labelled), "--set", "train.max_steps=200",
                  "--set", f"out_dir={work}", "--set", "name=classify", cwd=work)
        out["classify"] = _record(work / "classify")
    space = work / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}\n"
                     "model.dropout: [0.0, 0.1]\n")
    _gradwise("tune", *lm, *common[:-2], "--set", "train.max_steps=60", "--space", str(space), "--trials", "3",
              "--sampler", "random", "--pruner", "none", "--out-dir", str(work / "studies"), "--study", "golden",
              cwd=work)
    trials = sorted((work / "studies" / "golden").glob("trials/*/summary.json"))
    out["tune"] = {"trials": [{k: json.loads(p.read_text()).get(k) for k in SCORES} for p in trials]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", type=Path)
    g.add_argument("--check", type=Path)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        got = run_all(Path(tmp))
    if a.write:
        a.write.write_text(json.dumps(got, indent=1) + "\n")
        print(f"recorded {', '.join(got)} -> {a.write}")
        return
    want = json.loads(a.check.read_text())
    bad = [name for name in want if want[name] != got.get(name)]
    for name in want:
        print(f"{name:<9} {'bit-identical' if name not in bad else 'DIFFERS'}")
    if bad:
        for name in bad:
            w, g2 = json.dumps(want[name], indent=0).splitlines(), json.dumps(got.get(name), indent=0).splitlines()
            diff = [f"  want {x}\n  got  {y}" for x, y in zip(w, g2, strict=False) if x != y][:5]
            print(f"{name}:\n" + "\n".join(diff))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
