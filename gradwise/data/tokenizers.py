"""Tokenizers: character-level, and byte-level BPE trained on the corpus with Hugging Face ``tokenizers``.

Both share one small interface (encode, decode, vocab_size, eot_id, token_byte_lengths, save) and
both are saved as ``tokenizer.json``: the BPE one in Hugging Face's own format, the char one as a
small gradwise JSON document. ``token_byte_lengths`` gives the UTF-8 bytes each token stands for,
which is what turns a loss in nats per token into bits per byte, comparable across tokenizers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gradwise.core.errors import DataError

EOT = "<|endoftext|>"
CHAR_FORMAT = "gradwise-char-v1"
HF_FORMAT = "gradwise-hf-tokenizer-v1"  # a record pointing at a run's copy of a Hugging Face tokenizer
NGRAM_FORMAT = "gradwise-ngram-v1"


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> np.ndarray: ...
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_byte_lengths(self) -> np.ndarray: ...
    def to_json(self) -> str: ...


def fingerprint(tok: Tokenizer) -> str:
    return hashlib.sha256(tok.to_json().encode("utf-8")).hexdigest()


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(tok.to_json(), encoding="utf-8")
    tmp.replace(path)


def read_tokenizer_file(path: Path) -> tuple[str, Any]:
    """A ``tokenizer.json``'s text and parsed JSON, or one line saying why it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return text, json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read tokenizer {path}: {exc}; is the run directory complete?") from None


def load_tokenizer(path: Path) -> Tokenizer:
    """A character or BPE tokenizer saved by :func:`save_tokenizer` (a run's, whatever its kind:
    gradwise.hf.auto_tokenizer.load_any_tokenizer)."""
    text, data = read_tokenizer_file(path)
    if isinstance(data, dict) and data.get("format") == HF_FORMAT:
        raise DataError(f"{path} records a Hugging Face model's tokenizer; load it with "
                        "gradwise.hf.auto_tokenizer.load_any_tokenizer")
    return tokenizer_from_json(text)


def tokenizer_from_json(text: str) -> Tokenizer:
    """A character or BPE tokenizer from its ``to_json`` text (a Hugging Face one needs its files: see
    :func:`load_tokenizer`)."""
    data = json.loads(text)
    if isinstance(data, dict) and data.get("format") == CHAR_FORMAT:
        return CharTokenizer(data["chars"], bool(data.get("skip_unknown", False)))
    if isinstance(data, dict) and data.get("format") == NGRAM_FORMAT:
        return NgramTokenizer(int(data["bits"]), tuple(data["word_ngrams"]), tuple(data["char_ngrams"]),
                              counts=bool(data.get("counts", False)))  # runs before counts listed sets
    return BPETokenizer.from_json(text)


def portable(tok: Tokenizer) -> bool:
    """Whether ``tokenizer_from_json(tok.to_json())`` rebuilds it (another process can use it from its JSON)."""
    return isinstance(tok, (CharTokenizer, BPETokenizer, NgramTokenizer))


# ---------------------------------------------------------------- characters

class CharTokenizer:
    """One token per Unicode character seen in the corpus, plus an end-of-text token (the last id)."""

    kind = "char"

    def __init__(self, chars: Sequence[str], skip_unknown: bool = False):
        self.chars = list(chars)
        self.skip_unknown = skip_unknown  # drop unseen characters instead of refusing the text
        self.vocab_size = len(self.chars) + 1
        self.eot_id = len(self.chars)
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._codes = codes.astype(np.uint32)
        order = np.argsort(codes)
        self._sorted_codes = codes[order]
        self._sorted_ids = order

    @classmethod
    def train(cls, texts: Iterable[str], skip_unknown: bool = False) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(sorted(seen), skip_unknown)

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._sorted_codes, codes)
        pos = np.minimum(pos, len(self._sorted_codes) - 1)
        unknown = self._sorted_codes[pos] != codes if len(codes) else np.zeros(0, bool)
        if unknown.any() and self.skip_unknown:
            return self._sorted_ids[pos[~unknown]]
        if unknown.any():
            bad = sorted({chr(c) for c in codes[unknown]})[:5]
            raise DataError(f"characters not in the tokenizer's vocabulary: {bad!r}; "
                            "remove them from the text (a char tokenizer knows only its corpus's characters)")
        return self._sorted_ids[pos]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        arr = arr[(arr >= 0) & (arr < len(self.chars))]  # the end-of-text token (and anything unknown) is silent
        return self._codes[arr].tobytes().decode("utf-32-le")

    def token_byte_lengths(self) -> np.ndarray:
        return np.array([len(c.encode("utf-8")) for c in self.chars] + [0], dtype=np.int64)

    def to_json(self) -> str:
        return json.dumps({"format": CHAR_FORMAT, "chars": self.chars, "eot": EOT, "skip_unknown": self.skip_unknown},
                          ensure_ascii=False)


