"""Free memory where a run will train: the GPU's free bytes, or the RAM the OS (and a cgroup limit) allows; and
the one refusal every memory preflight (train, tune, lr-find, step, generate) ends in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from gradwise.core.errors import GradwiseError

MEMORY_HEADROOM = 0.9  # plan to use at most this share of free memory (allocator slack, the OS, other tensors)


def available_memory(device: torch.device) -> tuple[int, str]:
    """Free memory where the run will train: the GPU's free bytes, else the RAM the OS can still hand out."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    free, source = _meminfo_available()
    limit = _cgroup_free()
    if limit is not None and limit < free:
        return limit, "cgroup memory limit minus usage"
    return free, source


def _meminfo_available() -> tuple[int, str]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages (sysconf)"


def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def refuse_beyond_free(need: int, device: torch.device, what: str, advice: Callable[[float], str]) -> None:
    """Raise the one-line refusal when ``need`` bytes are beyond MEMORY_HEADROOM of the device's free memory;
    ``advice`` gets the usable bytes and says what to change."""
    available, source = available_memory(device)
    usable = MEMORY_HEADROOM * available
    if need <= usable:
        return
    raise GradwiseError(f"{what} needs about {fmt_bytes(need)} of memory on {device.type} and "
                        f"{fmt_bytes(available)} is free ({source}): {advice(usable)}")
