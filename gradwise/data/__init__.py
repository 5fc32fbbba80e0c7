"""Data: corpus sources → tokenizer → cached memmap token shards → train/val/test splits → batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradwise.config.schema import DataConfig
from gradwise.data.quality.dedupe import DedupedSource
from gradwise.data.quality.units import CheckParams
from gradwise.data.sources import CorpusSource, TextSource
from gradwise.data.splits import Split, make_splits
from gradwise.data.store import TokenStore, build_store, default_cache_dir
from gradwise.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

__all__ = ["Corpus", "CorpusSource", "Split", "Tokenizer", "CharTokenizer", "BPETokenizer", "TokenStore",
           "prepare_corpus", "load_tokenizer", "save_tokenizer"]


@dataclass
class Corpus:
    """A tokenized corpus ready for training: its tokenizer, token store and splits."""

    source: TextSource
    tokenizer: Tokenizer
    store: TokenStore
    splits: dict[str, Split]

    def split(self, name: str) -> Split:
        return self.splits[name]


def prepare_corpus(cfg: DataConfig, tokenizer: Tokenizer | None = None) -> Corpus:
    """Read, tokenize (or open from cache) and split the corpus that ``cfg`` names.

    With ``tokenizer`` given (evaluating an existing run), that tokenizer is used as it is;
    otherwise one is trained on the corpus, or taken from the cache if trained before.
    """
    source: TextSource = CorpusSource.from_config(cfg.path, cfg.format, cfg.text_field)
    cache = default_cache_dir(cfg.cache_dir)
    if cfg.dedupe:
        source = DedupedSource(source, check_params(cfg), cache)
    source_fp = source.fingerprint()
    if tokenizer is None:
        tokenizer = _cached_tokenizer(source, source_fp, cfg, cache)
    store = build_store(source, tokenizer, cache, source_fp)
    return Corpus(source, tokenizer, store, make_splits(store, cfg.split, cfg.split_chunks))


def check_params(cfg: DataConfig) -> CheckParams:
    return CheckParams(near_threshold=cfg.near_threshold, ngram=cfg.ngram, min_chars=cfg.min_unit_chars)


def _cached_tokenizer(source: TextSource, source_fp: str, cfg: DataConfig, cache: Path) -> Tokenizer:
    spec = f"{cfg.tokenizer}-{cfg.vocab_size}" if cfg.tokenizer == "bpe" else cfg.tokenizer
    path = cache / "tokenizers" / f"{source_fp[:20]}-{spec}.json"
    if path.is_file():
        return load_tokenizer(path)
    tok = train_tokenizer(cfg.tokenizer, (p.text for p in source.pieces()), cfg.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, path)
    return tok
