"""Autofit benchmark: `gradwise autofit` against (a) the default preset trained for the same wall clock and
(b) `gradwise tune` (default sampler and pruner) over the search space autofit used, each arm a whole
`gradwise` process, run one after the other in one window.

- Language model on tinyshakespeare: the score is validation bits per byte.
- Classifier on fortunes4 (`--task classify`): the score is validation macro-F1.

Every arm's chosen checkpoint is scored again on the whole validation split, by the same code, so a
different `eval_batches` cannot flatter one arm. Its one test score is printed beside it. Arm (a) is the
preset as a user runs it, with `train.max_steps` set to what fits the budget (from a 60-step timing of the
preset, not counted) and `train.max_time` the budget. Arm (b) starts from autofit's own starting config, so
that only the search differs. Its trials are as long as autofit's longest rung; its timeout is the budget.
The data cache is warmed once, before the arms.

    python3 bench/autofit.py --record         # ~60 minutes on 2 cores (2 tasks x 3 arms x 10 min)
    python3 bench/autofit.py --budget 60s     # smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchrecord import RECORD_FILE, append_record

from gradwise.autofit.budget import parse_budget
from gradwise.autofit.moves import search_space
from gradwise.inference import evaluate_run
from gradwise.search.report import read_trials

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
TASKS = {"lm": SHARED / "tinyshakespeare.txt", "classify": SHARED / "fortunes4.jsonl"}


def gradwise(args: list[str], log: Path) -> float:
    """One whole gradwise process; its wall clock in seconds."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run([sys.executable, "-m", "gradwise", *args], stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"gradwise {' '.join(args[:1])} failed (exit {rc}); see {log}:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - t0


def scores(run: Path, task: str) -> dict[str, float]:
    """The chosen checkpoint on the whole val split, and on test (read once per arm, here)."""
    key = "macro_f1" if task == "classify" else "bits_per_byte"
    return {split: float(evaluate_run(run, split).scalars[key]) for split in ("val", "test")}


def task_args(task: str, data: Path, cache: Path) -> list[str]:
    out = ["--data", str(data), "--set", f"data.cache_dir={json.dumps(str(cache))}"]
    return out + (["--task", "classify"] if task == "classify" else [])


def tune_args(base: list[str]) -> list[str]:
    """``gradwise tune`` takes the classifier's preset by name (it has no --task)."""
    if "--task" not in base:
        return base
    i = base.index("--task")
    return ["classify-ngram", *base[:i], *base[i + 2:]]


def out(tmp: Path, name: str) -> list[str]:
    return ["--set", f"out_dir={json.dumps(str(tmp))}", "--name", name]


def steps_for(task: str, base: list[str], seconds: float, tmp: Path) -> int:
    """The preset's steps that fit ``seconds``, from a 60-step timing of it at its own evaluation cadence: the
    process's fixed cost (start, data, building) and the steps' (evaluations and checkpoints included)."""
    wall = gradwise(["train", *base, "--set", "train.max_steps=60", "--set", "train.test_eval=false",
                     *out(tmp, "timing")], tmp / "timing.log")
    s = json.loads((tmp / "timing" / "summary.json").read_text())
    per_step = (s["train_seconds"] - (s.get("eval_seconds") or 0.0)) / s["steps"]
    fixed = wall - s["train_seconds"]
    return max(60, int(0.9 * (seconds - fixed) / per_step))  # 10% for evaluations at the preset's cadence


def autofit_arm(task: str, base: list[str], budget: str, tmp: Path) -> dict[str, Any]:
    wall = gradwise(["autofit", *base, "--budget", budget, "--out-dir", str(tmp), "--name", "af"], tmp / "af.log")
    record = json.loads((tmp / "af" / "autofit.json").read_text())
    best = next(c for r in record["rounds"] for c in r["candidates"] if c["slot"] == record["best"])
    cands = [c for r in record["rounds"] for c in r["candidates"] if c["state"] == "complete"]
    return {"arm": "autofit", "wall": wall, "run": Path(best["run"]), "record": record, "candidates": len(cands),
            "detail": f"{len(cands)} runs, winner {best['slot']} ({best['steps']} steps)"}


def preset_arm(task: str, base: list[str], budget: str, tmp: Path) -> dict[str, Any]:
    seconds = parse_budget(budget).amount
    steps = steps_for(task, base, seconds, tmp)
    wall = gradwise(["train", *base, "--set", f"train.max_steps={steps}", "--set", f"train.max_time={budget}",
                     "--set", "train.test_eval=false", *out(tmp, "preset")], tmp / "preset.log")
    s = json.loads((tmp / "preset" / "summary.json").read_text())
    return {"arm": "default preset", "wall": wall, "run": tmp / "preset",
            "detail": f"{s['steps']} of {steps} steps ({s['stopped_because']})"}


def tune_space(record: dict[str, Any]) -> dict[str, Any]:
    """The keys autofit's exploring rounds changed: a range from its own search space where it has one, else the
    values it tried. The final run's changes (its rate scaled for its length, its schedule following the
    clock) are how autofit trains its winner, not a search."""
    space = search_space(record["base"] if not record.get("start_plan") else _started(record))
    tried: dict[str, set] = {}
    for r in record["rounds"]:
        if r["stage"] == "final":
            continue
        for c in r["candidates"]:
            for k, v in c["changes"].items():
                tried.setdefault(k, set()).add(json.dumps(v))
    out: dict[str, Any] = {}
    for key, values in tried.items():
        if key in space:
            s = space[key]
            out[key] = {"type": "float", "low": s["low"], "high": s["high"], "log": s["log"]}
        else:
            out[key] = sorted(json.loads(v) for v in values)
    return out or {"optim.lr": {"type": "float", **search_space(record["base"])["optim.lr"]}}


