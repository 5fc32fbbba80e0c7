"""``gradwise data check``: duplicates and leakage across the train/val/test split gradwise makes.

It reads what training reads: for a language-model corpus the token store and the chunked split (decoded
back to text, range by range), for a labelled set the records and the stratified split. Findings:

- exact duplicates (normalised text), within the corpus and across splits;
- near duplicates (MinHash/LSH, exact Jaccard ≥ ``near_threshold`` on 3-word shingles);
- LM contamination: the share of validation and test windows (the windows evaluation scores) that
  contain a run of ``ngram`` words also found in the training split;
- label conflicts: the same or nearly the same text under different labels.

Each finding becomes one verdict line with numbers; the whole report is JSON (``data_check.json``).
The pass streams (token ranges in slices, records one by one); memory grows with the number of distinct
units and training words (8 bytes per word for the n-gram table), not with the text itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from gradwise.core.rundir import write_json
from gradwise.data.quality import contamination
from gradwise.data.quality.textunits import length_histogram, split_paragraphs
from gradwise.data.quality.units import SPLITS, CheckParams, UnitTable, analyse_units

REPORT_FORMAT = 3  # bump whenever what a report holds or how it is computed changes: old cache entries die


# ---------------------------------------------------------------- language-model corpora

def check_lm(corpus: Any, block_size: int, params: CheckParams, parallel: bool | None = None) -> dict[str, Any]:
    """Check a prepared LM corpus (``gradwise.data.Corpus``) as training would split it.

    The contamination half runs in a second process while this one builds the unit table (``parallel``:
    None decides by corpus size and CPUs); the report is the same either way."""
    t0 = time.perf_counter()
    background = None
    try:
        background = contamination.start(corpus, block_size, params.ngram, parallel)
        table = UnitTable("token")  # its word hashes are stable across processes: they decide near copies
        lengths: list[int] = []
        for split_index, name in enumerate(SPLITS):
            for start, text, token_ratio in contamination.decoded_slices(corpus, name):
                for offset, paragraph in split_paragraphs(text):
                    lengths.append(len(paragraph))
                    if len(paragraph.strip()) >= params.min_chars:
                        table.add(paragraph, split_index, start + int(offset * token_ratio))
        report = analyse_units(table, params)
        report["unit"] = "paragraph"
        report["stats"] = {"paragraphs": len(lengths), "lengths_of": "paragraphs", "lengths": length_histogram(lengths)}
        report["contamination"] = (background.result() if background else
                                   contamination.contamination(corpus, block_size, params.ngram))
    finally:
        if background:
            background.close()
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


# ---------------------------------------------------------------- labelled records

def check_records(texts: list[str], labels: list[Any], index: dict[str, np.ndarray], lines: list[int],
                  params: CheckParams) -> dict[str, Any]:
    """Check labelled records under their stratified split (``index``: record indices per split)."""
    t0 = time.perf_counter()
    split_of = np.zeros(len(texts), dtype=np.int64)
    for i, name in enumerate(SPLITS):
        split_of[index[name]] = i
    table = UnitTable("line")
    for r, text in enumerate(texts):
        table.add(text, int(split_of[r]), lines[r], labels[r])
    report = analyse_units(table, params)
    report["unit"] = "record"
    report["stats"] = {"records": len(texts), "lengths_of": "records",
                       "lengths": length_histogram([len(t) for t in texts])}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


# ---------------------------------------------------------------- verdicts, files, cache

def verdicts(report: dict[str, Any], warn_contamination: float = 1.0) -> list[tuple[str, str]]:
    """(level, line) per finding: 'warn' for leakage a test score should not live with, 'info' otherwise."""
    out: list[tuple[str, str]] = []
    word = "examples" if report["unit"] == "record" else "paragraphs"
    units = report["units"]
    for a, b in (("test", "train"), ("val", "train"), ("test", "val")):
        exact, near = report["exact"]["cross"][f"{a}_in_{b}"], report["near"]["cross"][f"{a}_in_{b}"]
        if exact + near:
            detail = ", ".join(x for x in (f"{exact:,} exact" if exact else "", f"{near:,} near" if near else "") if x)
            out.append(("warn", f"{_pct(exact + near, units[a])} of {a} {word} have a copy in {b} "
                                f"({exact + near:,} of {units[a]:,}: {detail}); run with --dedupe or fix the corpus"))
    dup = report["exact"]["duplicate_units"]
    if dup:
        total = sum(units.values())
        out.append(("info", f"{_pct(dup, total)} of {word} repeat an earlier one exactly ({dup:,} of {total:,} in "
                            f"{report['exact']['duplicate_groups']:,} groups); --dedupe drops them"))
    if report["near"]["pairs"]:
        pairs = report["near"]["pairs"]
        out.append(("info", f"{pairs:,} near-copy pair{'s' if pairs > 1 else ''} among distinct {word} "
                            f"(Jaccard >= {report['params']['near_threshold']}, within or across splits)"))
    for name, c in report.get("contamination", {}).items():
        if c["contaminated"]:
            level = "warn" if c["percent"] >= warn_contamination else "info"
            out.append((level, f"{c['percent']:.2f}% of {name} windows share a {report['params']['ngram']}-word run "
                               f"with train ({c['contaminated']:,} of {c['windows']:,})"))
    labels = report.get("labels")
    if labels and (labels["exact_conflict_texts"] or labels["near_conflict_pairs"]):
        out.append(("warn", f"{labels['exact_conflict_texts']:,} texts appear under different labels "
                            f"({labels['exact_conflict_records']:,} records) and {labels['near_conflict_pairs']:,} "
                            "near-copy pairs disagree on their label; fix the labels or drop those records"))
    if not out:
        out.append(("ok", f"no duplicates or leakage found across train/val/test ({sum(units.values()):,} {word})"))
    return out


def _pct(part: int, whole: int) -> str:
    """3.1%, 0.047%, 31%: two significant digits, so a small share never reads as 0.0%."""
    if not whole:
        return "0%"
    value = 100 * part / whole
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def finish_report(report: dict[str, Any], corpus: str, task: str, params: CheckParams) -> dict[str, Any]:
    report = {"format": REPORT_FORMAT, "corpus": corpus, "task": task, "params": params.to_dict(), **report}
    report["verdicts"] = [{"level": level, "text": text} for level, text in verdicts(report)]
    return report


def cached(cache_root: Path, key_parts: list[str], compute: Any) -> dict[str, Any]:
    """The report for ``key_parts`` from the cache, or computed and stored: a rerun on the same data is free."""
    key = hashlib.sha256("|".join([f"check-v{REPORT_FORMAT}", *key_parts]).encode()).hexdigest()[:24]
    path = cache_root / "checks" / f"{key}.json"
    if path.is_file():
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except (OSError, json.JSONDecodeError):
            pass  # a damaged entry is recomputed
    report = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    return report


def data_warnings(report: dict[str, Any] | None) -> list[str]:
    """The data check's findings a test score should not live with (details: data_check.json)."""
    return [v["text"] for v in (report or {}).get("verdicts", []) if v["level"] == "warn"]
