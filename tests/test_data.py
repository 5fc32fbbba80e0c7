"""Data: sources, tokenizers, the memmap token cache and the train/val/test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradwise.config.schema import DataConfig
from gradwise.core.errors import DataError
from gradwise.data import BPETokenizer, CharTokenizer, load_tokenizer, prepare_corpus, save_tokenizer
from gradwise.data import store as store_mod
from gradwise.data.sources import CorpusSource
from gradwise.data.splits import make_splits

TEXT = "Hello, wörld! Ünïcödé → text.\nSecond line with tabs\tand  spaces.\n"


# ---------------------------------------------------------------- tokenizers

def test_char_tokenizer_round_trips_unicode(tmp_path: Path) -> None:
    tok = CharTokenizer.train([TEXT])
    ids = tok.encode(TEXT)
    assert tok.decode(ids.tolist()) == TEXT
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode(TEXT).tolist() == ids.tolist()
    assert again.vocab_size == len(set(TEXT)) + 1  # + end-of-text


def test_char_tokenizer_refuses_unknown_characters_clearly() -> None:
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(DataError, match="not in the tokenizer's vocabulary"):
        tok.encode("abz")


def test_bpe_tokenizer_trains_round_trips_and_saves_hf_format(tmp_path: Path, corpus_file: Path) -> None:
    text = corpus_file.read_text()
    tok = BPETokenizer.train([text], vocab_size=400)
    assert tok.vocab_size == 400
    for sample in (TEXT, text[:2000], "emoji 🙂 and bytes never seen"):
        assert tok.decode(tok.encode(sample).tolist()) == sample
    assert len(tok.encode(text)) < len(text) / 1.5  # merges really compress
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert data["model"]["type"] == "BPE"  # Hugging Face's own tokenizer.json format
    assert load_tokenizer(tmp_path / "tokenizer.json").encode(TEXT).tolist() == tok.encode(TEXT).tolist()


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_token_byte_lengths_count_utf8_bytes(kind: str, corpus_file: Path) -> None:
    text = corpus_file.read_text() + TEXT
    tok = CharTokenizer.train([text]) if kind == "char" else BPETokenizer.train([text], vocab_size=350)
    ids = tok.encode(TEXT)
    assert tok.token_byte_lengths()[ids].sum() == len(TEXT.encode("utf-8"))
    assert tok.token_byte_lengths()[tok.eot_id] == 0


# ---------------------------------------------------------------- sources

def test_directory_and_jsonl_sources(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("alpha ")
    (tmp_path / "d" / "sub" / "b.txt").write_text("beta")
    (tmp_path / "d" / ".hidden").write_text("never read")
    pieces = list(CorpusSource.from_config(str(tmp_path / "d")).pieces())
    assert [p.text for p in pieces] == ["alpha ", "beta"]
    assert all(p.ends_document for p in pieces)

    jl = tmp_path / "x.jsonl"
    jl.write_text('{"text": "one"}\n\n{"text": "two", "label": 1}\n')
    assert [p.text for p in CorpusSource.from_config(str(jl)).pieces()] == ["one", "two"]
    with pytest.raises(DataError, match="x.jsonl:1 has no 'body' field; set data.text_field"):
        list(CorpusSource.from_config(str(jl), text_field="body").pieces())


@pytest.mark.parametrize("content, fragment", [
    (b'{"text": "ok"}\n{broken\n', "x.jsonl:2 is not valid JSON"),
    (b'{"text": "ok"}\n{"body": "no text"}\n', "x.jsonl:2 has no 'text' field"),
    (b'{"text": 5}\n', "field 'text' must be a string"),
    (b'{"text": "caf\xe9"}\n', "not valid UTF-8"),
    (b"\n\n", "holds no text"),
])
def test_bad_jsonl_names_the_line_and_the_fix(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=None) as exc:
        list(CorpusSource.from_config(str(path)).pieces())
    assert fragment in str(exc.value)


def test_missing_path_and_bad_utf8_text(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        CorpusSource.from_config(str(tmp_path / "nope.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt is not valid UTF-8"):
        list(CorpusSource.from_config(str(bad)).pieces())


def test_large_text_file_streams_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradwise.data import sources

    monkeypatch.setattr(sources, "PIECE_CHARS", 100)
    path = tmp_path / "big.txt"
    text = "".join(f"line {i} of the corpus\n" for i in range(200))
    path.write_text(text)
    pieces = list(CorpusSource.from_config(str(path)).pieces())
    assert len(pieces) > 10
    assert "".join(p.text for p in pieces) == text
    assert [p.ends_document for p in pieces].count(True) == 1


def test_builtin_corpus_is_the_python_docs() -> None:
    source = CorpusSource.from_config(None)
    text = "".join(p.text for p in source.pieces())
    assert 300_000 < len(text) < 2_000_000
    assert "assert" in text and "lambda" in text


# ---------------------------------------------------------------- cache, shards, splits

def test_corpus_is_tokenized_once_then_read_from_cache(corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DataConfig(path=str(corpus_file), split_chunks=1)
    first = prepare_corpus(cfg)
    calls = []
    monkeypatch.setattr(store_mod, "_write_shards", lambda *a: calls.append(a))
    second = prepare_corpus(cfg)
    assert calls == []  # no second tokenization
    assert second.store.path == first.store.path
    assert np.array_equal(second.store.read(0, 500), first.store.read(0, 500))
    text = corpus_file.read_text()
    assert first.tokenizer.decode(first.store.read(0, first.store.n_tokens).tolist()) == text


def test_a_changed_corpus_is_tokenized_again(corpus_file: Path) -> None:
    a = prepare_corpus(DataConfig(path=str(corpus_file)))
    corpus_file.write_text(corpus_file.read_text() + " more")
    b = prepare_corpus(DataConfig(path=str(corpus_file)))
    assert a.store.path != b.store.path


def test_shards_and_dtype(tmp_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "SHARD_TOKENS", 1000)
    monkeypatch.setenv("GRADWISE_CACHE", str(tmp_path / "cache"))
    corpus = prepare_corpus(DataConfig(path=str(corpus_file), split_chunks=1))
    store = corpus.store
    assert len(store.shards) == -(-store.n_tokens // 1000)
    assert store.shards[0].dtype == np.uint16
    whole = np.concatenate([np.asarray(s) for s in store.shards]).astype(np.int64)
    assert np.array_equal(store.read(990, 25), whole[990:1015])  # across a shard boundary
    starts = np.array([0, 995, 1990])
    assert np.array_equal(store.gather(starts, 20), np.stack([whole[s:s + 20] for s in starts]))
    assert store_mod.token_dtype(70_000) == np.uint32


def test_splits_are_disjoint_cover_everything_and_respect_fractions(corpus_file: Path) -> None:
    corpus = prepare_corpus(DataConfig(path=str(corpus_file), split_chunks=7))
    n = corpus.store.n_tokens
    covered = np.zeros(n, dtype=np.int64)
    for split in corpus.splits.values():
        for s, e in split.ranges:
            covered[s:e] += 1
    assert (covered == 1).all()
    fractions = [corpus.split(k).n_tokens / n for k in ("train", "val", "test")]
    assert fractions == pytest.approx([0.9, 0.05, 0.05], abs=0.002)
    assert len(corpus.split("val").ranges) == 7  # one piece of every chunk


def test_training_windows_never_cross_a_split_boundary(corpus_file: Path) -> None:
    corpus = prepare_corpus(DataConfig(path=str(corpus_file), split_chunks=5))
    block = 64
    for name, split in corpus.splits.items():
        rng = np.random.default_rng(0)
        starts = split.sample_starts(rng, 5000, block)
        inside = [any(s <= x and x + block + 1 <= e for s, e in split.ranges) for x in starts]
        assert all(inside), name
        for x in split.eval_starts(block):
            assert any(s <= x and x + block + 1 <= e for s, e in split.ranges)


def test_batches_are_a_pure_function_of_seed_and_step(corpus_file: Path) -> None:
    split = prepare_corpus(DataConfig(path=str(corpus_file))).split("train")
    a = split.batch(seed=1, step=17, micro=0, batch_size=4, block=16)
    b = split.batch(seed=1, step=17, micro=0, batch_size=4, block=16)
    c = split.batch(seed=1, step=18, micro=0, batch_size=4, block=16)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert np.array_equal(a[0][:, 1:], a[1][:, :-1])  # targets are inputs shifted by one


def test_block_larger_than_split_is_a_clear_error(corpus_file: Path) -> None:
    corpus = prepare_corpus(DataConfig(path=str(corpus_file), split_chunks=10))
    with pytest.raises(DataError, match="val split.*model.block_size"):
        corpus.split("val").check_fits(100_000)


def test_too_small_corpus_for_a_split() -> None:
    class Tiny:
        n_tokens = 5

    with pytest.raises(DataError, match="too small"):
        make_splits(Tiny(), [0.9, 0.05, 0.05], 1)  # type: ignore[arg-type]
