"""The unit table: every unit of a corpus with its split, location and exact-duplicate group, built in one
streaming pass, and the duplicate findings computed from it (exact, near, across splits, label conflicts).

Only one representative per group of identical (normalised) texts is shingled and MinHashed, so a corpus
full of repeats costs no more than its distinct texts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradwise.data.quality.minhash import MinHasher, ShingleSets, batch_shingles, near_duplicate_pairs
from gradwise.data.quality.textunits import WordHasher, find_words, normalize, text_hash

SPLITS = ("train", "val", "test")
SNIPPET = 80
MAX_EXAMPLES = 5  # examples of a finding in the report
MAX_PAIRS = 200  # cross-split copies listed in the report (the counts are always complete)


@dataclass
class CheckParams:
    """Thresholds of the data check (the ``data.*`` config keys of the same meaning)."""

    near_threshold: float = 0.8  # Jaccard similarity of 3-word shingle sets at or above which texts are near copies
    ngram: int = 13  # words in the n-grams of the LM contamination check
    min_chars: int = 30  # LM paragraphs shorter than this (normalised) are not compared: headings, names
    num_perm: int = 64
    bands: int = 16

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UnitTable:
    """Units in corpus order. ``group`` numbers distinct normalised texts in order of first appearance."""

    loc_kind: str  # "line" (records of a file) or "token" (position in the token stream)
    words: WordHasher = field(default_factory=WordHasher)
    split: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    loc: list[int] = field(default_factory=list)
    label: list[Any] = field(default_factory=list)
    rep_snippet: list[str] = field(default_factory=list)  # per group
    _seen: dict[int, int] = field(default_factory=dict)
    _pending: list[str] = field(default_factory=list)  # normalised texts of new groups not yet shingled
    _shingles: list[np.ndarray] = field(default_factory=list)  # shingle hashes, in batches
    _owners: list[np.ndarray] = field(default_factory=list)  # the group of each shingle

    @property
    def n_groups(self) -> int:
        return len(self.rep_snippet)

    def add(self, text: str, split: int, loc: int, label: Any = None) -> int:
        """Add one unit; returns its group (a new group for a text not seen before)."""
        norm = normalize(text)
        key = text_hash(norm)
        group = self._seen.get(key)
        if group is None:
            group = self._seen[key] = len(self.rep_snippet)
            self.rep_snippet.append(" ".join(text.split())[:SNIPPET])
            self._pending.append(norm)
            if len(self._pending) >= 4096:
                self.flush()
        self.split.append(split)
        self.group.append(group)
        self.loc.append(loc)
        self.label.append(label)
        return group

    def __len__(self) -> int:
        return len(self.split)

    def flush(self) -> None:
        """Shingle the pending new texts in one numpy pass (per-text numpy calls would cost more than the work)."""
        if not self._pending:
            return
        first = self.n_groups - len(self._pending)
        words = [find_words(t) for t in self._pending]
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        values, owner = batch_shingles(self.words.hashes(list(itertools.chain.from_iterable(words))), lengths)
        self._shingles.append(values)
        self._owners.append(owner + first)
        self._pending.clear()

    def shingle_sets(self, only: np.ndarray | None = None) -> tuple[ShingleSets, np.ndarray]:
        """The shingle sets of the groups (all, or ``only`` those) that have any, and those groups' ids."""
        self.flush()
        values = np.concatenate(self._shingles) if self._shingles else np.zeros(0, np.uint64)
        owners = np.concatenate(self._owners) if self._owners else np.zeros(0, np.int64)
        if only is not None:
            keep = np.isin(owners, only)
            values, owners = values[keep], owners[keep]
        return ShingleSets.from_owned(values, owners)


