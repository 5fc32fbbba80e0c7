"""Tokenizer files for Hugging Face model directories, both ways.

Out: a byte-level BPE tokenizer already is a Hugging Face ``tokenizers`` tokenizer, so ``tokenizer.json`` is
written as is. A char tokenizer becomes a ``WordLevel`` tokenizer over the same characters with the same ids:
every character is isolated by a regex pre-tokenizer (one piece per Unicode code point, whitespace and
newlines included) and looked up, and the decoder joins the pieces back without spaces. The end-of-text
token keeps its id (the last one). Two differences, both documented: a character outside the vocabulary,
which gradwise refuses, encodes to the end-of-text id (a Hugging Face tokenizer needs an unknown token),
and the literal text ``<|endoftext|>`` encodes to the end-of-text id rather than to its 13 characters.
``tokenizer_config.json`` names ``PreTrainedTokenizerFast``, so ``AutoTokenizer`` loads exactly this
tokenizer.json with no class-specific rewriting.

In: ``tokenizer.json`` (or GPT-2's older ``vocab.json`` + ``merges.txt``) becomes a gradwise
``BPETokenizer`` when it is a byte-level BPE with an ``<|endoftext|>`` token, or a ``CharTokenizer`` when it
is the WordLevel form written above. Anything else is refused: gradwise's bits-per-byte accounting needs
to know how many bytes each token stands for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gradwise.core.errors import GradwiseError
from gradwise.data.tokenizers import EOT, BPETokenizer, CharTokenizer, Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_FILE = "special_tokens_map.json"
CHAR_SPLIT = r"[\s\S]"  # any one code point, newlines included


# ---------------------------------------------------------------- gradwise -> Hugging Face

def char_to_hf(tok: CharTokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` that gives the char tokenizer's ids for every text it accepts."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    if EOT in tok.chars:  # impossible for a trained one (EOT is many characters), checked for hand-made ones
        raise GradwiseError(f"the char tokenizer lists {EOT!r} as a character; it cannot be exported")
    vocab = {c: i for i, c in enumerate(tok.chars)}
    vocab[EOT] = tok.eot_id
    out = HFTokenizer(models.WordLevel(vocab, unk_token=EOT))
    out.pre_tokenizer = pre_tokenizers.Split(Regex(CHAR_SPLIT), behavior="isolated")
    out.decoder = decoders.Fuse()
    out.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return out


def hf_tokenizer_json(tok: Tokenizer) -> str:
    """The ``tokenizer.json`` text for a gradwise tokenizer."""
    if isinstance(tok, CharTokenizer):
        return char_to_hf(tok).to_str()
    if isinstance(tok, BPETokenizer):
        return tok.to_json()
    raise GradwiseError(f"cannot export a {getattr(tok, 'kind', type(tok).__name__)} tokenizer; "
                        "gradwise exports its char and bpe tokenizers")


def write_tokenizer(tok: Tokenizer, out: Path, model_max_length: int) -> list[str]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into ``out``; returns their names."""
    (out / TOKENIZER_FILE).write_text(hf_tokenizer_json(tok), encoding="utf-8")
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False, "add_prefix_space": False}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / SPECIAL_FILE).write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return [TOKENIZER_FILE, CONFIG_FILE, SPECIAL_FILE]


# ---------------------------------------------------------------- Hugging Face -> gradwise

def read_tokenizer(directory: Path) -> Tokenizer:
    """The gradwise tokenizer equivalent to the one in a Hugging Face model directory."""
    directory = Path(directory)
    path = directory / TOKENIZER_FILE
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GradwiseError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        return _from_tokenizer_json(path, text, data)
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _from_vocab_merges(directory)
    raise GradwiseError(f"no tokenizer in {directory} (tokenizer.json, or vocab.json + merges.txt); gradwise "
                        "needs the model's own tokenizer")


def _from_tokenizer_json(path: Path, text: str, data: Any) -> Tokenizer:
    model = data.get("model") if isinstance(data, dict) else None
    kind = model.get("type") if isinstance(model, dict) else None
    if kind == "WordLevel":
        chars = _char_vocabulary(model.get("vocab", {}))
        if chars is None:
            raise GradwiseError(f"{path} is a word-level tokenizer; gradwise imports byte-level BPE (GPT-2 style) "
                                "tokenizers and the char tokenizers it exports")
        return CharTokenizer(chars)
    if kind != "BPE" or not _is_byte_level(data.get("pre_tokenizer")):
        raise GradwiseError(f"{path} is a {kind or 'unknown'} tokenizer without byte-level pre-tokenization; "
                            "gradwise imports byte-level BPE (GPT-2 style) tokenizers and its own char tokenizers")
    if EOT not in model.get("vocab", {}) and EOT not in {t.get("content") for t in data.get("added_tokens") or []}:
        raise GradwiseError(f"{path} has no {EOT} token; gradwise separates documents with GPT-2's end-of-text "
                            "token and needs it in the vocabulary")
    return BPETokenizer.from_json(text)


def _char_vocabulary(vocab: dict[str, int]) -> list[str] | None:
    """The characters in id order if ``vocab`` is a char tokenizer's (single characters, then EOT last)."""
    n = len(vocab)
    if n < 2 or vocab.get(EOT) != n - 1 or sorted(vocab.values()) != list(range(n)):
        return None
    chars = sorted((t for t in vocab if t != EOT), key=vocab.__getitem__)
    return chars if all(len(c) == 1 for c in chars) else None


def _is_byte_level(pre: Any) -> bool:
    if not isinstance(pre, dict):
        return False
    if pre.get("type") == "ByteLevel":
        return True
    return pre.get("type") == "Sequence" and any(_is_byte_level(p) for p in pre.get("pretokenizers", []))


def _from_vocab_merges(directory: Path) -> Tokenizer:
    """GPT-2's original files: vocab.json + merges.txt, byte-level, <|endoftext|> as the special token."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    try:
        vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        bpe = models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt"))
    except Exception as exc:
        raise GradwiseError(f"cannot read the tokenizer in {directory} (vocab.json, merges.txt): "
                            f"{str(exc).splitlines()[0]}") from None
    if EOT not in vocab:
        raise GradwiseError(f"{directory / 'vocab.json'} has no {EOT} token; gradwise separates documents with "
                            "GPT-2's end-of-text token and needs it in the vocabulary")
    settings = _read_json(directory / CONFIG_FILE)
    tok = HFTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(settings.get("add_prefix_space", False)))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return BPETokenizer(tok)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
