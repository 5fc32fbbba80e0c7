"""Training objectives: what the step minimises, as named terms so each can be logged on its own.

An objective returns :class:`LossTerms`: the total to differentiate and its parts (for example the
cross-entropy and the z-loss). Losses are in nats per target token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # targets with this value (padding) count neither in the loss nor in the token total


@dataclass
class LossTerms:
    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def z_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared log-partition over non-ignored positions: keeps logits from drifting to large values."""
    lse = torch.logsumexp(logits.float(), dim=-1)
    mask = targets != IGNORE_INDEX
    return (lse.square() * mask).sum() / mask.sum().clamp_min(1)


class CausalLMObjective:
    """Next-token cross-entropy, with optional label smoothing and z-loss (logged as separate terms)."""

    name = "lm"

    def __init__(self, label_smoothing: float = 0.0, z_loss_weight: float = 0.0):
        self.label_smoothing = label_smoothing
        self.z_loss_weight = z_loss_weight

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> LossTerms:
        logits = model(inputs)  # (B, T, V)
        flat_logits, flat_targets = logits.flatten(0, 1).float(), targets.flatten()
        ce = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX,
                             label_smoothing=self.label_smoothing)
        if not self.z_loss_weight:
            return LossTerms(ce, {"lm": ce})
        z = z_loss(flat_logits, flat_targets)
        return LossTerms(ce + self.z_loss_weight * z, {"lm": ce, "z_loss": z})

    @staticmethod
    def summed(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Plain summed cross-entropy (no smoothing): the honest evaluation number, exact over many batches."""
        logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")


class ClassificationObjective:
    """Cross-entropy over classes, with optional class weights (for imbalance) and label smoothing."""

    name = "classify"

    def __init__(self, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 pad_id: int | None = None):
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id

    def tokens_in(self, inputs: torch.Tensor, labels: torch.Tensor) -> int:
        """Real (non-padding) input tokens: what throughput should count for a classifier."""
        return int((inputs != self.pad_id).sum()) if self.pad_id is not None else inputs.numel()

    def __call__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        logits = model(inputs)  # (B, C)
        weights = self.class_weights.to(logits.device) if self.class_weights is not None else None
        ce = F.cross_entropy(logits.float(), labels, weight=weights, label_smoothing=self.label_smoothing)
        return LossTerms(ce, {"classify": ce})
