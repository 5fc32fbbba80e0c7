"""Near-duplicate search: MinHash signatures, LSH banding for candidates, exact Jaccard to confirm.

Why not ``datasketch``: it builds one Python object per document and hashes shingle by shingle; on the same
20,000 paragraphs its MinHash + LSH took 8.5x as long as this (bench/data_check.py, docs/benchmarks.md).
Here every step is a numpy pass over all shingles at once.

Each unit is a set of shingles (hashes of 3-word runs). Its signature keeps, for each of ``num_perm``
random hash functions, the minimum over its shingles: two units agree in one position with probability
equal to their Jaccard similarity. Banding (``bands`` groups of ``num_perm / bands`` positions) makes units
that agree on a whole band candidates; with the defaults (64 = 16 x 4) a pair at Jaccard 0.8 becomes a
candidate with probability 0.9997, one at 0.4 with 0.34. Candidates are then confirmed by their exact
Jaccard similarity on the shingle sets, so reported similarities are exact, not estimates.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gradwise.data.quality.textunits import available_cpus, mix64, ngram_hashes

SHINGLE_WORDS = 3
MAX_BUCKET = 32  # a bucket bigger than this pairs each member with its first MAX_BUCKET members only
_BLOCK = 1 << 22  # shingles hashed per numpy pass (bounds temporary memory)


@dataclass
class ShingleSets:
    """The shingle sets of many units, concatenated: unit i owns values[offsets[i]:offsets[i+1]] (in any order,
    repeats allowed: a minimum does not care, and :meth:`jaccard` makes them sets)."""

    values: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = units + 1

    @classmethod
    def from_owned(cls, values: np.ndarray, owners: np.ndarray) -> tuple[ShingleSets, np.ndarray]:
        """Sets from (shingle, owner) pairs in any order; returns them and the owner of each set, ascending."""
        if len(owners) > 1 and not (owners[1:] >= owners[:-1]).all():  # they usually arrive sorted
            order = np.argsort(owners, kind="stable")  # a set's order does not matter
            values, owners = values[order], owners[order]
        starts = np.flatnonzero(np.diff(owners, prepend=owners[:1] - 1)) if len(owners) else np.zeros(0, np.int64)
        ids = owners[starts]
        offsets = np.concatenate([starts, [len(values)]]).astype(np.int64)
        return cls(values.astype(np.uint64, copy=False), offsets), ids

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def jaccard(self, i: int, j: int) -> float:
        a, b = np.unique(self.get(i)), np.unique(self.get(j))
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        return inter / union if union else 0.0


class MinHasher:
    def __init__(self, num_perm: int = 64, bands: int = 16, seed: int = 1):
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        rng = np.random.default_rng(seed)
        self.num_perm, self.bands = num_perm, bands
        self.a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)

    def signatures(self, sets: ShingleSets) -> np.ndarray:
        """(units, num_perm) uint32 signatures; every unit must have at least one shingle. Two threads share
        the permutations where the process may use two CPUs (numpy releases the GIL in these loops: 1.5x measured)."""
        n = len(sets)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        workers = min(2, available_cpus(), self.num_perm)
        start = 0
        with ThreadPoolExecutor(workers) as pool:
            while start < n:  # blocks of whole units, about _BLOCK shingles each
                end = int(np.searchsorted(sets.offsets, sets.offsets[start] + _BLOCK, side="right")) - 1
                end = min(max(end, start + 1), n)
                lo, hi = sets.offsets[start], sets.offsets[end]
                vals, local = mix64(sets.values[lo:hi]), sets.offsets[start:end] - lo
                out = sig[start:end]
                list(pool.map(lambda perms: self._minima(vals, local, perms, out),  # noqa: B023 (joined here)
                              [range(w, self.num_perm, workers) for w in range(workers)]))
                start = end
        return sig

    def _minima(self, vals: np.ndarray, local: np.ndarray, perms: range, out: np.ndarray) -> None:
        permuted = np.empty_like(vals)
        with np.errstate(over="ignore"):
            for p in perms:
                np.multiply(vals, self.a[p], out=permuted)
                np.add(permuted, self.b[p], out=permuted)
                out[:, p] = np.minimum.reduceat(permuted, local) >> np.uint64(32)

    def candidate_pairs(self, sig: np.ndarray) -> np.ndarray:
        """(k, 2) index pairs i < j that share at least one whole band, sorted."""
        rows, n = self.num_perm // self.bands, len(sig)
        found: list[np.ndarray] = []
        for band in range(self.bands):
            cols = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
            key = np.zeros(n, dtype=np.uint64)
            for c in range(rows):
                key = mix64(key ^ cols[:, c])
            order = np.argsort(key, kind="stable")  # stable: each bucket's members stay in ascending order
            found.extend(_bucket_pairs(order, key[order]))
        if not found:
            return np.zeros((0, 2), dtype=np.int64)
        codes = np.unique(np.concatenate(found))  # i * n + j: sorts as (i, j) does, and dedupes in one pass
        return np.stack([codes // n, codes % n], axis=1)


def _bucket_pairs(order: np.ndarray, sorted_key: np.ndarray) -> list[np.ndarray]:
    """Pairs (as i * n + j) of units with equal keys. A bucket bigger than MAX_BUCKET pairs each member with its
    first MAX_BUCKET members only (no size^2 arrays)."""
    n = len(order)
    if n < 2:
        return []
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_key[1:] != sorted_key[:-1]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    size_at = np.repeat(sizes, sizes)
    out: list[np.ndarray] = []
    small = np.flatnonzero((size_at > 1) & (size_at <= MAX_BUCKET))  # positions in buckets of 2..MAX_BUCKET
    bucket = np.repeat(np.arange(len(starts)), sizes)
    for d in range(1, int(size_at[small].max()) if len(small) else 1):  # every pair at distance d in one bucket
        p = small[small + d < n]
        p = p[bucket[p + d] == bucket[p]]
        if not len(p):
            break
        out.append(order[p] * n + order[p + d])
    for s, size in zip(starts[sizes > MAX_BUCKET], sizes[sizes > MAX_BUCKET], strict=True):
        members = order[s:s + size]
        i = np.repeat(np.arange(MAX_BUCKET), size - 1 - np.arange(MAX_BUCKET))
        j = np.concatenate([np.arange(a + 1, size) for a in range(MAX_BUCKET)])
        out.append(members[i] * n + members[j])
    return out


def near_duplicate_pairs(sets: ShingleSets, threshold: float, hasher: MinHasher | None = None
                         ) -> list[tuple[int, int, float]]:
    """(i, j, Jaccard) for every pair of units at or above ``threshold`` that LSH proposes."""
    if len(sets) < 2:
        return []
    hasher = hasher or MinHasher()
    sig = hasher.signatures(sets)
    pairs = hasher.candidate_pairs(sig)
    if not len(pairs):
        return []
    # A cheap filter on the signature estimate first (its noise is about 0.05 at 64 positions).
    estimate = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)
    pairs = pairs[estimate >= threshold - 0.2]
    out = []
    for i, j in pairs.tolist():
        sim = sets.jaccard(i, j)
        if sim >= threshold:
            out.append((i, j, sim))
    return out


def batch_shingles(word_hashes: np.ndarray, lengths: np.ndarray, n: int = SHINGLE_WORDS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Shingles of many units at once: (shingle hashes, index of the unit each belongs to).

    ``word_hashes`` holds the words of all units back to back, ``lengths`` the word count of each. A shingle
    is a run of ``n`` words inside one unit; a unit shorter than ``n`` words (but not empty) is one shingle."""

    unit_of = np.repeat(np.arange(len(lengths)), lengths)
    grams = ngram_hashes(word_hashes, n)
    inside = unit_of[:len(grams)] == unit_of[n - 1:] if len(grams) else np.zeros(0, dtype=bool)
    values, owners = [grams[inside]], [unit_of[:len(grams)][inside]]
    ends = np.cumsum(lengths)
    for u in np.flatnonzero((lengths > 0) & (lengths < n)):
        values.append(ngram_hashes(word_hashes[ends[u] - lengths[u]:ends[u]], int(lengths[u])))
        owners.append(np.array([u]))
    values, owners = np.concatenate(values).astype(np.uint64), np.concatenate(owners).astype(np.int64)
    if len(values) > len(grams):  # short units' shingles went last: put every shingle back in unit order
        order = np.argsort(owners, kind="stable")
        values, owners = values[order], owners[order]
    return values, owners
