"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): sign of an interpolated momentum.

PyTorch ships no Lion. The update is a sign, so every coordinate moves by exactly ``lr``: use a
learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger, as the paper advises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from gradwise.optim.state import grads_and_buffers


class Lion(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if lr < 0 or not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0 or weight_decay < 0:
            raise ValueError(f"invalid Lion hyperparameters lr={lr} betas={betas} weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, momenta = grads_and_buffers(self, group, "exp_avg")
            if not params:
                continue
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            if wd:
                torch._foreach_mul_(params, 1.0 - lr * wd)  # decoupled weight decay
            update = torch._foreach_lerp(momenta, grads, 1.0 - beta1)  # beta1*m + (1-beta1)*g
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_lerp_(momenta, grads, 1.0 - beta2)  # m <- beta2*m + (1-beta2)*g
        return loss
