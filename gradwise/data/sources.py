"""Corpus sources: a text file, a directory of text files, JSONL with a text field, or the embedded corpus.

Sources stream: they yield pieces of text of about a megabyte, so a corpus larger than memory can be
tokenized. Each piece says whether it ends a document, so tokenizers can put an end-of-text token
between documents (never inside one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gradwise.core.errors import DataError

PIECE_CHARS = 1 << 20  # stream text in pieces of about this many characters
BUILTIN_NAME = "builtin:python-docs"


@dataclass(frozen=True)
class Piece:
    text: str
    ends_document: bool


class TextSource(Protocol):
    """What the tokenizer and the token store read: a corpus, or a filtered view of one (deduplicated)."""

    def pieces(self) -> Iterator[Piece]: ...
    def fingerprint(self) -> str: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class CorpusSource:
    """A corpus on disk (or the embedded one) and how to read it."""

    kind: str  # builtin | text | dir | jsonl
    path: Path | None = None
    text_field: str = "text"

    # ------------------------------------------------------------ construction
    @staticmethod
    def from_config(path: str | None, fmt: str = "auto", text_field: str = "text") -> CorpusSource:
        if path is None or path == BUILTIN_NAME:
            return CorpusSource("builtin")
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError(f"data path '{path}' does not exist; pass --data with a text file, directory or .jsonl")
        if fmt == "auto":
            fmt = "dir" if p.is_dir() else ("jsonl" if p.suffix.lower() in (".jsonl", ".ndjson") else "text")
        if fmt == "dir" and not p.is_dir():
            raise DataError(f"data.format is 'dir' but '{path}' is a file; drop data.format or point at a directory")
        if fmt in ("text", "jsonl") and p.is_dir():
            raise DataError(f"data.format is '{fmt}' but '{path}' is a directory; use data.format=dir")
        return CorpusSource(fmt, p.resolve(), text_field)

    def describe(self) -> str:
        return BUILTIN_NAME if self.kind == "builtin" else f"{self.kind}:{self.path}"

    # ------------------------------------------------------------ reading
    def files(self) -> list[Path]:
        if self.kind == "builtin":
            return []
        if self.kind == "dir":
            assert self.path is not None
            found = sorted(p for p in self.path.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.path).parts))
            if not found:
                raise DataError(f"directory '{self.path}' holds no text files; add .txt files or point elsewhere")
            return found
        assert self.path is not None
        return [self.path]

    def pieces(self) -> Iterator[Piece]:
        """Yield the corpus text in order, in pieces of about PIECE_CHARS characters."""
        produced = False
        if self.kind == "builtin":
            it: Iterator[Piece] = _builtin_pieces()
        elif self.kind == "jsonl":
            assert self.path is not None
            it = _jsonl_pieces(self.path, self.text_field)
        else:
            it = (piece for f in self.files() for piece in _text_file_pieces(f))
        for piece in it:
            if piece.text:
                produced = True
            yield piece
        if not produced:
            raise DataError(f"the corpus {self.describe()} holds no text; point --data at a non-empty corpus")

    def fingerprint(self) -> str:
        """A hash of the corpus bytes (and layout), the key of the token cache."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.text_field}|".encode())
        if self.kind == "builtin":
            for piece in _builtin_pieces():
                h.update(piece.text.encode("utf-8"))
            return h.hexdigest()
        root = self.path if self.kind == "dir" else None
        for f in self.files():
            h.update(str(f.relative_to(root) if root else f.name).encode() + b"\0")
            hash_file(h, f)
        return h.hexdigest()


def hash_file(h: Any, path: Path) -> Any:
    """Feed a file's bytes to ``h`` in 4 MB reads (a corpus larger than memory hashes too)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h


def _builtin_pieces() -> Iterator[Piece]:
    """The Python reference documentation shipped inside CPython (pydoc_data.topics), topic by topic."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        raise DataError("this Python has no pydoc_data module (the embedded corpus); pass --data PATH") from None
    for key in sorted(topics):
        yield Piece(topics[key], True)


def _text_file_pieces(path: Path) -> Iterator[Piece]:
    buf: list[str] = []
    size = 0
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for line in fh:
                buf.append(line)
                size += len(line)
                if size >= PIECE_CHARS:
                    yield Piece("".join(buf), False)
                    buf, size = [], 0
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte {exc.start}); convert it to UTF-8 first") from None
    yield Piece("".join(buf), True)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line; errors name the line and say how to fix it."""
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno} is not valid JSON ({exc.msg}); fix or remove that line") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno} is not a JSON object; each line must be {{\"field\": ...}}")
                yield lineno, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 (byte {exc.start}); convert it to UTF-8 first") from None


def _jsonl_pieces(path: Path, field: str) -> Iterator[Piece]:
    for lineno, record in iter_jsonl(path):
        if field not in record:
            raise DataError(f"{path}:{lineno} has no '{field}' field; set data.text_field to the field "
                            f"that holds the text")
        text = record[field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field '{field}' must be a string, got {type(text).__name__}")
        yield Piece(text, True)