# ---------------------------------------------------------------- byte-level BPE

class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from Hugging Face ``tokenizers``: any text encodes, nothing is unknown."""

    kind = "bpe"

    def __init__(self, tok):  # tok: tokenizers.Tokenizer
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise DataError(f"tokenizer has no {EOT} token; train it with gradwise or add that special token")
        self.eot_id = eot

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_str(text))
        except Exception as exc:
            raise DataError(f"not a valid tokenizer.json ({str(exc).splitlines()[0]})") from None

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        # In byte-level BPE every character of a token string stands for exactly one byte.
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = {t.content for t in self._tok.get_added_tokens_decoder().values()}
        for token, idx in self._tok.get_vocab().items():
            if idx < self.vocab_size:
                lengths[idx] = 0 if token in special else len(token)
        return lengths

    def to_json(self) -> str:
        return self._tok.to_str()


# ---------------------------------------------------------------- hashed n-grams (classification)

class NgramTokenizer:
    """A text as the multiset of its hashed word and character n-grams: the features of the TF-IDF baseline
    (scikit-learn's analyzers: word 1-2-grams, char_wb 2-5-grams, lower-cased), hashed into two blocks of
    ``2**bits`` ids each (words first, then characters), in id order, each listed as often as it occurs (so the
    model can weigh term frequency as the baseline does); ``counts=False`` lists each once (the set).

    Nothing is learned from the corpus, so nothing is unknown and the JSON is a few numbers. It feeds the
    ``ngram`` classifier (a bag of these ids); the ids cannot be decoded back to text. The last id pads."""

    kind = "ngram"

    def __init__(self, bits: int = 18, word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] = (2, 5),
                 counts: bool = True):
        self.bits, self.word_ngrams, self.char_ngrams = bits, tuple(word_ngrams), tuple(char_ngrams)
        self.counts = counts
        self.vocab_size = 2 * (1 << bits) + 1
        self.eot_id = self.vocab_size - 1
        self._vectorizers: tuple[Any, Any] | None = None

    def _hashers(self) -> tuple[Any, Any]:
        if self._vectorizers is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            common = {"n_features": 1 << self.bits, "alternate_sign": False, "norm": None, "binary": not self.counts}
            self._vectorizers = (HashingVectorizer(ngram_range=self.word_ngrams, **common),
                                 HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common))
        return self._vectorizers

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        words, chars = (h.transform(list(texts)).tocsr() for h in self._hashers())
        for block in (words, chars):
            block.sort_indices()
        offset = 1 << self.bits

        def listed(row: Any, shift: int) -> np.ndarray:  # each id as often as it occurs (once, without counts)
            return np.repeat(row.indices.astype(np.int64) + shift, row.data.astype(np.int64))

        return [np.concatenate([listed(words[i], 0), listed(chars[i], offset)]) for i in range(len(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        raise DataError("an ngram tokenizer's ids are hashed word and character n-grams: they cannot be decoded "
                        "to text (it is for classification; a language model needs data.tokenizer char or bpe)")

    def token_byte_lengths(self) -> np.ndarray:
        return np.zeros(self.vocab_size, dtype=np.int64)  # features, not pieces of the text

    def to_json(self) -> str:
        return json.dumps({"format": NGRAM_FORMAT, "bits": self.bits, "word_ngrams": list(self.word_ngrams),
                           "char_ngrams": list(self.char_ngrams), "analyzers": "scikit-learn word, char_wb",
                           "lowercase": True, "counts": self.counts})


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    if kind == "ngram":
        return NgramTokenizer()
    raise DataError(f"unknown tokenizer '{kind}'; use char, bpe or ngram")
