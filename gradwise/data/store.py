"""Token store: the tokenized corpus as numpy memmap shards, cached by a hash of corpus + tokenizer.

A second run on the same corpus and tokenizer opens the cached shards instead of tokenizing again,
and since shards are memory-mapped a corpus larger than RAM still trains. The cache entry is built
in a temporary directory and renamed into place, so a killed tokenization never leaves a half entry.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradwise.data.sources import TextSource
from gradwise.data.tokenizers import Tokenizer, fingerprint

CACHE_FORMAT = 1
SHARD_TOKENS = 1 << 27  # 128M tokens per shard (256 MB as uint16)
ENCODE_BATCH = 16  # pieces encoded together (BPE encodes a batch in parallel)


def default_cache_dir(configured: str | None = None) -> Path:
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("GRADWISE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradwise"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class TokenStore:
    """Read-only view of the token stream across its shards."""

    shards: list[np.ndarray]
    starts: list[int]  # global index of each shard's first token
    n_tokens: int
    path: Path

    @classmethod
    def open(cls, directory: Path) -> TokenStore:
        meta = json.loads((directory / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        shards, starts, pos = [], [], 0
        for shard in meta["shards"]:
            shards.append(np.memmap(directory / shard["file"], dtype=dtype, mode="r", shape=(shard["tokens"],)))
            starts.append(pos)
            pos += shard["tokens"]
        return cls(shards, starts, pos, directory)

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) as a fresh int64 array (may span shards)."""
        i = bisect.bisect_right(self.starts, start) - 1
        local = start - self.starts[i]
        shard = self.shards[i]
        if local + length <= len(shard):
            return shard[local:local + length].astype(np.int64)
        out = [shard[local:]]
        need = length - len(out[0])
        while need > 0:
            i += 1
            out.append(self.shards[i][:need])
            need -= len(out[-1])
        return np.concatenate(out).astype(np.int64)

    def gather(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Windows of ``length`` tokens at each start, stacked into a (len(starts), length) int64 array."""
        if len(self.shards) == 1:
            index = starts[:, None] + np.arange(length)[None, :]
            return self.shards[0][index].astype(np.int64)
        return np.stack([self.read(int(s), length) for s in starts])


def build_store(source: TextSource, tokenizer: Tokenizer, cache_root: Path,
                source_fingerprint: str | None = None) -> TokenStore:
    """Open the cached token store for (corpus, tokenizer), tokenizing the corpus first if needed."""
    key = f"{(source_fingerprint or source.fingerprint())[:20]}-{fingerprint(tokenizer)[:12]}"
    final = cache_root / "tokens" / key
    if (final / "meta.json").is_file():
        return TokenStore.open(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        _write_shards(source, tokenizer, tmp)
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TokenStore.open(final)


def _write_shards(source: TextSource, tokenizer: Tokenizer, directory: Path) -> None:
    dtype = token_dtype(tokenizer.vocab_size)
    shards: list[dict] = []
    fh = None
    in_shard = 0

    def write(ids: np.ndarray) -> None:
        nonlocal fh, in_shard
        ids = ids.astype(dtype, copy=False)
        while len(ids):
            if fh is None or in_shard == SHARD_TOKENS:
                if fh is not None:
                    fh.close()
                name = f"shard-{len(shards):05d}.bin"
                shards.append({"file": name, "tokens": 0})
                fh = open(directory / name, "wb")  # noqa: SIM115 - closed when the shard fills
                in_shard = 0
            take = min(len(ids), SHARD_TOKENS - in_shard)
            fh.write(ids[:take].tobytes())
            shards[-1]["tokens"] += take
            in_shard += take
            ids = ids[take:]

    batch: list = []

    def flush() -> None:
        encoded = tokenizer.encode_batch([p.text for p in batch])
        for piece, ids in zip(batch, encoded, strict=True):
            write(ids)
            if piece.ends_document:
                write(np.array([tokenizer.eot_id]))
        batch.clear()

    for piece in source.pieces():
        batch.append(piece)
        if len(batch) >= ENCODE_BATCH:
            flush()
    flush()
    if fh is not None:
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
    meta = {"format": CACHE_FORMAT, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
            "source": source.describe(), "shards": shards, "tokens": sum(s["tokens"] for s in shards)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
