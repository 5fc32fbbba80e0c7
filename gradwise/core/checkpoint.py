"""Checkpoints: safetensors weights + safetensors/JSON trainer state, written atomically. No pickle.

A checkpoint is a directory: ``model.safetensors``, optionally ``trainer.safetensors`` (optimizer
tensors and RNG states) and ``state.json`` (step, counters, optimizer hyperparameters, scheduler,
Python/numpy RNG, and the byte size of every file). It is written under a temporary name, flushed to
disk and swapped in by renames, so a kill at any moment leaves the previous checkpoint intact; a
truncated or damaged file is refused with a message that names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from gradwise.core.errors import CheckpointError

FORMAT = "gradwise-checkpoint-v1"
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.safetensors"
STATE_FILE = "state.json"


# ---------------------------------------------------------------- save

def save_checkpoint(directory: Path, model: torch.nn.Module, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
                    model_state: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict[str, Any] | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write a checkpoint to ``directory`` atomically (the old one stays until the new one is whole).

    ``extra_tensors`` go into trainer.safetensors beside the optimizer's (the weights' moving average,
    gradwise.training.averaging); :func:`read_trainer_tensors` gives them back.

    ``model_state`` / ``optimizer_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()`` when the
    live objects hold shards (FSDP gathers the full state first, gradwise.training.distributed), so every checkpoint
    has the same full layout whatever wrote it.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        base = getattr(model, "frozen_base", None)  # frozen pretrained weights (LoRA): saved once, at their source
        if base is not None:
            frozen = model.frozen_keys()
            model_state = {k: v for k, v in (model_state or model.state_dict()).items() if k not in frozen}
        if model_state is None:
            save_model(model, str(tmp / MODEL_FILE))
        else:
            save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / MODEL_FILE),
                      metadata={"format": "pt"})
        full_state = {"format": FORMAT, **state, "rng": _rng_json()}
        if base is not None:
            full_state["frozen_base"] = base
        tensors = {**_rng_tensors(), **(extra_tensors or {})}
        if optimizer is not None:
            opt_tensors, opt_json = _flatten_optimizer(optimizer_state or optimizer.state_dict())
            tensors.update(opt_tensors)
            full_state["optimizer"] = opt_json
        if scheduler is not None:
            sched = scheduler.state_dict()
            if "lr_lambdas" in sched:  # our lambdas hold no state: record them as None, as torch does
                sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
            full_state["scheduler"] = sched
        save_file(tensors, str(tmp / TRAINER_FILE))
        full_state["files"] = {f: (tmp / f).stat().st_size for f in (MODEL_FILE, TRAINER_FILE)}
        (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=1))
        for f in (MODEL_FILE, TRAINER_FILE, STATE_FILE):
            _fsync(tmp / f)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)  # from here until the next rename, `old` is the valid checkpoint
    tmp.rename(final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        _fsync(path)


# ---------------------------------------------------------------- load

def resolve_checkpoint(directory: Path) -> Path:
    """The checkpoint directory to read, falling back to the previous one a killed save left behind."""
    directory = Path(directory)
    if (directory / STATE_FILE).is_file():
        return directory
    old = directory.with_name(f".{directory.name}.old")
    if (old / STATE_FILE).is_file():
        return old
    raise CheckpointError(f"no checkpoint at {directory}; is this a gradwise run directory that saved one?")


def read_state(directory: Path) -> dict[str, Any]:
    path = resolve_checkpoint(directory)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged ({STATE_FILE}: {exc}); resume from another "
                              "checkpoint or start the run again") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    for name, size in state.get("files", {}).items():
        f = path / name
        actual = f.stat().st_size if f.is_file() else -1
        if actual != size:
            raise CheckpointError(f"checkpoint {path} is damaged: {name} has {max(actual, 0)} bytes, expected {size} "
                                  "(truncated?); resume from another checkpoint or start the run again")
    return state


def load_weights(directory: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; returns its state.json."""
    state = read_state(directory)
    path = resolve_checkpoint(directory)
    allowed_missing = reconcile_frozen_base(path, state, model)
    try:
        missing, unexpected = load_model(model, str(path / MODEL_FILE), strict=False)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be loaded ({MODEL_FILE}: {str(exc).splitlines()[0]}); "
                              "it is damaged or from a different model config") from None
    missing = [k for k in missing if k not in allowed_missing]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not match the model (missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(unexpected)[:3]}); use the config the run was trained with")
    return state


