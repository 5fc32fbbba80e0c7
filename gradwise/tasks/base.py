"""What every task is: the :class:`Task` protocol the loop, the run and the tools program against, and the
:class:`EvalReport` a task's evaluation returns.

- ``lm`` (:mod:`gradwise.tasks.lm`): language modelling on a token stream (next-token cross-entropy, bits
  per byte).
- ``classify`` (:mod:`gradwise.tasks.classify`): text classification on labelled records (class or
  multi-label cross-entropy, accuracy and F1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from gradwise.config import Config
from gradwise.data.tokenizers import Tokenizer

if TYPE_CHECKING:
    from gradwise.objectives.losses import Objective
    from gradwise.training.distributed import Distributed


@dataclass
class EvalReport:
    loss: float
    scalars: dict[str, float] = field(default_factory=dict)  # logged as val_<name> / test_<name>
    details: dict[str, Any] | None = None  # kept in summary.json (per-class metrics, confusion matrix)

    def shared(self, dist: Distributed) -> EvalReport:
        """Rank 0's report on every rank, so the best checkpoint and early stopping are decided alike."""
        return EvalReport(**dist.broadcast_json(asdict(self)))


class Task(Protocol):
    """A task prepares its data, builds its model and objective, draws training batches and evaluates a split;
    the loop and the run work the same for every task."""

    cfg: Config
    tokenizer: Tokenizer

    def check(self, splits: tuple[str, ...]) -> None: ...  # each named split is large enough to use

    @property
    def dedupe(self) -> dict[str, int] | None: ...  # what data.dedupe removed, if it ran

    def data_check(self) -> dict[str, Any]: ...  # duplicates and leakage across the split (data_check.json)

    def baseline(self) -> dict[str, Any] | None: ...  # the classic model on the same split, or None for none

    def save(self, run_dir: Path) -> None: ...  # what a run directory needs to rebuild the task's data

    def build_model(self) -> nn.Module: ...

    def objective(self) -> Objective: ...

    def micro_batch(self, step: int, micro: int) -> tuple[np.ndarray, np.ndarray]: ...

    def evaluate(self, model: nn.Module, split: str, device: torch.device, autocast_dtype: torch.dtype | None,
                 fixed_subset: bool, windows: int | None = None) -> EvalReport: ...  # windows: of a fixed subset

    def describe(self) -> str: ...

    def split_sizes(self) -> dict[str, int]: ...
