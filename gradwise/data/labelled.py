"""Labelled text for classification: JSONL or CSV records, a stratified split, padded batches.

Each class is split train/val/test by the same fractions (stratified), so a rare class is present in every
split. Multi-label records (a set of labels each) are stratified by their rarest label. The tokenizer is trained on the training texts only. Texts are cut to ``max_len`` tokens; batches
are right-padded with the tokenizer's end-of-text id, and a model finds each length from that padding.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradwise.core.errors import DataError
from gradwise.data.sources import iter_jsonl
from gradwise.data.tokenizers import Tokenizer


@dataclass
class LabelledSplit:
    name: str
    ids: list[np.ndarray]  # token ids of each text (already cut to max_len, never empty)
    labels: np.ndarray  # class index of each text (N,), or multi-hot rows (N, classes) for multi-label
    texts: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def padded(self, index: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (B, T) right-padded with pad_id, labels (B,)) for the examples at ``index``."""
        width = max(len(self.ids[i]) for i in index)
        tokens = np.full((len(index), width), pad_id, dtype=np.int64)
        for row, i in enumerate(index):
            tokens[row, : len(self.ids[i])] = self.ids[i]
        return tokens, self.labels[index]

    def batch(self, seed: int, step: int, micro: int, batch_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """A training micro-batch: a pure function of (seed, step, micro), like the LM batches."""
        rng = np.random.default_rng([seed, step, micro])
        return self.padded(rng.integers(0, len(self), size=batch_size), pad_id)


Label = str | tuple[str, ...]  # one label, or a multi-label record's sorted set of labels


@dataclass
class Records:
    """Labelled records as read, with the file line of each; ``problems`` lists skipped invalid records."""

    texts: list[str]
    labels: list[Label]
    lines: list[int]
    problems: list[tuple[int, str]]


def read_labelled(path: str | Path, text_field: str = "text", label_field: str = "label", multi_label: bool = False,
                  separator: str = ",") -> tuple[list[str], list[Label]]:
    """Texts and their labels (as strings) from a .jsonl or .csv file, with errors that name the line.

    Multi-label: a JSON list of labels, or one string cut at ``separator``; an empty set is allowed."""
    r = read_records(path, text_field, label_field, multi_label, separator)
    return r.texts, r.labels


def read_records(path: str | Path, text_field: str = "text", label_field: str = "label", multi_label: bool = False,
                 separator: str = ",", lenient: bool = False) -> Records:
    """Like :func:`read_labelled`, keeping line numbers. ``lenient``: an invalid record (no text, no label) is
    listed in ``problems`` and skipped instead of stopping the read; a file that is not JSON/CSV still stops it."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data path '{path}' does not exist or is not a file; classification reads a .jsonl or .csv")
    out = Records([], [], [], [])

    def take(text: object, label: object, lineno: int) -> None:
        try:
            _append(out.texts, out.labels, text, label, f"{p}:{lineno}", text_field, label_field, multi_label,
                    separator)
            out.lines.append(lineno)
        except DataError as exc:
            if not lenient:
                raise
            msg, prefix = str(exc), f"{p}:{lineno} "
            out.problems.append((lineno, msg[len(prefix):] if msg.startswith(prefix) else msg))

    try:
        if p.suffix.lower() == ".csv":
            with open(p, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [f for f in (text_field, label_field) if f not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{p} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])}); "
                                    "set data.text_field / data.label_field")
                for lineno, row in enumerate(reader, 2):
                    take(row.get(text_field), row.get(label_field), lineno)
        else:
            for lineno, record in iter_jsonl(p):
                take(record.get(text_field), record.get(label_field), lineno)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not valid UTF-8 (byte {exc.start}); convert it to UTF-8 first") from None
    if not out.texts:
        if out.problems:
            raise DataError(f"{p} holds no valid labelled record (line {out.problems[0][0]}: {out.problems[0][1]})")
        raise DataError(f"{p} holds no labelled records")
    labels = out.labels
    if multi_label:
        if not any(labels):
            raise DataError(f"{p} has no labels at all in field '{label_field}'; set data.label_field")
    elif len(set(labels)) < 2:
        raise DataError(f"{p} has only one label ({labels[0]!r}); classification needs at least two classes")
    return out


def label_set(labels: list[Label]) -> list[str]:
    """The sorted classes that occur in ``labels`` (single- or multi-label)."""
    out: set[str] = set()
    for label in labels:
        out.update(label if isinstance(label, tuple) else (label,))
    return sorted(out)


def _append(texts: list[str], labels: list[Label], text: object, label: object, where: str, text_field: str,
            label_field: str, multi_label: bool, separator: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where} has no text in field '{text_field}'; set data.text_field or fix the record")
    if multi_label:
        if isinstance(label, str):
            label = label.split(separator)
        if not isinstance(label, list) or any(isinstance(x, list | dict) or x is None for x in label):
            raise DataError(f"{where} has no list of labels in field '{label_field}' (a JSON list, or text "
                            f"separated by {separator!r}); set data.label_field or fix the record")
        texts.append(text)
        labels.append(tuple(sorted({str(x).strip() for x in label} - {""})))
        return
    if label is None or label == "" or isinstance(label, list | dict):
        raise DataError(f"{where} has no single label in field '{label_field}'; set data.label_field or fix the record")
    texts.append(text)
    labels.append(str(label))


def stratified_split(labels: list[Label], fractions: list[float], seed: int) -> dict[str, np.ndarray]:
    """Indices of train/val/test: each class shuffled (seeded) and cut by ``fractions``.

    A multi-label record counts under its rarest label, so rare labels reach every split."""
    if any(isinstance(x, tuple) for x in labels):
        freq: dict[str, int] = {}
        for tup in labels:
            for x in tup:
                freq[x] = freq.get(x, 0) + 1
        labels = [min(tup, key=lambda x: (freq[x], x)) if tup else "" for tup in labels]
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    rare = sorted((len(v), k) for k, v in by_class.items() if len(v) < 3 and k != "")
    if rare:  # it would sit in train alone: never validated, never tested, and scored as a class nobody saw
        n, label = rare[0]
        more = f" (and {len(rare) - 1} more so rare)" if len(rare) > 1 else ""
        raise DataError(f"class {label!r} has {n} record{'s' if n > 1 else ''}{more}: every class needs at least 3, "
                        "one each for train, val and test; add records, merge it into another class, or drop it")
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
        out["val"] += idx[:n_val].tolist()
        out["test"] += idx[n_val:n_val + n_test].tolist()
        out["train"] += idx[n_val + n_test:].tolist()
    for name, idx in out.items():
        if not idx:
            raise DataError(f"the {name} split is empty: too few records per class; add data or change data.split")
    return {name: np.array(sorted(idx)) for name, idx in out.items()}


def encode_split(name: str, texts: list[str], labels: list[Label], index: np.ndarray, classes: list[str],
                 tokenizer: Tokenizer, max_len: int) -> LabelledSplit:
    chosen = [texts[i] for i in index]
    ids = [row[:max_len] for row in tokenizer.encode_batch(chosen)]
    for row, text in zip(ids, chosen, strict=True):
        if len(row) == 0:
            raise DataError(f"a text encodes to no tokens: {text[:40]!r}")
    class_index = {c: i for i, c in enumerate(classes)}
    if any(isinstance(labels[i], tuple) for i in index):
        hot = np.zeros((len(index), len(classes)), dtype=np.float32)
        for row, i in enumerate(index):
            hot[row, [class_index[c] for c in labels[i]]] = 1.0
        return LabelledSplit(name, ids, hot, chosen)
    return LabelledSplit(name, ids, np.array([class_index[labels[i]] for i in index], dtype=np.int64), chosen)
