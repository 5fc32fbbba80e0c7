"""LM contamination: the share of validation and test windows that hold a run of ``n`` words also found in train.

This half of ``gradwise data check`` shares nothing with the duplicate half but the corpus, so on a large
corpus it runs in a second process (``python -m gradwise.data.quality.contamination``, request and answer as JSON on
stdin/stdout: nothing is pickled) while the first builds the unit table: on two cores the whole check takes
about as long as its bigger half. Small corpora, or a tokenizer that cannot travel as JSON, run in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradwise.data.quality.textunits import WORD, LocalWordHasher, available_cpus, find_words, ngram_hashes

SLICE_TOKENS = 1 << 22  # tokens decoded at a time (a paragraph cut at a slice edge becomes two units)
MAX_EXAMPLES = 5
PARALLEL_MIN_TOKENS = 4_000_000  # below this a second process costs more (start-up, imports) than it saves


def decoded_slices(corpus: Any, split: str) -> Iterator[tuple[int, str, float]]:
    """(first token, text, tokens per character) of each document piece of a split, slice by slice."""
    tok, store = corpus.tokenizer, corpus.store
    for start, end in corpus.split(split).ranges:
        for s in range(start, end, SLICE_TOKENS):
            ids = store.read(s, min(SLICE_TOKENS, end - s))
            cuts = np.flatnonzero(ids == tok.eot_id)
            bounds = np.concatenate([[0], cuts + 1, [len(ids)]])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if b > a:
                    text = tok.decode(ids[a:b])
                    yield s + int(a), text, (b - a) / max(1, len(text))


def contamination(corpus: Any, block: int, n: int) -> dict[str, dict[str, Any]]:
    """{"val": ..., "test": ...}: windows (as evaluation tiles each split) sharing an n-word run with train."""
    words = LocalWordHasher()  # the table is built and looked up in this process only
    table = [ngram_hashes(words.hashes(find_words(text.casefold())), n) for _, text, _ in
             decoded_slices(corpus, "train")]
    seen = np.sort(np.concatenate(table)) if table else np.zeros(0, np.uint64)  # for searchsorted
    del table
    return {name: _split_contamination(corpus, name, block, n, seen, words) for name in ("val", "test")}


def _split_contamination(corpus: Any, split: str, block: int, n: int, train_ngrams: np.ndarray,
                         words: LocalWordHasher) -> dict[str, Any]:
    tok, part = corpus.tokenizer, corpus.split(split)
    starts = part.eval_starts(block)
    total, flagged, examples = len(starts), 0, []
    if not len(train_ngrams):  # no training document is n words long: nothing to share
        return {"windows": total, "contaminated": 0, "percent": 0.0, "examples": []}
    # Windows in one range are contiguous: decode them one by one, join, find n-grams across window edges.
    range_of = np.searchsorted(np.array([s for s, _ in part.ranges]), starts, side="right") - 1
    for r in np.unique(range_of):
        win = starts[range_of == r]
        texts = [tok.decode(part.store.read(int(s), block)).casefold() for s in win]
        edges = np.cumsum([0] + [len(t) for t in texts])
        text = "".join(texts)
        matches = [(m.start(), m.group()) for m in WORD.finditer(text)]
        if len(matches) < n:
            continue
        hashes = ngram_hashes(words.hashes([w for _, w in matches]), n)
        pos = np.searchsorted(train_ngrams, hashes)
        hit = (pos < len(train_ngrams)) & (train_ngrams[np.minimum(pos, len(train_ngrams) - 1)] == hashes)
        if not hit.any():
            continue
        covered = np.zeros(len(matches) + 1, dtype=np.int64)  # words inside any matching n-gram
        np.add.at(covered, np.flatnonzero(hit), 1)
        np.add.at(covered, np.flatnonzero(hit) + n, -1)
        covered = np.cumsum(covered)[:-1] > 0
        word_starts = np.array([p for p, _ in matches])
        windows = np.unique(np.searchsorted(edges, word_starts[covered], side="right") - 1)
        flagged += len(windows)
        for i in np.flatnonzero(hit)[:MAX_EXAMPLES - len(examples)]:
            w = int(np.searchsorted(edges, matches[i][0], side="right") - 1)
            examples.append({"split": split, "token": int(win[w]),
                             "ngram": " ".join(word for _, word in matches[i:i + n])})
    return {"windows": total, "contaminated": flagged, "percent": round(100 * flagged / total, 3) if total else 0.0,
            "examples": examples}


# ---------------------------------------------------------------- the second process

class Background:
    """:func:`contamination` computed in a child process; :meth:`result` waits for it. If the child cannot
    start or fails, the result is computed here instead: the report never depends on how it was made."""

    def __init__(self, corpus: Any, block: int, n: int):
        self.corpus, self.block, self.n = corpus, block, n
        self.ran_in_child = False  # set by result(): whether the child's answer was used
        request = {"store": str(Path(corpus.store.path).resolve()), "tokenizer": corpus.tokenizer.to_json(),
                   "ranges": {name: corpus.split(name).ranges for name in ("train", "val", "test")},
                   "block": block, "n": n}
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very gradwise (run there)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                           if p)}
        self._proc: subprocess.Popen | None = None
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "gradwise.data.quality.contamination"], env=env,
                                          cwd=package_root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL)
            stdin, self._proc.stdin = self._proc.stdin, None  # written and closed here; communicate() reads only
            assert stdin is not None
            with stdin:
                stdin.write(json.dumps(request).encode())
        except OSError:
            self.close()

    def result(self) -> dict[str, dict[str, Any]]:
        if self._proc is not None:
            out, _ = self._proc.communicate()  # interrupted here, the child stays known to close(), which kills it
            code, self._proc = self._proc.returncode, None
            try:
                answer = json.loads(out) if code == 0 else None
            except ValueError:
                answer = None
            if answer is not None:
                self.ran_in_child = True
                return answer
        return contamination(self.corpus, self.block, self.n)

    def close(self) -> None:
        """Stop the child (an interrupted check must not leave it running)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def start(corpus: Any, block: int, n: int, parallel: bool | None = None) -> Background | None:
    """A background computation when it pays (``parallel`` None: two or more CPUs and a large train split)."""
    from gradwise.data.tokenizers import portable

    if parallel is None:
        parallel = available_cpus() >= 2 and corpus.split("train").n_tokens >= PARALLEL_MIN_TOKENS
    if not parallel or not portable(corpus.tokenizer):
        return None
    return Background(corpus, block, n)


def _serve() -> None:
    from types import SimpleNamespace

    from gradwise.data.splits import Split
    from gradwise.data.store import TokenStore
    from gradwise.data.tokenizers import tokenizer_from_json

    request = json.loads(sys.stdin.buffer.read())
    store = TokenStore.open(Path(request["store"]))
    splits = {name: Split(name, store, [tuple(r) for r in ranges]) for name, ranges in request["ranges"].items()}
    corpus = SimpleNamespace(tokenizer=tokenizer_from_json(request["tokenizer"]), store=store, split=splits.__getitem__)
    sys.stdout.write(json.dumps(contamination(corpus, request["block"], request["n"])))


if __name__ == "__main__":
    _serve()
