"""Deterministic train/val/test splits by contiguous chunks, and the batches drawn from them.

The token stream is cut into ``chunks`` equal chunks; each chunk gives its first 90% to train, the
next 5% to validation and the last 5% to test (for the default fractions). Every window is drawn
inside one split's range, so no window crosses a split boundary, and every part of the corpus is
represented in every split.

Training batches are a pure function of (seed, step, micro-batch index): resuming at step N draws
exactly the batches the uninterrupted run would have drawn, with no sampler state to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradwise.core.errors import DataError
from gradwise.data.store import TokenStore

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_KEYS = {"train": "data.split[0]", "val": "data.split[1]", "test": "data.split[2]"}


@dataclass
class Split:
    name: str
    store: TokenStore
    ranges: list[tuple[int, int]]  # [start, end) token ranges

    @property
    def n_tokens(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def _starts_per_range(self, block: int) -> np.ndarray:
        return np.array([max(0, e - s - block) for s, e in self.ranges], dtype=np.int64)

    def check_fits(self, block: int) -> None:
        if self._starts_per_range(block).sum() == 0:
            longest = max((e - s for s, e in self.ranges), default=0)
            raise DataError(
                f"the {self.name} split's longest piece has {longest} tokens, fewer than model.block_size + 1 "
                f"({block + 1}); lower model.block_size, lower data.split_chunks, raise "
                f"{_SPLIT_KEYS[self.name]} or use more data")

    def sample_starts(self, rng: np.random.Generator, n: int, block: int) -> np.ndarray:
        """Uniform window starts over every position where a block+1 window fits inside one range."""
        counts = self._starts_per_range(block)
        cum = np.cumsum(counts)
        u = rng.integers(0, cum[-1], size=n)
        which = np.searchsorted(cum, u, side="right")
        offset = u - (cum[which] - counts[which])
        bases = np.array([s for s, _ in self.ranges], dtype=np.int64)
        return bases[which] + offset

    def batch(self, seed: int, step: int, micro: int, batch_size: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The (inputs, targets) of one training micro-batch: a pure function of its arguments."""
        rng = np.random.default_rng([seed, step, micro])
        windows = self.store.gather(self.sample_starts(rng, batch_size, block), block + 1)
        return windows[:, :-1], windows[:, 1:]

    def eval_starts(self, block: int, max_windows: int | None = None) -> np.ndarray:
        """Non-overlapping windows that tile each range; with ``max_windows``, an evenly spaced fixed subset."""
        starts = [np.arange(s, e - block, block, dtype=np.int64) for s, e in self.ranges if e - s > block]
        all_starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        if max_windows is not None and len(all_starts) > max_windows:
            pick = np.unique(np.linspace(0, len(all_starts) - 1, max_windows).round().astype(np.int64))
            all_starts = all_starts[pick]
        return all_starts


def make_splits(store: TokenStore, fractions: list[float], chunks: int) -> dict[str, Split]:
    """Cut the stream into chunks and each chunk into train/val/test by ``fractions``."""
    n = store.n_tokens
    chunks = max(1, min(chunks, n))
    bounds = np.linspace(0, n, chunks + 1).round().astype(np.int64)
    cum = np.cumsum([0.0, *fractions])
    ranges: dict[str, list[tuple[int, int]]] = {k: [] for k in SPLIT_NAMES}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        cuts = (a + np.round(cum * (b - a))).astype(np.int64)
        for name, s, e in zip(SPLIT_NAMES, cuts[:-1], cuts[1:], strict=True):
            if e > s:
                ranges[name].append((int(s), int(e)))
    for name in SPLIT_NAMES:
        if not ranges[name]:
            raise DataError(f"the corpus ({n} tokens) is too small to give the {name} split any tokens; use more data")
    return {name: Split(name, store, ranges[name]) for name in SPLIT_NAMES}
