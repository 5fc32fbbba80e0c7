"""``gradwise data stats``: what is in a corpus before anything trains on it.

Sizes (bytes, characters, documents or records, paragraphs), tokens under the configured tokenizer and
per split, characters the tokenizer cannot represent, a length distribution, and for labelled sets the
label counts, the imbalance ratio, texts cut at ``model.block_size`` and every invalid record with its line.
It reads through the same sources, tokenizer and split as training does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwise.config.schema import Config
from gradwise.core.errors import DataError
from gradwise.data import prepare_corpus
from gradwise.data.labelled import label_set, read_records
from gradwise.data.quality.textunits import length_histogram, split_paragraphs
from gradwise.data.sources import CorpusSource, iter_jsonl
from gradwise.hf.auto_tokenizer import load_hf_tokenizer
from gradwise.tasks import prepare_task
from gradwise.tasks.classify import ClassifyTask
from gradwise.training.run_config import resolve_train_config

BAR = 30


def lm_stats(cfg: Config) -> dict[str, Any]:
    d = cfg.data
    source = CorpusSource.from_config(d.path, d.format, d.text_field)
    problems = _jsonl_problems(source, d.text_field) if source.kind == "jsonl" else []
    n_bytes = sum(f.stat().st_size for f in source.files()) if source.kind != "builtin" else None
    chars = docs = 0
    doc_lengths, para_lengths = [], []
    current = 0
    blocking = [p for p in problems if p[1] != "empty text"]  # training skips empty texts, stops at the rest
    if not blocking:
        for piece in source.pieces():
            chars += len(piece.text)
            current += len(piece.text)
            para_lengths += [len(p) for _, p in split_paragraphs(piece.text)]
            if piece.ends_document:
                docs += 1
                doc_lengths.append(current)
                current = 0
    out: dict[str, Any] = {"task": "lm", "corpus": source.describe(), "bytes": n_bytes, "chars": chars,
                           "documents": docs, "paragraphs": len(para_lengths),
                           "invalid_records": [{"line": n, "problem": p} for n, p in problems]}
    if source.kind == "builtin":
        out["bytes"] = None
    by_docs = docs >= 20
    out["lengths_of"] = "documents" if by_docs else "paragraphs"
    out["lengths"] = length_histogram(doc_lengths if by_docs else para_lengths)
    if blocking:
        out["tokens"] = None  # training would stop at the first invalid record
        return out
    tok = None
    if cfg.model.arch == "hf":  # counted in the Hugging Face model's own tokens
        tok = load_hf_tokenizer(cfg.model.hf_path)
    corpus = prepare_corpus(d, tokenizer=tok)
    tok = corpus.tokenizer
    out["tokenizer"] = {"kind": tok.kind, "vocab_size": tok.vocab_size}
    out["tokens"] = corpus.store.n_tokens
    out["split_tokens"] = {k: s.n_tokens for k, s in corpus.splits.items()}
    out["chars_per_token"] = round(chars / max(1, corpus.store.n_tokens), 3)
    out["chars_outside_vocab"] = 0  # an LM tokenizer is trained on this corpus (byte BPE covers all text)
    return out


def _jsonl_problems(source: CorpusSource, field: str) -> list[tuple[int, str]]:
    assert source.path is not None
    problems = []
    for lineno, record in iter_jsonl(source.path):
        text = record.get(field)
        if field not in record:
            problems.append((lineno, f"no '{field}' field"))
        elif not isinstance(text, str):
            problems.append((lineno, f"field '{field}' is {type(text).__name__}, not text"))
        elif not text.strip():
            problems.append((lineno, "empty text"))
    return problems


def classify_stats(cfg: Config) -> dict[str, Any]:
    d = cfg.data
    if d.path is None:
        raise DataError("classification stats need labelled data: pass a .jsonl or .csv file")
    records = read_records(d.path, d.text_field, d.label_field, d.multi_label, d.label_separator, lenient=True)
    classes = label_set(records.labels)
    counts = {c: 0 for c in classes}
    for label in records.labels:
        for c in label if isinstance(label, tuple) else (label,):
            counts[c] += 1
    present = [n for n in counts.values() if n]
    out: dict[str, Any] = {
        "task": "classify", "corpus": str(d.path), "bytes": Path(d.path).expanduser().stat().st_size,
        "records": len(records.texts), "chars": sum(len(t) for t in records.texts),
        "label_counts": counts, "imbalance_ratio": round(max(present) / min(present), 2) if present else None,
        "invalid_records": [{"line": n, "problem": p} for n, p in records.problems],
        "lengths_of": "records", "lengths": length_histogram([len(t) for t in records.texts]),
    }
    if records.problems:
        out["tokens"] = None  # training stops at the first invalid record: fix those first
        return out
    task = ClassifyTask.prepare(cfg)
    tok = task.tokenizer
    lengths = {name: [len(x) for x in s.ids] for name, s in task.splits.items()}
    full = [len(ids) for ids in tok.encode_batch(records.texts)] if tok.kind in ("bpe", "ngram") else None
    out["tokenizer"] = {"kind": tok.kind, "vocab_size": tok.vocab_size, "trained_on": "train split"}
    out["split_records"] = {name: len(s) for name, s in task.splits.items()}
    out["tokens"] = int(sum(sum(v) for v in lengths.values()))
    out["cut_at_block_size"] = _cut_count(task, full)
    out["chars_outside_vocab"] = _chars_outside(task)
    return out


def _cut_count(task: Any, full: list[int] | None) -> dict[str, Any]:
    """Records longer than model.block_size tokens (their tail is cut before the model sees it)."""
    block = task.cfg.model.block_size
    if full is None:  # char tokenizer: one token per known character
        full = [len(t) for s in task.splits.values() for t in s.texts]
    n = sum(1 for x in full if x > block)
    return {"block_size": block, "records": n, "percent": round(100 * n / max(1, len(full)), 2)}


def _chars_outside(task: Any) -> dict[str, int] | int:
    """Characters of val/test texts a char tokenizer (trained on train) does not know: dropped when encoding."""
    tok = task.tokenizer
    if tok.kind != "char":
        return 0
    known = set(tok.chars)
    return {name: sum(1 for t in task.splits[name].texts for ch in t if ch not in known) for name in ("val", "test")}


def format_stats(stats: dict[str, Any]) -> str:
    """The terminal view: a few aligned lines and a histogram."""
    lines = [f"corpus        {stats['corpus']}"]
    if stats.get("bytes") is not None:
        lines.append(f"size          {stats['bytes']:,} bytes, {stats['chars']:,} characters")
    else:
        lines.append(f"size          {stats['chars']:,} characters")
    if stats["task"] == "lm":
        lines.append(f"documents     {stats['documents']:,} ({stats['paragraphs']:,} paragraphs)")
    else:
        lines.append(f"records       {stats['records']:,}" + (f" per split {stats['split_records']}"
                                                              if "split_records" in stats else ""))
    if stats.get("tokens") is not None:
        tok = stats["tokenizer"]
        per = stats.get("split_tokens")
        lines.append(f"tokens        {stats['tokens']:,} ({tok['kind']} tokenizer, vocab {tok['vocab_size']:,})"
                     + (f"; train {per['train']:,}, val {per['val']:,}, test {per['test']:,}" if per else ""))
        outside = stats["chars_outside_vocab"]
        if isinstance(outside, dict):
            lines.append(f"unknown chars val {outside['val']:,}, test {outside['test']:,} (not in the train-split "
                         "vocabulary: dropped when encoding)")
        if "cut_at_block_size" in stats:
            cut = stats["cut_at_block_size"]
            lines.append(f"cut texts     {cut['records']:,} records ({cut['percent']}%) are longer than "
                         f"model.block_size ({cut['block_size']}) tokens and lose their tail")
    if stats["task"] == "classify":
        counts = stats["label_counts"]
        width = max((len(c) for c in counts), default=0)
        lines.append(f"labels        {len(counts)} classes, imbalance (largest / smallest) {stats['imbalance_ratio']}")
        top = max(counts.values()) or 1
        for c, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {c:<{width}} {n:>8,} {'█' * max(1, round(BAR * n / top)) if n else ''}")
    h = stats["lengths"]
    if h["count"]:
        lines.append(f"length        {stats['lengths_of']} in characters: median {h['median']:,}, "
                     f"p25 {h['p25']:,}, p75 {h['p75']:,}, max {h['max']:,}")
        top = max(b["count"] for b in h["buckets"])
        for b in h["buckets"]:
            label = f"{b['from']:,}-{b['to']:,}"
            lines.append(f"  {label:>17} {b['count']:>8,} {'█' * max(1, round(BAR * b['count'] / top))}")
    bad = stats["invalid_records"]
    if bad:
        lines.append(f"invalid       {len(bad):,} records (training stops at the first): "
                     + "; ".join(f"line {b['line']}: {b['problem']}" for b in bad[:10])
                     + (" ..." if len(bad) > 10 else ""))
    return "\n".join(lines)


def check_data(config: Config | str | Path | None = None, *, overrides: list[str] | None = None) -> dict[str, Any]:
    """Duplicates and leakage across the split ``train`` would make of this config's corpus (the data_check.json
    report: counts, examples and one verdict per finding)."""
    cfg, _, _ = resolve_train_config(config, overrides)
    return prepare_task(cfg).data_check()


def data_stats(config: Config | str | Path | None = None, *, overrides: list[str] | None = None) -> dict[str, Any]:
    """Sizes, tokens, lengths and (for labelled data) label counts of this config's corpus."""

    cfg, _, _ = resolve_train_config(config, overrides)
    return classify_stats(cfg) if cfg.task == "classify" else lm_stats(cfg)
