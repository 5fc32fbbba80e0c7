"""Where a run computes, as one object: its device, its autocast dtype and its ranks. The run, the loop, the
final test and the header read these from here rather than each taking them one by one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradwise.config import Config
from gradwise.core.runtime import select_dtype
from gradwise.training.distributed import Distributed


@dataclass(frozen=True)
class RunContext:
    dist: Distributed  # under torchrun the process group and this rank; one process: a Distributed that does nothing
    autocast_dtype: torch.dtype | None  # bf16 autocast, or None for fp32

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @classmethod
    def of(cls, cfg: Config, dist: Distributed) -> RunContext:
        """The context ``cfg`` trains in on ``dist``'s device (train.dtype decides the autocast)."""
        return cls(dist, select_dtype(cfg.train.dtype, dist.device))