def reconcile_frozen_base(path: Path, state: dict[str, Any], model: torch.nn.Module) -> set[str]:
    """The keys a checkpoint may leave out, and the model's base record made true: a checkpoint saved without
    its frozen base (LoRA) may leave out that base's keys once the model is known to hold that very base
    (otherwise one line says what is wrong); a full checkpoint clears the record, since its weights replace
    the base's (an older run keeps saving full checkpoints)."""
    saved = state.get("frozen_base")
    if saved is None:
        if getattr(model, "frozen_base", None) is not None:  # a full checkpoint (a run from before adapter-only
            model.frozen_base = None  # saving): the model now holds its weights, so its checkpoints stay full
        return set()
    held = getattr(model, "frozen_base", None)
    if held is None:
        raise CheckpointError(f"checkpoint {path} holds only the trained (LoRA) weights; its frozen base model "
                              f"hf:{saved['path']} is not there: put the base model back at that path")
    if held["fingerprint"] != saved["fingerprint"]:
        raise CheckpointError(f"checkpoint {path} was trained on a base model whose weights differ from those now "
                              f"at hf:{held['path']} (SHA-256 of the weight files); restore the original base model")
    return model.frozen_keys()


def load_checkpoint(directory: Path, model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; returns its state.json.

    ``model=None`` leaves the weights to the caller (FSDP loads them into its shards itself)."""
    state = load_weights(directory, model) if model is not None else read_state(directory)
    path = resolve_checkpoint(directory)
    tensors = _trainer_tensors(path)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(path, state, tensors))
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        _restore_rng(state["rng"], tensors)
    return state


def read_optimizer_state(directory: Path) -> dict[str, Any]:
    """A checkpoint's optimizer state in torch's ``state_dict`` layout (full tensors, on the CPU)."""
    state = read_state(directory)
    path = resolve_checkpoint(directory)
    return _optimizer_state(path, state, _trainer_tensors(path))


def read_trainer_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's trainer.safetensors (optimizer state, RNG, extra tensors), checked whole."""
    read_state(directory)
    return _trainer_tensors(resolve_checkpoint(directory))


def _trainer_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path / TRAINER_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged ({TRAINER_FILE}: {exc}); resume from another "
                              "checkpoint or start again") from None


def _optimizer_state(path: Path, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if "optimizer" not in state:
        raise CheckpointError(f"checkpoint {path} holds no optimizer state (a best-model checkpoint?); "
                              "resume from checkpoints/last")
    return _unflatten_optimizer(state["optimizer"], tensors)


# ---------------------------------------------------------------- optimizer state <-> tensors + JSON

def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state dict -> tensors (safetensors) + everything else (JSON); combined optimizers part by part."""
    parts = sd.get("optimizers", [sd])
    tensors: dict[str, torch.Tensor] = {}
    parts_json = []
    for k, part in enumerate(parts):
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in part["state"].items():
            for key, value in st.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{k}.{idx}.{key}"] = value.detach().contiguous().cpu()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        parts_json.append({"param_groups": part["param_groups"], "scalars": scalars})
    return tensors, {"combined": "optimizers" in sd, "parts": parts_json}


def _unflatten_optimizer(data: dict, tensors: dict[str, torch.Tensor]) -> dict:
    parts = []
    for k, part in enumerate(data["parts"]):
        prefix = f"optim.{k}."
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if name.startswith(prefix):
                idx, key = name[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[key] = value
        for idx, values in part.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(values)
        # JSON turned hyperparameter tuples (betas, eps pairs, coefficients) into lists: turn them back.
        groups = [{key: (tuple(v) if isinstance(v, list) and key != "params" else v) for key, v in g.items()}
                  for g in part["param_groups"]]
        parts.append({"state": state, "param_groups": groups})
    return {"optimizers": parts} if data["combined"] else parts[0]


# ---------------------------------------------------------------- RNG

def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def _rng_json() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    return {"numpy": [kind, keys.tolist(), pos, has_gauss, cached], "python": [version, list(pystate), gauss]}


def _restore_rng(data: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, pystate, gauss = data["python"]
    random.setstate((version, tuple(pystate), gauss))
