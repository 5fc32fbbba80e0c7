"""Shared plumbing of gradwise's own foreach optimizers (Lion, Muon)."""

from __future__ import annotations

import torch


def grads_and_buffers(optimizer: torch.optim.Optimizer, group: dict,
                      key: str) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The group's parameters that have gradients, those gradients, and each one's state buffer ``key``
    (zeros on first use): the lists a foreach step works on."""
    params = [p for p in group["params"] if p.grad is not None]
    buffers = []
    for p in params:
        state = optimizer.state[p]
        if key not in state:
            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        buffers.append(state[key])
    return params, [p.grad for p in params], buffers
