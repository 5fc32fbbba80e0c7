"""Classification benchmark on fortunes4.jsonl: the TF-IDF baseline, the n-gram bag, the LSTM, a GPT classifier
and what `--task classify` uses, over several seeds (each seed its own stratified 80/10/10 split).

Every model is early-stopped on validation loss and evaluated once, at its best checkpoint, on the test split.
The baseline is the one every run fits beside itself (TF-IDF + logistic regression, C chosen on validation).

  majority   always the most frequent training class (the floor any model must clear)
  baseline   TF-IDF word 1-2 + char_wb 2-5-grams, logistic regression (scikit-learn), from each run's summary
  ngram      the `classify-ngram` preset: hashed word and character n-grams, a bag of learned vectors
  lstm       the `classify-lstm` preset: BPE 2,000 from the training texts, biLSTM, mean pool
  gpt        the `classify-gpt` preset: BPE 2,000, a small GPT (rope, QK-norm, mean pool) from random weights
  default    what `gradwise train --task classify` trains (gradwise.config.load.CLASSIFY_PRESET)

    python3 bench/classify.py --record                    # tens of minutes on 2 cores; appends to docs/benchmarks.md
    python3 bench/classify.py --models ngram --seeds 1337 --steps 50   # smoke check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from benchrecord import RECORD_FILE, append_record, paired, seed_list, spread

from gradwise.config.load import CLASSIFY_PRESET
from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.tasks.classify_metrics import classification_report
from gradwise.training.run import train

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "fortunes4.jsonl"
MODELS = {
    "ngram": ("classify-ngram", []),
    "lstm": ("classify-lstm", []),
    "gpt": ("classify-gpt", []),
}


def majority(data: Path, seed: int) -> dict:
    texts, labels = read_labelled(data)
    idx = stratified_split(labels, [0.8, 0.1, 0.1], seed)
    classes = sorted(set(labels))
    top = Counter(labels[i] for i in idx["train"]).most_common(1)[0][0]
    y = np.array([classes.index(labels[i]) for i in idx["test"]])
    r = classification_report(y, np.full_like(y, classes.index(top)), classes)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "seconds": 0.0}


def paired_against_baseline(results: dict[str, list[dict]]) -> list[str]:
    """Each model minus the baseline on the same split, seed by seed: the seeds' spread of the splits cancels."""
    base = [r["macro_f1"] for r in results["baseline"]]
    out = []
    for name, rows in results.items():
        if name in ("majority", "baseline") or len(rows) != len(base) or len(rows) < 2:
            continue
        difference, wins = paired([r["macro_f1"] - b for r, b in zip(rows, base, strict=True)])
        out.append(f"- {name} minus the baseline, test macro-F1 on the same split: {difference} (mean ± standard "
                   f"error over {len(rows)} seeds); at least the baseline's on {wins} of {len(rows)}")
    return ["", *out] if out else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--seeds", default="1337,1,2", help="A..B or comma-separated; each seed is its own split")
    ap.add_argument("--models", default="ngram,lstm,gpt,default", help=f"of {', '.join([*MODELS, 'default'])}")
    ap.add_argument("--steps", type=int, help="cap every run's steps (smoke check)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every gradwise model (a recipe to try; repeatable)")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} not found; pass --data PATH to fortunes4.jsonl")
        return 0
    seeds = seed_list(args.seeds)
    models = args.models.split(",")
    default_name = next((k for k, (preset, extra) in MODELS.items() if preset == CLASSIFY_PRESET and not extra), None)
    results: dict[str, list[dict]] = {"majority": [], "baseline": [], **{m: [] for m in models if m != "default"}}
    with tempfile.TemporaryDirectory(prefix="gradwise-cls-") as tmp:
        for seed in seeds:
            results["majority"].append(majority(data, seed))
            common = [f"data.path={json.dumps(str(data.resolve()))}", f"out_dir={json.dumps(tmp)}",
                      f"data.cache_dir={json.dumps(tmp + '/cache')}", f"seed={seed}",
                      *([f"train.max_steps={args.steps}"] if args.steps else []), *args.overrides]
            for name in results:
                if name in ("majority", "baseline"):
                    continue
                preset, extra = MODELS[name]
                t0 = time.perf_counter()
                s = train(preset, overrides=[*common, *extra, f"name={name}-{seed}"], quiet=True).summary
                seconds = time.perf_counter() - t0
                results[name].append({"accuracy": s["test_accuracy"], "macro_f1": s["test_macro_f1"],
                                      "val_macro_f1": s["best_val_metrics"]["macro_f1"],
                                      "seconds": seconds, "steps": s["steps"]})
                if len(results["baseline"]) < seeds.index(seed) + 1:
                    b = s["baseline"]
                    results["baseline"].append({"accuracy": b["test"]["accuracy"], "macro_f1": b["test"]["macro_f1"],
                                                "val_macro_f1": b["val"]["macro_f1"], "seconds": b["seconds"],
                                                "c": b["c"]})
                print(f"  seed {seed} {name:<8} val macro-F1 {s['best_val_metrics']['macro_f1']:.4f} | "
                      f"test acc {s['test_accuracy']:.4f} macro-F1 {s['test_macro_f1']:.4f} "
                      f"({seconds:.0f}s, {s['steps']} steps) | baseline val {s['baseline']['val']['macro_f1']:.4f} "
                      f"test {s['baseline']['test']['macro_f1']:.4f}",
                      flush=True)

    lines = [f"Seeds {', '.join(map(str, seeds))} (each its own split); mean ± half the range over the seeds. "
             "Seconds: the whole `train` call (tokenizing, baseline, training, test)."
             + (f" Overrides: `{' '.join(args.overrides)}`." if args.overrides else ""), "",
             "| model | val macro-F1 | test macro-F1 | test accuracy | seconds |", "|---|--:|--:|--:|--:|"]
    for name, rows in results.items():
        if not rows:
            continue
        label = f"{name} (the default)" if name == default_name and "default" in models else name
        val = spread([r["val_macro_f1"] for r in rows]) if all("val_macro_f1" in r for r in rows) else "-"
        lines.append(f"| {label} | {val} | {spread([r['macro_f1'] for r in rows])} | {spread([r['accuracy'] for r in rows])} | "
                     f"{spread([r['seconds'] for r in rows], 0)} |")
    lines += paired_against_baseline(results)
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("classification against the baseline (fortunes4)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