def _started(record: dict[str, Any]) -> dict[str, Any]:
    from gradwise.config.load import apply_overrides

    return apply_overrides(copy.deepcopy(record["base"]), record["start_plan"]["overrides"])


def tune_arm(task: str, base: list[str], budget: str, tmp: Path, record: dict[str, Any]) -> dict[str, Any]:
    space = tune_space(record)
    (tmp / "space.yaml").write_text(yaml.safe_dump(space))
    longest = max(r["steps"] for r in record["rounds"])
    start = [a for o in (record.get("start_plan") or {}).get("overrides", []) for a in ("--set", o)]
    seconds = parse_budget(budget).amount
    wall = gradwise(["tune", *tune_args(base), *start, "--space", str(tmp / "space.yaml"), "--timeout", f"{seconds:.0f}",
                     "--set", f"train.max_steps={longest}", "--set", f"train.eval_every={max(1, longest // 4)}",
                     "--out-dir", str(tmp), "--study", "tune"], tmp / "tune.log")
    rows = [r for r in read_trials(tmp / "tune") if r["state"] == "COMPLETE" and r["value"] is not None]
    best = min(rows, key=lambda r: r["value"])
    return {"arm": "tune (TPE + halving)", "wall": wall, "run": Path(best["run"]),
            "detail": f"{len(read_trials(tmp / 'tune'))} trials of {longest} steps over {', '.join(space)}"}


def bench(task: str, data: Path, budget: str, tmp: Path, which: list[str]) -> list[dict[str, Any]]:
    base = task_args(task, data, tmp / "cache")
    warm(base, tmp)
    arms = [autofit_arm(task, base, budget, tmp / "autofit")]
    if "preset" in which:
        arms.append(preset_arm(task, base, budget, tmp / "preset"))
    if "tune" in which:
        arms.append(tune_arm(task, base, budget, tmp / "tune", arms[0]["record"]))
    for a in arms:
        a.update(scores(a["run"], task))
        print(f"  {task:<8} {a['arm']:<22} val {a['val']:.4f} test {a['test']:.4f} | {a['wall']:.0f} s | "
              f"{a['detail']}", flush=True)
    return arms


def warm(base: list[str], tmp: Path) -> None:
    """Tokenize (and train the tokenizer) once, into the shared cache, so that no arm pays for it."""
    for sub in ("autofit", "preset", "tune"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    gradwise(["train", *base, "--set", "train.max_steps=1", "--set", "train.test_eval=false", *out(tmp, "warm")],
             tmp / "warm.log")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="10m", help="each arm's wall clock (default 10m)")
    ap.add_argument("--tasks", default="lm,classify", help="lm, classify or both (default)")
    ap.add_argument("--arms", default="preset,tune", help="the arms beside autofit (default: preset,tune)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep every arm's runs under this folder (one per task), to read autofit.json afterwards")
    args = ap.parse_args(argv)
    rows: list[tuple[str, dict[str, Any]]] = []
    for task in args.tasks.split(","):
        data = TASKS[task]
        if not data.is_file():
            print(f"skipped {task}: {data} not found")
            continue
        if args.keep is not None and (args.keep / task).exists():
            print(f"error: {args.keep / task} exists; pass a --keep folder that does not hold a {task} run yet")
            return 2
        where = (contextlib.nullcontext(str(args.keep / task)) if args.keep is not None
                 else tempfile.TemporaryDirectory(prefix=f"gradwise-autofit-{task}-"))
        with where as tmp:
            rows += [(task, a) for a in bench(task, data, args.budget, Path(tmp), args.arms.split(","))]
    if not rows:
        return 0
    lines = ["| task | arm | val (whole split) | test | wall s | what ran |", "|---|---|--:|--:|--:|---|"]
    for task, a in rows:
        metric = "macro-F1" if task == "classify" else "bpb"
        lines.append(f"| {task} ({metric}) | {a['arm']} | {a['val']:.4f} | {a['test']:.4f} | {a['wall']:.0f} | "
                     f"{a['detail']} |")
    verdicts = []
    for task in dict.fromkeys(t for t, _ in rows):
        arms = {a["arm"]: a for t, a in rows if t == task}
        better = (lambda x, y: x >= y) if task == "classify" else (lambda x, y: x <= y)
        af = arms["autofit"]
        wins = [name for name, a in arms.items() if name != "autofit" and better(af["val"], a["val"])]
        verdicts.append(f"{task}: autofit's validation score is at least as good as {len(wins)} of "
                        f"{len(arms) - 1} other arms ({', '.join(wins) or 'none'}).")
    lines += [""] + verdicts
    print("\n" + "\n".join(lines))
    if args.record:
        append_record(f"autofit vs the default preset and tune, {args.budget} each", "\n".join(lines),
                      ["each arm a whole gradwise process, one after the other; scores re-evaluated on the whole "
                       "val split; the data cache warmed once before the arms"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
