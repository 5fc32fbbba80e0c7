"""``--dedupe``: drop exact and near duplicates before splitting, keeping the first of each.

For a labelled set a unit is a record; for a language-model corpus a paragraph (shorter ones than
``min_chars`` are always kept). Among near copies (MinHash/LSH, Jaccard ≥ ``near_threshold``) every text
linked to an earlier one is dropped, so of each cluster of near copies the first text in corpus order stays.
Which units are dropped is a pure function of the corpus and the thresholds, so the split after it is as
deterministic as without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradwise.data.quality.textunits import stream_paragraphs
from gradwise.data.quality.units import CheckParams, UnitTable, near_groups
from gradwise.data.sources import CorpusSource, Piece

PIECE_CHARS = 1 << 20


def plan_drops(table: UnitTable, eligible: np.ndarray, params: CheckParams) -> tuple[np.ndarray, dict[str, int]]:
    """Boolean mask of units to drop: repeats of an earlier text, and texts near an earlier kept one."""
    groups = np.array(table.group, dtype=np.int64)
    n_groups = len(table.rep_snippet)
    drop = np.zeros(len(groups), dtype=bool)
    first = np.full(n_groups, -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    present, at = np.unique(groups[idx], return_index=True)
    first[present] = idx[at]  # the earliest unit of each group
    exact = eligible & (first[groups] != np.arange(len(groups)))
    drop |= exact
    # Near copies: a group linked (through any chain) to an earlier group is dropped whole.
    root = near_groups(table, params, only=np.unique(groups[eligible]))
    near_dropped = np.zeros(n_groups, dtype=bool)
    near_dropped[np.flatnonzero(root != np.arange(n_groups))] = True
    near = eligible & near_dropped[groups] & ~exact
    drop |= near
    return drop, {"units": int(len(groups)), "dropped_exact": int(exact.sum()), "dropped_near": int(near.sum())}


def dedupe_records(texts: list[str], labels: list[Any], params: CheckParams) -> tuple[np.ndarray, dict[str, int]]:
    """Indices of the records to keep, and the counts of those dropped."""
    table = UnitTable("line")
    for text in texts:
        table.add(text, 0, 0)
    drop, counts = plan_drops(table, np.ones(len(texts), dtype=bool), params)
    return np.flatnonzero(~drop), counts


@dataclass(frozen=True)
class DedupedSource:
    """A corpus source with duplicate paragraphs removed; reads like the source it wraps."""

    source: CorpusSource
    params: CheckParams
    cache_root: Path

    @property
    def kind(self) -> str:
        return self.source.kind

    def describe(self) -> str:
        return f"{self.source.describe()} (deduplicated)"

    def files(self) -> list[Path]:
        return self.source.files()

    def fingerprint(self) -> str:
        used = {k: v for k, v in self.params.to_dict().items() if k != "ngram"}  # what decides the drops
        return hashlib.sha256(f"{self.source.fingerprint()}|dedupe-v1|{json.dumps(used)}".encode()).hexdigest()

    def _plan_path(self) -> Path:
        return self.cache_root / "dedupe" / f"{self.fingerprint()[:24]}.npz"

    def plan(self) -> tuple[np.ndarray, dict[str, int]]:
        """The drop mask over the source's paragraphs (computed once, then cached) and its counts."""
        path = self._plan_path()
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return z["drop"], json.loads(str(z["counts"]))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # a damaged entry is planned again
        table = UnitTable("token")
        eligible = []
        for paragraph, _sep, _end in stream_paragraphs((p.text, p.ends_document) for p in self.source.pieces()):
            long_enough = len(paragraph.strip()) >= self.params.min_chars
            eligible.append(long_enough)
            table.add(paragraph if long_enough else "", 0, 0)
        drop, counts = plan_drops(table, np.array(eligible, dtype=bool), self.params)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        np.savez(tmp, drop=drop, counts=np.array(json.dumps(counts)))
        tmp.replace(path)
        return drop, counts

    def pieces(self) -> Iterator[Piece]:
        drop, _ = self.plan()
        buf: list[str] = []
        size = 0
        paragraphs = stream_paragraphs((p.text, p.ends_document) for p in self.source.pieces())
        for i, (paragraph, sep, ends_document) in enumerate(paragraphs):
            if not drop[i]:
                buf.append(paragraph + sep)
                size += len(paragraph) + len(sep)
            if ends_document or size >= PIECE_CHARS:
                yield Piece("".join(buf), ends_document)
                buf, size = [], 0
        if buf:
            yield Piece("".join(buf), True)
