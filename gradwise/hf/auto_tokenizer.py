"""Any Hugging Face tokenizer behind gradwise's Tokenizer interface, for training ``model.arch: hf`` models.

The data layer only needs encode/decode, the vocabulary size, a document separator and the bytes each
token stands for, so the model's own tokenizer (``AutoTokenizer``) is wrapped rather than converted:
texts are encoded without special tokens and documents are separated by the tokenizer's eos token.

The fingerprint that keys the token cache is the content of the tokenizer files (their SHA-256), not
the directory's name, so a copied model directory reuses its cache and an edited tokenizer does not.
A run keeps a copy of the files in ``RUN/hf/`` and ``RUN/tokenizer.json`` records their hashes: the run
works after the source directory moves, and a changed copy is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradwise.core.errors import DataError
from gradwise.data.tokenizers import HF_FORMAT, Tokenizer, read_tokenizer_file, tokenizer_from_json
from gradwise.hf import RUN_MODEL_DIR, require

FORMAT = HF_FORMAT
# The files a tokenizer can be made of (whichever exist are hashed and copied; none of them is pickled).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json")
SPACE_MARK = "\u2581"  # SentencePiece's visible space


def tokenizer_files(directory: Path) -> dict[str, str]:
    """SHA-256 of every tokenizer file present in ``directory``, by name."""
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in TOKENIZER_FILES if (directory / name).is_file()}


class HFTokenizer:
    """A ``transformers`` tokenizer with gradwise's Tokenizer interface (kind ``hf``).

    For a classifier (``classify``) a text is encoded as the model expects one alone (with its special tokens:
    BERT's [CLS] ... [SEP]) and ``eot_id`` is the padding id: the pad token, or the eos token when there is none
    (GPT-2)."""

    kind = "hf"

    def __init__(self, tok: Any, files: dict[str, str], where: str, classify: bool = False):
        self.hf = tok
        self.files = files
        self.classify = classify
        self.vocab_size = len(tok)
        if classify:
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            if pad is None:
                raise DataError(f"the tokenizer in {where} has neither a pad nor an eos token; a classifier pads "
                                "texts with one (set pad_token in its tokenizer_config.json)")
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token  # so an export pads as gradwise did
            self.eot_id = int(pad)
        elif tok.eos_token_id is None:
            raise DataError(f"the tokenizer in {where} has no eos token; gradwise separates documents with it "
                            "(set eos_token in its tokenizer_config.json)")
        else:
            self.eot_id = int(tok.eos_token_id)

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.hf(list(texts), add_special_tokens=self.classify, verbose=False)["input_ids"]
        return [np.asarray(row, dtype=np.int64) for row in ids]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes per token, for bits per byte. Exact for byte-level BPE (one character per byte) and for
        byte-fallback tokens (``<0x41>``); otherwise the UTF-8 length of the token's text, SentencePiece's
        visible space counting as the space it stands for. Special tokens stand for no bytes."""
        byte_level = _is_byte_level(self.hf)
        special = set(self.hf.all_special_ids)
        tokens = self.hf.convert_ids_to_tokens(list(range(self.vocab_size)))
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i, token in enumerate(tokens):
            if i in special or token is None:
                continue
            if byte_level:
                out[i] = len(token)
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                out[i] = 1
            else:
                out[i] = len(token.replace(SPACE_MARK, " ").encode("utf-8"))
        return out

    def to_json(self) -> str:
        """What the run keeps as ``tokenizer.json``: where the files are and their hashes (the fingerprint)."""
        record = {"format": FORMAT, "dir": RUN_MODEL_DIR, "class": type(self.hf).__name__,
                  "vocab_size": self.vocab_size, "files": self.files}
        record.update({"classify": True, "pad_id": self.eot_id} if self.classify else {"eos_id": self.eot_id})
        return json.dumps(record, sort_keys=True)

    def save_pretrained(self, out: Path) -> list[str]:
        """Write the tokenizer as transformers does (for ``gradwise export``); returns the file names."""
        return [Path(p).name for p in self.hf.save_pretrained(str(out))]


def _is_byte_level(tok: Any) -> bool:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders") or []]
    return "ByteLevel" in kinds


def load_hf_tokenizer(directory: str | Path, classify: bool = False) -> HFTokenizer:
    """The tokenizer of a local Hugging Face model directory, wrapped (needs transformers); ``classify``: for a
    classifier (:class:`HFTokenizer`)."""
    transformers = require("transformers", "model.arch hf")
    directory = Path(directory).expanduser()
    files = tokenizer_files(directory)
    if not files:
        raise DataError(f"no tokenizer files in {directory} (tokenizer.json, tokenizer_config.json, ...); "
                        "gradwise trains a Hugging Face model with its own tokenizer")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds; one line says which directory and why
        raise DataError(f"cannot load the tokenizer in {directory}: {str(exc).strip().splitlines()[0]}") from None
    return HFTokenizer(tok, files, str(directory), classify)


def load_any_tokenizer(path: Path) -> Tokenizer:
    """A run's tokenizer of any kind: character or BPE from its JSON, a Hugging Face model's from the files
    its record names."""
    text, data = read_tokenizer_file(path)
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return load_run_tokenizer(Path(path), data)
    return tokenizer_from_json(text)


def load_run_tokenizer(path: Path, record: dict[str, Any]) -> HFTokenizer:
    """A run's tokenizer from its ``tokenizer.json`` record: the copied files, checked against their hashes."""
    directory = Path(path).parent / str(record.get("dir", RUN_MODEL_DIR))
    tok = load_hf_tokenizer(directory, bool(record.get("classify", False)))
    if tok.files != record.get("files"):
        raise DataError(f"the tokenizer files in {directory} differ from those the run was trained with "
                        "(hashes in tokenizer.json); restore them or start a new run")
    return tok


def copy_tokenizer_files(source: Path, out: Path) -> None:
    """Copy the tokenizer files of ``source`` into ``out`` byte for byte (so their hashes still match)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in tokenizer_files(source):
        shutil.copyfile(source / name, out / name)


__all__ = ["FORMAT", "HFTokenizer", "copy_tokenizer_files", "load_hf_tokenizer", "load_run_tokenizer",
           "tokenizer_files"]
