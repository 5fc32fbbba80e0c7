"""Labelled text for classification: JSONL or CSV records, a stratified split, padded batches.

Each class is split train/val/test by the same fractions (stratified), so a rare class is present in every
split. The tokenizer is trained on the training texts only. Texts are cut to ``max_len`` tokens; batches
are right-padded with the tokenizer's end-of-text id, and a model finds each length from that padding.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradwise.data.sources import iter_jsonl
from gradwise.data.tokenizers import Tokenizer
from gradwise.errors import DataError


@dataclass
class LabelledSplit:
    name: str
    ids: list[np.ndarray]  # token ids of each text (already cut to max_len, never empty)
    labels: np.ndarray  # class index of each text
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


def read_labelled(path: str | Path, text_field: str = "text", label_field: str = "label") -> tuple[list[str], list[str]]:
    """Texts and their labels (as strings) from a .jsonl or .csv file, with errors that name the line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data path '{path}' does not exist or is not a file; classification reads a .jsonl or .csv")
    texts, labels = [], []
    try:
        if p.suffix.lower() == ".csv":
            with open(p, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [f for f in (text_field, label_field) if f not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{p} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])}); "
                                    "set data.text_field / data.label_field")
                for lineno, row in enumerate(reader, 2):
                    _append(texts, labels, row.get(text_field), row.get(label_field), f"{p}:{lineno}", text_field,
                            label_field)
        else:
            for lineno, record in iter_jsonl(p):
                _append(texts, labels, record.get(text_field), record.get(label_field), f"{p}:{lineno}",
                        text_field, label_field)
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not valid UTF-8 (byte {exc.start}); convert it to UTF-8 first") from None
    if not texts:
        raise DataError(f"{p} holds no labelled records")
    if len(set(labels)) < 2:
        raise DataError(f"{p} has only one label ({labels[0]!r}); classification needs at least two classes")
    return texts, labels


def _append(texts: list[str], labels: list[str], text: object, label: object, where: str, text_field: str,
            label_field: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where} has no text in field '{text_field}'; set data.text_field or fix the record")
    if label is None or label == "" or isinstance(label, list | dict):
        raise DataError(f"{where} has no single label in field '{label_field}'; set data.label_field or fix the record")
    texts.append(text)
    labels.append(str(label))


def stratified_split(labels: list[str], fractions: list[float], seed: int) -> dict[str, np.ndarray]:
    """Indices of train/val/test: each class shuffled (seeded) and cut by ``fractions``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
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


def encode_split(name: str, texts: list[str], labels: list[str], index: np.ndarray, classes: list[str],
                 tokenizer: Tokenizer, max_len: int) -> LabelledSplit:
    chosen = [texts[i] for i in index]
    ids = [row[:max_len] for row in tokenizer.encode_batch(chosen)]
    for row, text in zip(ids, chosen, strict=True):
        if len(row) == 0:
            raise DataError(f"a text encodes to no tokens: {text[:40]!r}")
    class_index = {c: i for i, c in enumerate(classes)}
    return LabelledSplit(name, ids, np.array([class_index[labels[i]] for i in index], dtype=np.int64), chosen)
