"""Which validation score should choose a classifier's checkpoint? One long run per split, every evaluation
also scored on test (here, in the benchmark, never in gradwise), then each rule's choice read off the curve.

A classifier trained past its val-loss minimum grows confident: its plain val loss rises on the few texts it
gets wrong while its decisions keep improving, so the loss picks an early checkpoint. The rules compared:

  loss        the plain val loss (the presets' `train.best_on: loss`)
  calibrated  the val loss at the best temperature (`val_calibrated_loss`, one scalar fitted on val)
  macro_f1    the val macro-F1 (noisy on a few hundred texts: steps of a few hundredths)
  last        the last evaluation (no choice at all)

Each rule's test macro-F1 is compared with the TF-IDF + logistic regression baseline the run fits beside itself,
split by split (each seed its own stratified 80/10/10 split).

    python3 bench/classify_selection.py --seeds 40..49 --record     # about 2 minutes a seed on 2 cores
    python3 bench/classify_selection.py --seeds 1 --steps 200       # smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchrecord import RECORD_FILE, append_record, paired, seed_list, spread

from gradwise.tasks.classify import ClassifyTask
from gradwise.training.run import train

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "fortunes4.jsonl"
RULES = {
    "loss": lambda e: e["val_loss"],
    "calibrated": lambda e: e["val_calibrated_loss"],
    "macro_f1": lambda e: 1.0 - e["val_macro_f1"],
}


class TestAtEveryEval:
    """Wraps the classify task's evaluation so that each validation is followed by a test evaluation of the
    same weights, kept here: the curve of test scores a benchmark needs to judge a selection rule."""

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []
        self._original = ClassifyTask.evaluate

    def __enter__(self) -> TestAtEveryEval:
        original, points = self._original, self.points

        def evaluate(task, model, split, device, autocast_dtype, fixed_subset, windows=None):  # noqa: ANN001, ANN202
            res = original(task, model, split, device, autocast_dtype, fixed_subset, windows)
            if split == "val":
                test = original(task, model, "test", device, autocast_dtype, fixed_subset, windows)
                points.append({"val_loss": res.loss, **{f"val_{k}": v for k, v in res.scalars.items()},
                               "test_macro_f1": test.scalars["macro_f1"]})
            return res

        ClassifyTask.evaluate = evaluate
        return self

    def __exit__(self, *exc: object) -> None:
        ClassifyTask.evaluate = self._original


def choose(points: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    trained = points[1:]  # step 0 is the untrained model
    out = {name: min(trained, key=rule) for name, rule in RULES.items()}  # min keeps the first of equals
    out["last"] = trained[-1]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--seeds", default="40..49", help="a range A..B or a comma-separated list; each its own split")
    ap.add_argument("--steps", type=int, default=6000, help="each run's steps, on one cosine")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} not found; pass --data PATH to fortunes4.jsonl")
        return 0
    seeds = seed_list(args.seeds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gradwise-sel-") as tmp:
        for seed in seeds:
            t0 = time.perf_counter()
            with TestAtEveryEval() as probe:
                s = train("classify-ngram", overrides=[
                    f"data.path={json.dumps(str(data.resolve()))}", f"out_dir={json.dumps(tmp)}",
                    f"data.cache_dir={json.dumps(f'{tmp}/cache-{seed}')}", f"seed={seed}", f"name=s{seed}",
                    f"train.max_steps={args.steps}", f"train.eval_every={args.eval_every}", "train.patience=null",
                    *args.overrides], quiet=True).summary
            picked = choose(probe.points)
            row = {"seed": seed, "baseline": s["baseline"]["test"]["macro_f1"], "seconds": time.perf_counter() - t0,
                   **{name: p["test_macro_f1"] for name, p in picked.items()},
                   **{f"{name}_at": probe.points.index(p) * args.eval_every for name, p in picked.items()}}
            rows.append(row)
            print(f"  seed {seed}: baseline {row['baseline']:.4f} | " + " | ".join(
                f"{n} {row[n]:.4f} @ {row[n + '_at']}" for n in [*RULES, "last"]) + f" ({row['seconds']:.0f} s)",
                flush=True)
    names = [*RULES, "last"]
    lines = [f"Seeds {args.seeds} (each its own split): the `classify-ngram` preset trained {args.steps:,} steps on one "
             f"cosine without early stopping, evaluated every {args.eval_every} steps on val and (here only) on "
             "test; each rule's checkpoint read off the curve. Mean ± half the range over the seeds."
             + (f" Overrides: `{' '.join(args.overrides)}`." if args.overrides else ""), "",
             "| rule | step chosen (median) | test macro-F1 | minus the baseline | splits at or above it |",
             "|---|--:|--:|--:|--:|"]
    lines.append(f"| baseline (TF-IDF + LR) | - | {spread([r['baseline'] for r in rows])} | - | - |")
    for n in names:
        difference, wins = paired([r[n] - r["baseline"] for r in rows])
        lines.append(f"| {n} | {statistics.median(r[n + '_at'] for r in rows):,.0f} | {spread([r[n] for r in rows])} | "
                     f"{difference} | {wins} of {len(rows)} |")
    lines.append("")
    lines.append("minus the baseline: mean ± its standard error over the splits.")
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("classify: which validation score chooses the checkpoint (fortunes4)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
