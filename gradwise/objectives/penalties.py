"""Explicit L1 and L2 penalties on a chosen set of parameters, separate from decoupled weight decay.

Weight decay (``optim.weight_decay``) shrinks weights inside the optimizer step. These penalties are
added to the loss instead, so their gradient flows through the optimizer like the data loss does (and,
with Adam-type optimizers, is rescaled like it). Parameters are chosen by name pattern
(``fnmatch``: ``blocks.*.mlp.*.weight``); the penalty terms are logged next to the data loss.
"""

from __future__ import annotations

from fnmatch import fnmatch

import torch
from torch import nn

from gradwise.core.errors import ConfigError


class Penalties:
    def __init__(self, model: nn.Module, l1: float = 0.0, l2: float = 0.0, patterns: list[str] | None = None):
        self.l1, self.l2 = l1, l2
        patterns = patterns or ["*"]
        seen: set[int] = set()
        self.params: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) not in seen and any(fnmatch(name, pat) for pat in patterns):
                seen.add(id(p))
                self.params.append(p)
        if self.active and not self.params:
            names = ", ".join(n for n, _ in list(model.named_parameters())[:4])
            raise ConfigError(f"regularization.params {patterns} match no parameter; names look like {names}, ...")

    @property
    def active(self) -> bool:
        return bool(self.l1 or self.l2)

    def __call__(self) -> dict[str, torch.Tensor]:
        """The weighted penalty terms (``reg_l1``, ``reg_l2``); empty when both weights are 0."""
        terms: dict[str, torch.Tensor] = {}
        if self.l1:
            terms["reg_l1"] = self.l1 * torch.stack([_local(p).abs().sum() for p in self.params]).sum()
        if self.l2:
            terms["reg_l2"] = self.l2 * torch.stack([_local(p).square().sum() for p in self.params]).sum()
        return terms


def _local(p: torch.Tensor) -> torch.Tensor:
    """The part of ``p`` this process holds: an FSDP shard's own elements (each rank penalises its shard, the
    gradient lands on that shard, and the logged value is summed over ranks), or ``p`` itself."""
    return p.to_local() if hasattr(p, "to_local") else p
