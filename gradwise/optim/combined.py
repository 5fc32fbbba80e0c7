"""Several optimizers over disjoint parameter sets, acting as one optimizer.

Muon only takes 2-D hidden weight matrices; embeddings, the output head, norms and biases need another
optimizer (AdamW). Wrapped as one ``torch.optim.Optimizer``, the pair works with every learning-rate
scheduler, the optimization step and checkpoints unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class CombinedOptimizer(torch.optim.Optimizer):
    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        # Optimizer.__init__ is not called on purpose: the parts own the parameters and their state.
        self.optimizers = list(optimizers)
        self.defaults: dict[str, Any] = {}

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        """Live view: load_state_dict replaces the parts' group dicts, so never cache them."""
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property  # type: ignore[override]
    def state(self) -> dict:
        merged: dict = {}
        for opt in self.optimizers:
            merged.update(opt.state)
        return merged

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        parts = state_dict["optimizers"]
        if len(parts) != len(self.optimizers):
            raise ValueError(f"state holds {len(parts)} optimizers, this one has {len(self.optimizers)}")
        for opt, part in zip(self.optimizers, parts, strict=True):
            opt.load_state_dict(part)

    def __repr__(self) -> str:
        return "CombinedOptimizer(" + ", ".join(type(o).__name__ for o in self.optimizers) + ")"


def optimizer_parts(optimizer: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """The optimizers that really hold parameters and state: a CombinedOptimizer's parts, or the optimizer."""
    return list(getattr(optimizer, "optimizers", None) or [optimizer])
