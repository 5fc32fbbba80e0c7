"""Training objectives: what the step minimises. A later issue adds classification and weighted sums."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


class CausalLMObjective:
    """Next-token cross-entropy in nats per token, averaged over non-ignored targets."""

    name = "lm"

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)

    @staticmethod
    def summed(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) loss, for exact evaluation over many batches."""
        logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
