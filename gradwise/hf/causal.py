"""A local Hugging Face causal-LM directory as the model of a gradwise run (``model.arch: hf``).

The model is whatever ``AutoModelForCausalLM`` builds from the directory: gradwise does not convert it,
it trains it as it is. What this module adds is the checking a run needs before any work: the directory
exists and holds safetensors weights (pickled ``.bin`` files are refused, never unpickled), the context
fits the model's positions, and errors are one line. Weights are loaded in fp32 (transformers 5 keeps the
checkpoint's dtype unless told otherwise); bf16 autocast on CUDA happens in the step as for any model.

A run keeps ``RUN/hf/`` (config.json, generation_config.json and the tokenizer files), so resume, eval,
generate and export rebuild the model from the run alone and then load its checkpoint. A LoRA run's
checkpoints hold only what trains (the adapters): its frozen base is read again from ``model.hf_path``,
checked against the SHA-256 of its config and weight files recorded at training time (:func:`base_fingerprint`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gradwise.core.errors import ConfigError, GradwiseError
from gradwise.core.rundir import write_json
from gradwise.data.sources import hash_file
from gradwise.data.store import default_cache_dir
from gradwise.hf import RUN_MODEL_DIR, require
from gradwise.hf.auto_tokenizer import copy_tokenizer_files

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
RUN_FILES = (CONFIG_FILE, "generation_config.json")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[Any]:
    """No progress bars or info lines from transformers while gradwise loads a model (restored afterwards)."""
    transformers = require("transformers", "model.arch hf")
    level, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.logging.enable_progress_bar()


def model_dir(path: str | Path, weights: bool = False) -> Path:
    """``path`` as an absolute model directory with a config.json (and, with ``weights``, safetensors weights)."""
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise GradwiseError(f"hf:{path}: no such directory; give a local Hugging Face model directory "
                            "(config.json, model.safetensors, tokenizer files); gradwise downloads nothing")
    if not (directory / CONFIG_FILE).is_file():
        raise GradwiseError(f"hf:{directory} has no {CONFIG_FILE}; is it a Hugging Face model directory "
                            "(what save_pretrained writes)?")
    if weights and not any((directory / f).is_file() for f in WEIGHT_FILES):
        if any((directory / f).is_file() for f in PICKLED):
            raise GradwiseError(f"hf:{directory} holds pickled or non-PyTorch weights only; gradwise reads "
                                "safetensors: re-save it with transformers (from_pretrained, then save_pretrained)")
        raise GradwiseError(f"hf:{directory} has no model.safetensors; is the model directory complete?")
    return directory


def model_config(directory: Path) -> Any:
    """The directory's transformers config (``AutoConfig``), or one line saying why not."""
    with quiet_transformers() as transformers:
        try:
            return transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
        except Exception as exc:
            raise GradwiseError(f"cannot read the model config in {directory}: {_first_line(exc)}") from None


def max_positions(config: Any) -> int | None:
    """The longest context the model was built for (None when its config does not say)."""
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def fit_hf_model(cfg: Any, explicit_block_size: bool) -> None:
    """Record ``model.hf_path`` as an absolute path and fit ``model.block_size`` to the model's positions:
    a context set on purpose (``--set model.block_size``) beyond them is refused, a default one is lowered."""
    m = cfg.model
    directory = model_dir(m.hf_path)
    m.hf_path = str(directory)
    limit = max_positions(model_config(directory))
    if limit is not None and m.block_size > limit:
        if explicit_block_size:
            raise ConfigError(f"model.block_size {m.block_size} exceeds the {limit} positions of hf:{directory}; "
                              f"use at most {limit}")
        m.block_size = limit


def load_pretrained(path: str | Path) -> Any:
    """The directory's causal LM with its trained weights, in fp32 and eval mode."""
    directory = model_dir(path, weights=True)
    with quiet_transformers() as transformers:
        try:
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                str(directory), local_files_only=True, use_safetensors=True, output_loading_info=True)
        except Exception as exc:
            raise GradwiseError(f"cannot load hf:{directory} as a causal language model: {_first_line(exc)}") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise GradwiseError(f"hf:{directory} lacks weights the model needs ({', '.join(missing[:3])}"
                            f"{', ...' if len(missing) > 3 else ''}); is it a causal-LM checkpoint?")
    return model.float().eval()


def from_run(run_dir: Path) -> Any:
    """A run's causal LM rebuilt from its copy of the config (fresh weights: the checkpoint fills them)."""
    directory = model_dir(Path(run_dir) / RUN_MODEL_DIR)
    return from_config(directory, f"the model of {run_dir} from {directory}").eval()


def from_config(directory: Path, what: str, device: torch.device | str = "cpu") -> Any:
    """The directory's causal LM with fresh fp32 weights on ``device`` (the meta device: shapes only), built
    from its config.json alone; a model transformers cannot build is one line naming ``what``."""
    config = model_config(directory)
    with quiet_transformers() as transformers, torch.device(device):
        try:
            model = transformers.AutoModelForCausalLM.from_config(config)
        except Exception as exc:
            raise GradwiseError(f"cannot build {what}: {_first_line(exc)}") from None
    return model.float()


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding a model directory's weights (one file, or the shards of an index)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise GradwiseError(f"hf:{directory}: cannot read {index.name} ({exc}); is the model directory complete?") \
                from None
        return [directory / name for name in shards]
    return [directory / "model.safetensors"]


def base_fingerprint(path: str | Path) -> str:
    """SHA-256 over the directory's config.json and weight files, cached by (file, size, inode, mtime, ctime) so
    a 14 GB base is hashed once, not at every resume: what a LoRA checkpoint records to know its frozen base
    (architecture settings included) has not changed."""

    directory = model_dir(path, weights=True)
    cache_path = default_cache_dir() / "hf-weight-hashes.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    total, changed = hashlib.sha256(), False
    for f in [directory / CONFIG_FILE, *weight_files(directory)]:
        if not f.is_file():
            raise GradwiseError(f"hf:{directory} lacks the weight file {f.name}; is the model directory complete?")
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}|{st.st_ctime_ns}"
        if key not in cache:
            cache[key], changed = hash_file(hashlib.sha256(), f).hexdigest(), True
        total.update(f"{f.name}:{cache[key]};".encode())
    if changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_path, cache)
    return total.hexdigest()


def save_run_files(source: str | Path, run_dir: Path) -> None:
    """Copy the model's config and tokenizer files into ``RUN/hf/`` (what rebuilding the run needs)."""
    source, out = model_dir(source), Path(run_dir) / RUN_MODEL_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    copy_tokenizer_files(source, out)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["fit_hf_model", "from_run", "load_pretrained", "max_positions", "model_config", "model_dir",
           "quiet_transformers", "save_run_files", "weight_files", "base_fingerprint"]
