"""Hugging Face in and out: export a gradwise GPT as a GPT-2 model directory, start training from one.

The conversion itself needs only what gradwise already uses (torch, safetensors, tokenizers): the files are
written and read directly. ``transformers`` is needed only to load an export back for checking
(``gradwise export --verify``) and by later features; it is imported lazily through :func:`require`, so the
core works without it.

- :mod:`gradwise.hf.convert`: weight and config mapping, ``export_hf`` and ``gpt_from_hf``.
- :mod:`gradwise.hf.tokenizer`: the tokenizer files (byte-level BPE as is; char as a WordLevel tokenizer).

Training any local causal LM as it is (``--model hf:DIR``, ``model.arch: hf``) needs transformers:

- :mod:`gradwise.hf.causal`: reading the directory, loading the model, fitting the context length.
- :mod:`gradwise.hf.auto_tokenizer`: the model's own tokenizer behind gradwise's Tokenizer interface.
- :mod:`gradwise.hf.lora`: LoRA adapters through peft (``--lora``).
- :mod:`gradwise.hf.wrapper`: what the causal LM and the classifier share (base record, counts, checks).
- :mod:`gradwise.hf.classifier`: any ``AutoModelForSequenceClassification`` as a classifier (``--task classify``).
- :mod:`gradwise.export.causal`: ``gradwise export`` of such runs (LoRA merged).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gradwise.core.errors import GradwiseError

HF_PREFIX = "hf:"  # model.init_from=hf:DIR starts from a Hugging Face GPT-2 model directory
INSTALL_HINT = "install the hf extra: pip install 'gradwise[hf]'"
RUN_MODEL_DIR = "hf"  # RUN/hf/: a model.arch hf run's copy of the model's config and tokenizer files


def is_hf_source(init_from: str | None) -> bool:
    """True for ``hf:DIR`` (a Hugging Face model directory) rather than a gradwise run directory."""
    return bool(init_from) and str(init_from).startswith(HF_PREFIX)


def hf_path(init_from: str) -> str:
    """``hf:DIR`` -> ``DIR``."""
    return str(init_from)[len(HF_PREFIX):] if is_hf_source(init_from) else str(init_from)


def available(module: str = "transformers") -> bool:
    """Whether ``module`` (default: transformers) can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require(module: str = "transformers", what: str = "this") -> ModuleType:
    """Import ``module`` or stop with one line that says how to install it."""
    from gradwise.core.runtime import quiet_torchao_import

    quiet_torchao_import()
    try:
        return importlib.import_module(module)
    except ImportError:
        raise GradwiseError(f"{what} needs the Python package '{module}'; {INSTALL_HINT}") from None


__all__ = ["HF_PREFIX", "INSTALL_HINT", "RUN_MODEL_DIR", "available", "hf_path", "is_hf_source", "require"]
