"""Training objectives: what the step minimises, as named terms so each can be logged on its own.

An objective returns :class:`LossTerms`: the total to differentiate and its parts (for example the
cross-entropy and the z-loss). Losses are in nats per target token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # targets with this value (padding) count neither in the loss nor in the token total


@dataclass
class LossTerms:
    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


# An objective returns LossTerms (total + named parts) or just the loss tensor.
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], "LossTerms | torch.Tensor"]


def z_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared log-partition over non-ignored positions: keeps logits from drifting to large values."""
    lse = torch.logsumexp(logits.float(), dim=-1)
    mask = targets != IGNORE_INDEX
    return (lse.square() * mask).sum() / mask.sum().clamp_min(1)


class CausalLMObjective:
    """Next-token cross-entropy, with optional label smoothing and z-loss (logged as separate terms)."""

    name = "lm"

    def __init__(self, label_smoothing: float = 0.0, z_loss_weight: float = 0.0, fused: bool = False):
        self.label_smoothing = label_smoothing
        self.z_loss_weight = z_loss_weight
        self.fused = fused  # the model computes the loss itself, in chunks (GPT: chunked_ce.py)

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> LossTerms:
        if self.fused:
            total, ce, z = model(inputs, loss_targets=targets, label_smoothing=self.label_smoothing,
                                 z_loss=self.z_loss_weight)
            return LossTerms(total, {"lm": ce, "z_loss": z} if self.z_loss_weight else {"lm": ce})
        logits = model(inputs)  # (B, T, V)
        flat_logits, flat_targets = logits.flatten(0, 1).float(), targets.flatten()
        ce = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX,
                             label_smoothing=self.label_smoothing)
        if not self.z_loss_weight:
            return LossTerms(ce, {"lm": ce})
        z = z_loss(flat_logits, flat_targets)
        return LossTerms(ce + self.z_loss_weight * z, {"lm": ce, "z_loss": z})

    @staticmethod
    def summed(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """Plain summed cross-entropy (no smoothing): the honest evaluation number, exact over many batches."""
        if fused:  # the model's chunked loss is a mean over the non-ignored targets: back to a sum
            return model(inputs, loss_targets=targets)[1] * (targets != IGNORE_INDEX).sum()
        logits = model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")


class ClassificationObjective:
    """A classifier's objective: a weighted sum of terms computed from one forward pass.

    ``classify``: cross-entropy over classes (optional class weights for imbalance, label smoothing).
    ``multilabel``: binary cross-entropy per class (labels are multi-hot; ``class_weights`` act as pos_weight).
    ``lm``: next-token cross-entropy on the input text itself (GPT backbone only), an auxiliary loss that
    keeps a pretrained backbone's language knowledge while it learns the classes.
    Each term is logged under its own name; the total is what is differentiated.
    """

    name = "classify"

    def __init__(self, terms: list[tuple[str, float]] | None = None, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0, pad_id: int | None = None):
        self.terms = terms or [("classify", 1.0)]
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.pad_id = pad_id
        self.with_lm = any(name == "lm" for name, _ in self.terms)

    def tokens_in(self, inputs: torch.Tensor, labels: torch.Tensor) -> int:
        """Real (non-padding) input tokens: what throughput should count for a classifier."""
        return int((inputs != self.pad_id).sum()) if self.pad_id is not None else inputs.numel()

    def __call__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        out = model(inputs, with_lm=True) if self.with_lm else model(inputs)
        logits, lm_logits = out if self.with_lm else (out, None)
        if self.class_weights is not None and self.class_weights.device != logits.device:
            self.class_weights = self.class_weights.to(logits.device)  # once, not a copy every micro-batch
        weights = self.class_weights
        parts: dict[str, torch.Tensor] = {}
        for name, _ in self.terms:
            if name == "classify":
                parts[name] = F.cross_entropy(logits.float(), labels, weight=weights,
                                              label_smoothing=self.label_smoothing)
            elif name == "multilabel":
                parts[name] = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights)
            elif name == "lm":
                parts[name] = self._lm_loss(lm_logits, inputs)
            else:
                raise ValueError(f"unknown objective term {name!r}")
        total = sum(w * parts[name] for name, w in self.terms)
        return LossTerms(total, parts)

    def _lm_loss(self, lm_logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        targets = inputs[:, 1:].clone()
        if self.pad_id is not None:
            targets[targets == self.pad_id] = IGNORE_INDEX
        summed = F.cross_entropy(lm_logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                 ignore_index=IGNORE_INDEX, reduction="sum")
        return summed / (targets != IGNORE_INDEX).sum().clamp_min(1)  # a batch of one-token texts gives 0, not NaN
