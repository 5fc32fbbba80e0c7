"""``gradwise data stats|check``: the command line of the data checks (see gradwise/data/quality/check.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gradwise.cli.args import add_json, add_overrides, add_task
from gradwise.config.load import CLASSIFY_PRESET, classify_preset


def add_data_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="corpus statistics, duplicates and split leakage",
                       description="Know your data before you trust a score: statistics of a corpus, and its "
                       "duplicates and leakage across the train/val/test split gradwise makes.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for name, help_text in (("stats", "sizes, tokens, length histogram, labels, invalid records"),
                            ("check", "exact and near duplicates, leakage across splits, LM contamination, "
                                      "label conflicts")):
        q = data_sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        q.add_argument("corpus", help="text file, directory, .jsonl (LM or labelled) or .csv (labelled)")
        q.add_argument("--config", help="config file or preset whose tokenizer and split to use (default: the "
                       f"'default' preset, or '{CLASSIFY_PRESET}' for labelled data)")
        add_task(q, "default: classify for .csv and for .jsonl records with a label field, else lm")
        add_overrides(q, "override a config key, e.g. --set data.split_chunks=20 (repeatable)")
        add_json(q, "print the full result as JSON")
        if name == "check":
            q.add_argument("--threshold", type=float, help="near-duplicate Jaccard threshold (default 0.8)")
            q.add_argument("--ngram", type=int, help="words in a contamination n-gram (default 13)")
            q.add_argument("--dedupe", action="store_true", help="check the corpus as --dedupe would train on it")
            q.add_argument("--out", metavar="FILE", help="also write the JSON report here (e.g. data_check.json)")
            q.add_argument("--strict", action="store_true", help="exit with status 1 when there is a warning")


def guess_task(corpus: str, label_field: str = "label") -> str:
    """classify for a .csv, or a .jsonl whose first record has a label field; lm otherwise."""
    p = Path(corpus).expanduser()
    if p.suffix.lower() == ".csv":
        return "classify"
    if p.suffix.lower() in (".jsonl", ".ndjson") and p.is_file():
        from gradwise.data.sources import iter_jsonl

        for _, record in iter_jsonl(p):
            return "classify" if label_field in record else "lm"
    return "lm"


def cmd_data(args: argparse.Namespace) -> int:
    from gradwise.api import check_data, data_stats

    overrides = [f"data.path={json.dumps(args.corpus)}", *args.overrides]
    label_field = next((o.split("=", 1)[1].strip('"') for o in args.overrides if o.startswith("data.label_field=")),
                       "label")
    task = args.task or guess_task(args.corpus, label_field)
    overrides.append(f"task={task}")
    config = args.config or (classify_preset(overrides) if task == "classify" else None)
    if args.data_command == "stats":
        from gradwise.tools.data_stats import format_stats

        stats = data_stats(config, overrides=overrides)
        print(json.dumps(stats, indent=1, ensure_ascii=False) if args.json else format_stats(stats))
        return 0
    if args.threshold is not None:
        overrides.append(f"data.near_threshold={args.threshold}")
    if args.ngram is not None:
        overrides.append(f"data.ngram={args.ngram}")
    if args.dedupe:
        overrides.append("data.dedupe=true")
    report = check_data(config, overrides=overrides)
    if args.out:
        from gradwise.core.rundir import write_json

        write_json(Path(args.out), report)
    if args.json:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print(format_check(report))
    warned = any(v["level"] == "warn" for v in report["verdicts"])
    return 1 if args.strict and warned else 0


def format_check(report: dict[str, Any]) -> str:
    """Verdicts first, then a few examples of each finding with where to find them."""
    u = report["units"]
    lines = [f"checked {report['corpus']}: {u['train']:,} train, {u['val']:,} val, {u['test']:,} test "
             f"{report['unit']}s in {report['seconds']}s"]
    marks = {"warn": "WARNING", "info": "note", "ok": "ok"}
    lines += [f"  {marks[v['level']]:>7}  {v['text']}" for v in report["verdicts"]]
    examples = [("exact copy", e) for e in report["exact"]["examples"]]
    examples += [("near copy", e) for e in report["near"]["examples"]]
    if examples:
        lines.append("examples:")
        for kind, e in examples[:8]:
            lines.append(f"  {kind} (similarity {e['similarity']}): {_where(e['a'])} ~ {_where(e['b'])}")
            lines.append(f"      {e['a']['text'][:70]!r}")
    for name, c in report.get("contamination", {}).items():
        for e in c["examples"][:2]:
            lines.append(f"  shared {report['params']['ngram']}-word run in {name} near token {e['token']:,}: "
                         f"{e['ngram'][:70]!r}")
    for e in report.get("labels", {}).get("examples", [])[:3]:
        lines.append("  label conflict: " + " vs ".join(f"{_where(x)} [{x.get('label')}]" for x in e["units"]))
    return "\n".join(lines)


def _where(unit: dict[str, Any]) -> str:
    return f"{unit['split']} line {unit['line']}" if "line" in unit else f"{unit['split']} token {unit['token']:,}"

