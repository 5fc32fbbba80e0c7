"""Optimizers and their parameter groups.

Parameters fall into three kinds, and the kind decides weight decay, learning rate and (for Muon) the
optimizer:

- ``matrices``: 2-D weights of hidden linear layers. Weight decay applies here; Muon optimizes these.
- ``embeddings``: embedding tables and the output head (one matrix when tied). No weight decay by
  default; their own learning rate with ``optim.embedding_lr``; AdamW even when Muon is chosen.
- ``vectors``: norm gains and biases. No weight decay by default; AdamW even when Muon is chosen.
"""

from __future__ import annotations

import torch
from torch import nn

from gradwise.config.schema import OptimConfig
from gradwise.config.validate import default_optimizer
from gradwise.core.errors import ConfigError
from gradwise.models.lstm import LSTMClassifier
from gradwise.optim.combined import CombinedOptimizer
from gradwise.optim.lion import Lion
from gradwise.optim.muon import Muon

GROUP_KINDS = ("matrices", "embeddings", "vectors")


def classify_params(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split a model's trainable parameters into matrices, embeddings (incl. output head) and vectors."""
    table_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if hasattr(model, "get_output_embeddings"):  # a Hugging Face model (or gradwise's wrapper of one)
        head = model.get_output_embeddings()
    if isinstance(head, nn.Linear):
        table_ids.add(id(head.weight))
    kinds: dict[str, list[nn.Parameter]] = {k: [] for k in GROUP_KINDS}
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in table_ids:
            kinds["embeddings"].append(p)
        elif p.dim() >= 2:
            kinds["matrices"].append(p)
        else:
            kinds["vectors"].append(p)
    return kinds


def param_groups(model: nn.Module, weight_decay: float, decay_on: str = "matrices",
                 embedding_lr: float | None = None) -> list[dict]:
    """Parameter groups named by kind; weight decay on matrices only unless ``decay_on == "all"``."""
    kinds = classify_params(model)
    groups = []
    for kind in GROUP_KINDS:
        if not kinds[kind]:
            continue
        group = {"params": kinds[kind], "name": kind,
                 "weight_decay": weight_decay if (kind == "matrices" or decay_on == "all") else 0.0}
        if kind == "embeddings" and embedding_lr is not None:
            group["lr"] = embedding_lr
        groups.append(group)
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, over :func:`param_groups` (Muon: paired with AdamW)."""
    groups = param_groups(model, cfg.weight_decay, cfg.weight_decay_on, cfg.embedding_lr)
    name = cfg.name
    if name == "auto":  # a config that skipped validation: decide by the model, as validation would
        name = default_optimizer("lstm" if isinstance(model, LSTMClassifier) else
                                 "hf" if hasattr(model, "get_output_embeddings") else "gpt")
    if name == "muon":
        return _muon_with_adamw(groups, cfg, device)
    return _single(name, groups, cfg, device)


def _single(name: str, groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    betas = (cfg.betas[0], cfg.betas[1])
    fused = (device.type in ("cuda", "cpu")) if cfg.fused is None else cfg.fused
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)
    if name == "adam":  # coupled L2 weight decay, as Adam defines it
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "lion":
        return Lion(groups, lr=cfg.lr, betas=betas)
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=cfg.lr)
    if name == "radam":
        return torch.optim.RAdam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, decoupled_weight_decay=True)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, decoupled_weight_decay=True)
    raise ConfigError(f"optim.name '{name}' is not an optimizer gradwise knows")


def _muon_with_adamw(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    matrices = [g for g in groups if g["name"] == "matrices"]
    rest = [g for g in groups if g["name"] != "matrices"]
    muon = Muon(matrices, lr=cfg.muon_lr if cfg.muon_lr is not None else cfg.lr, weight_decay=cfg.weight_decay,
                momentum=cfg.muon_momentum, nesterov=True, adjust_lr=cfg.muon_adjust_lr)
    if not rest:
        return muon
    return CombinedOptimizer([muon, _single("adamw", rest, cfg, device)])
