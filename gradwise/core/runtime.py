"""The machine side of a run: device and precision choice, allocator tuning, determinism, seeding."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gradwise.core.errors import ConfigError

_allocator_tuned = False


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is visible; use --set train.device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is mps but MPS is not available; use --set train.device=cpu")
    return device


def compiled(module: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """``torch.compile(module)`` in ``train.compile_mode`` (one place, so training, evaluation and the
    benchmark compile alike)."""
    return torch.compile(module, mode=None if mode == "default" else mode)


def is_sharded(t: torch.Tensor) -> bool:
    """An FSDP2 parameter or a norm over its shards: a DTensor."""
    return hasattr(t, "full_tensor") and hasattr(t, "device_mesh")


def whole(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind an FSDP2 DTensor (a collective when it is sharded); a plain tensor as it is."""
    return t.full_tensor() if is_sharded(t) else t


def uses_cuda_graphs(compile: bool, mode: str) -> bool:
    """Whether ``torch.compile`` in this mode replays CUDA graphs (on CUDA devices)."""
    return compile and mode in ("reduce-overhead", "max-autotune")


def unverified_on_gpu(train: object, device: torch.device) -> list[str]:
    """The CUDA levers this run turns on that have never run on a real GPU (no GPU has been lent to check them
    yet): the run header names them, so a user knows which speed-ups are still untested there."""
    if device.type != "cuda":
        return []
    t: Any = train
    asked = [("train.compile", t.compile), (f"train.compile_mode={t.compile_mode}",
                                           t.compile and t.compile_mode != "default"),
             ("train.fused_ce", t.fused_ce), ("train.fp8", t.fp8), ("train.async_steps", bool(t.async_steps))]
    return [name for name, on in asked if on]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): a no-op elsewhere. Timers call it so that
    GPU time lands in the interval that queued it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def select_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA by default, none (fp32) elsewhere unless asked."""
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


@contextlib.contextmanager
def backends_for_training(device: torch.device, deterministic: bool) -> Iterator[None]:
    """TF32 on CUDA, deterministic kernels on CPU (exact resume) and a tuned allocator, for one run.

    The deterministic switch is process-wide in PyTorch, so the caller's setting is put back afterwards.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    tune_allocator()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def tune_allocator() -> None:
    """Stop glibc from returning large freed buffers to the OS after every step.

    On CPU the activations of each step are freed and allocated again; with glibc's default dynamic
    mmap threshold these go back to the kernel each time and fault in again (thousands of page faults
    per step, 15-20% slower). Fixed thresholds keep them in the heap. No-op off glibc.
    """
    global _allocator_tuned
    if _allocator_tuned or not sys.platform.startswith("linux") or os.environ.get("GRADWISE_NO_MALLOPT"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    except (OSError, AttributeError):
        pass
    _allocator_tuned = True


def micro_batch_seed(seed: int, step: int, micro: int) -> int:
    """The RNG seed of one micro-batch's forward (dropout masks): a pure function of (seed, step, micro-batch),
    so a resumed run and every rank of a data-parallel run draw the masks one process would have drawn."""
    return int(np.random.SeedSequence([seed % 2**32, step, micro, 0x6D61736B]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def quiet_torchao_import() -> None:
    """Install the filter (once) on the loggers torchao's import writes to."""
    for name in ("torchao", "torch.utils._pytree"):
        log = logging.getLogger(name)
        if _NOISE not in log.filters:
            log.addFilter(_NOISE)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked (the default on CUDA); a no-op for fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _TorchaoImportNoise(logging.Filter):
    """Drops what torchao's import logs where its build and torch's differ: which optional CUDA kernels it
    could not load, and torch's deprecation note on how it registers enums. Neither concerns gradwise, and
    transformers imports torchao wherever it is installed, so Hugging Face runs would show them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("torchao" in message and message.startswith("Failed to load")
                    or "is an Enum subclass and is now natively supported" in message)


_NOISE = _TorchaoImportNoise()
