"""Optimizers and their parameter groups (weight decay on matrices only, unless configured otherwise)."""

from __future__ import annotations

import torch
from torch import nn

from gradwise.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float, decay_on: str = "matrices") -> list[dict]:
    """Split parameters into decayed and not-decayed groups.

    "matrices" decays the 2-D weights of linear layers only: biases, norm gains and embedding tables
    (and a head tied to the embedding) are left alone, as weight decay on them hurts more than it helps.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        matrix = p.dim() >= 2 and id(p) not in embedding_params
        (decay if decay_on == "all" or matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def fused_supported(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.weight_decay_on)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    fused = fused_supported(device) if cfg.fused is None else cfg.fused
    betas = (cfg.betas[0], cfg.betas[1])
    if cfg.name == "adam":
        # Adam's weight decay is the coupled L2 kind; keep it only where the user asked for it.
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)
