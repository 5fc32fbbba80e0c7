"""Classification benchmark on fortunes4.jsonl: LSTM and GPT-backbone classifiers, test accuracy and macro-F1.

Every model sees the same stratified 80/10/10 split (seed 1337), is early-stopped on validation loss and
evaluated once, at its best checkpoint, on the test split. Rows:

  majority      always the most frequent training class (the floor any model must clear)
  lstm          the `classify-lstm` preset: BPE 2,000 from the training texts, biLSTM, mean pool
  gpt-scratch   a GPT (4 layers, width 128) with a class head, trained from random weights on the labels only
  gpt-pretrained  the same GPT first trained as a language model on the embedded Python-docs corpus (BPE 2,000,
                `--init-from`), then fine-tuned on the labels
  gpt-pretrained+lm  as above, plus an auxiliary LM loss on the labelled texts (objective.terms, weight 0.5)

    python3 bench/classify.py --record          # some minutes on 2 cores; appends to docs/benchmarks.md
    python3 bench/classify.py --steps 50        # smoke check
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
from benchrecord import RECORD_FILE, append_record

from gradwise.data.labelled import read_labelled, stratified_split
from gradwise.tasks.classify_metrics import classification_report
from gradwise.training.run import train

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "fortunes4.jsonl"
GPT = ["model.arch=gpt", "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=128",
       "model.dropout=0.1", "model.pool=mean"]


def majority(data: Path, seed: int) -> dict:
    texts, labels = read_labelled(data)
    idx = stratified_split(labels, [0.8, 0.1, 0.1], seed)
    classes = sorted(set(labels))
    top = Counter(labels[i] for i in idx["train"]).most_common(1)[0][0]
    y = np.array([classes.index(labels[i]) for i in idx["test"]])
    r = classification_report(y, np.full_like(y, classes.index(top)), classes)
    return {"test_accuracy": r["accuracy"], "test_macro_f1": r["macro_f1"], "train_seconds": 0.0, "steps": 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--steps", type=int, help="cap every run's steps (smoke check)")
    ap.add_argument("--pretrain-steps", type=int, default=1500, help="LM pretraining steps on the embedded corpus")
    ap.add_argument("--record", action="store_true", help=f"append the table to {RECORD_FILE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} not found; pass --data PATH to fortunes4.jsonl")
        return 0
    cap = [f"train.max_steps={args.steps}"] if args.steps else []
    rows: dict[str, dict] = {"majority": majority(data, 1337)}
    with tempfile.TemporaryDirectory(prefix="gradwise-cls-") as tmp:
        common = [f"data.path={json.dumps(str(data.resolve()))}", f"out_dir={json.dumps(tmp)}",
                  f"data.cache_dir={json.dumps(tmp + '/cache')}"]

        def run(name: str, config: str, overrides: list[str]) -> dict:
            t0 = time.perf_counter()
            s = train(config, overrides=[*overrides, f"name={name}"], quiet=True).summary
            print(f"  {name:<18} test acc {s['test_accuracy']:.4f} macro-F1 {s['test_macro_f1']:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
            return s

        rows["lstm"] = run("lstm", "classify-lstm", [*common, *cap])
        gpt_cls = [*common, *GPT, "optim.name=auto", "optim.lr=1e-3", "train.max_steps=600", *cap]
        rows["gpt-scratch"] = run("gpt-scratch", "classify-lstm", gpt_cls)
        lm = train("default", overrides=[f"out_dir={json.dumps(tmp)}", f"data.cache_dir={json.dumps(tmp + '/cache')}",
                                         "data.tokenizer=bpe", "data.vocab_size=2000", *GPT[1:5],
                                         "model.dropout=0.0", "train.batch_size=16",
                                         f"train.max_steps={args.steps or args.pretrain_steps}", "name=lm"],
                   quiet=True)
        print(f"  pretrained LM on the embedded corpus: val loss {lm.summary['best_val_loss']:.4f} "
              f"({lm.summary['train_seconds']:.0f}s)", flush=True)
        init = [*gpt_cls, f"model.init_from={json.dumps(str(lm.run_dir))}", "optim.lr=5e-4"]
        rows["gpt-pretrained"] = run("gpt-pretrained", "classify-lstm", init)
        rows["gpt-pretrained+lm"] = run("gpt-pretrained-lm", "classify-lstm",
                                        [*init, "objective.terms=[{name: classify}, {name: lm, weight: 0.5}]"])
        pretrain_s = lm.summary["train_seconds"]

    lines = ["| model | test accuracy | test macro-F1 | steps | train s |", "|---|--:|--:|--:|--:|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['test_accuracy']:.4f} | {s['test_macro_f1']:.4f} | {s['steps']} | "
                     f"{s['train_seconds']:.0f} |")
    lines.append("")
    lines.append(f"The pretrained rows also spent {pretrain_s:.0f} s pretraining the LM on the embedded corpus.")
    print("\n" + "\n".join(lines))
    if args.record:
        append_record("classification (fortunes4)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