def analyse_units(table: UnitTable, params: CheckParams) -> dict[str, Any]:
    """Exact and near duplicates, within the corpus and across splits, and label conflicts."""
    n = len(table)
    splits = np.array(table.split, dtype=np.int64)
    groups = np.array(table.group, dtype=np.int64)
    n_groups = len(table.rep_snippet)
    presence = np.zeros((n_groups, 3), dtype=bool)
    presence[groups, splits] = True
    first_in = np.full((n_groups, 3), -1, dtype=np.int64)  # first unit of each group in each split
    idx = np.arange(n)
    keys, at = np.unique(groups * 3 + splits, return_index=True)  # the earliest unit per (group, split)
    first_in[keys // 3, keys % 3] = idx[at]
    counts = np.bincount(groups, minlength=n_groups)
    first_unit = np.full(n_groups, -1, dtype=np.int64)
    present, at = np.unique(groups, return_index=True)
    first_unit[present] = idx[at]
    per_split = {name: int((splits == i).sum()) for i, name in enumerate(SPLITS)}

    def unit(i: int) -> dict[str, Any]:
        out = {"split": SPLITS[splits[i]], table.loc_kind: int(table.loc[i]), "text": table.rep_snippet[groups[i]]}
        if table.label[i] is not None:
            out["label"] = _label_json(table.label[i])
        return out

    # ---- exact
    cross_exact: dict[str, int] = {}
    exact_examples: list[dict[str, Any]] = []
    for a, b in (("val", "train"), ("test", "train"), ("test", "val")):
        ia, ib = SPLITS.index(a), SPLITS.index(b)
        hit = (splits == ia) & presence[groups, ib]
        cross_exact[f"{a}_in_{b}"] = int(hit.sum())
        for i in np.flatnonzero(hit)[:MAX_PAIRS]:
            exact_examples.append({"a": unit(int(i)), "b": unit(int(first_in[groups[i], ib])), "similarity": 1.0})

    # ---- near (between distinct texts; one representative per group)
    pairs = near_pairs(table, params)
    near_to = np.zeros((n_groups, 3), dtype=bool)  # group has a near copy with a member in that split
    for ga, gb, _ in pairs:
        near_to[ga] |= presence[gb]
        near_to[gb] |= presence[ga]
    cross_near: dict[str, int] = {}
    near_examples: list[dict[str, Any]] = []
    for a, b in (("val", "train"), ("test", "train"), ("test", "val")):
        ia, ib = SPLITS.index(a), SPLITS.index(b)
        hit = (splits == ia) & near_to[groups, ib] & ~presence[groups, ib]
        cross_near[f"{a}_in_{b}"] = int(hit.sum())
    for ga, gb, sim in sorted(pairs, key=lambda p: -p[2]):
        for x, y in ((ga, gb), (gb, ga)):
            sx = [s for s in (2, 1) if presence[x, s]]
            sy = [s for s in (0, 1) if presence[y, s] and (not sx or s < sx[0])]
            if sx and sy and len(near_examples) < MAX_PAIRS:
                near_examples.append({"a": unit(int(first_in[x, sx[0]])), "b": unit(int(first_in[y, sy[0]])),
                                      "similarity": round(sim, 3)})
                break

    report: dict[str, Any] = {
        "units": per_split,
        "exact": {"duplicate_units": int(n - n_groups), "duplicate_groups": int((counts > 1).sum()),
                  "cross": cross_exact, "examples": exact_examples},
        "near": {"pairs": len(pairs), "cross": cross_near, "examples": near_examples,
                 "all_examples": [{"a": unit(int(first_unit[ga])), "b": unit(int(first_unit[gb])),
                                   "similarity": round(sim, 3)} for ga, gb, sim in pairs[:MAX_EXAMPLES]]},
    }
    if any(label is not None for label in table.label):
        report["labels"] = _label_conflicts(table, groups, pairs, unit)
    return report


def near_pairs(table: UnitTable, params: CheckParams, only: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """(group, group, Jaccard) for near-copy pairs among the groups (all, or ``only`` those)."""
    sets, eligible = table.shingle_sets(only)
    eligible = eligible.tolist()
    return [(eligible[i], eligible[j], sim) for i, j, sim in
            near_duplicate_pairs(sets, params.near_threshold, MinHasher(params.num_perm, params.bands))]


def near_groups(table: UnitTable, params: CheckParams, only: np.ndarray | None = None) -> np.ndarray:
    """For each group, the earliest group it is linked to by a chain of near copies (itself when none)."""
    parent = list(range(table.n_groups))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in near_pairs(table, params, only):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(g) for g in range(len(parent))], dtype=np.int64)


def _label_json(label: Any) -> Any:
    return list(label) if isinstance(label, tuple) else label


def _label_conflicts(table: UnitTable, groups: np.ndarray, pairs: list[tuple[int, int, float]],
                     unit: Any) -> dict[str, Any]:
    """The same text (exactly, or nearly) under different labels."""
    labels_of: dict[int, set] = {}
    first_of: dict[int, int] = {}
    for i, (g, label) in enumerate(zip(groups.tolist(), table.label, strict=True)):
        labels_of.setdefault(g, set()).add(label)
        first_of.setdefault(g, i)
    conflict_groups = [g for g, labels in labels_of.items() if len(labels) > 1]
    in_conflict = set(conflict_groups)
    records = sum(1 for g in groups.tolist() if g in in_conflict)
    examples = []
    for g in conflict_groups[:MAX_EXAMPLES]:
        members = [i for i in np.flatnonzero(groups == g)[:4].tolist()]
        examples.append({"units": [unit(i) for i in members], "similarity": 1.0})
    near_conflicts = [(a, b, s) for a, b, s in pairs if labels_of[a] != labels_of[b]]
    for a, b, s in near_conflicts[:max(0, MAX_EXAMPLES - len(examples))]:
        examples.append({"units": [unit(first_of[a]), unit(first_of[b])], "similarity": round(s, 3)})
    return {"exact_conflict_texts": len(conflict_groups), "exact_conflict_records": records,
            "near_conflict_pairs": len(near_conflicts), "examples": examples}
