"""Optimizers and their parameter groups.

Parameters fall into three kinds, and the kind decides weight decay, learning rate and (for Muon) the
optimizer:

- ``matrices``: 2-D weights of hidden linear layers. Weight decay applies here; Muon optimizes these.
- ``embeddings``: embedding tables and the output head (one matrix when tied). No weight decay by
  default; their own learning rate with ``optim.embedding_lr``; AdamW even when Muon is chosen.
- ``vectors``: norm gains and biases. No weight decay by default; AdamW even when Muon is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradwise.config.schema import OptimConfig
from gradwise.config.validate import default_optimizer
from gradwise.core.errors import ConfigError
from gradwise.models.lstm import LSTMClassifier
from gradwise.models.ngram import NgramClassifier
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
        name = default_optimizer("lstm" if isinstance(model, (LSTMClassifier, NgramClassifier)) else
                                 "hf" if hasattr(model, "get_output_embeddings") else "gpt")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name '{name}' is not an optimizer gradwise knows")
    return OPTIMIZERS[name].build(groups, cfg, device)


def _betas(cfg: OptimConfig) -> tuple[float, float]:
    return cfg.betas[0], cfg.betas[1]


def _fused(cfg: OptimConfig, device: torch.device) -> bool:
    return (device.type in ("cuda", "cpu")) if cfg.fused is None else cfg.fused


def _adafactor_floats(shape: tuple[int, ...], momentum: float) -> int:
    """Row and column second moments of a matrix (a vector's in full), and the step."""
    rows_cols = math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1] if len(shape) >= 2 else math.prod(shape)
    return rows_cols + 1


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer: how it is built over parameter groups, and how many fp32 numbers of state it keeps for
    a tensor of a given shape after its first step (the planner's memory estimate reads this)."""

    build: Callable[[list[dict], OptimConfig, torch.device], torch.optim.Optimizer]
    state_floats: Callable[[tuple[int, ...], float], int]  # (shape, momentum) -> fp32 numbers


def _moments(scalars: int) -> Callable[[tuple[int, ...], float], int]:
    return lambda shape, momentum: 2 * math.prod(shape) + scalars  # exp_avg, exp_avg_sq, step (+ mu_product)


# The one table of optimizer names: config validation, `gradwise step --optimizer`, the planner and
# build_optimizer all read it. Muon trains the hidden matrices and hands every other tensor to AdamW.
OPTIMIZERS: dict[str, OptimizerEntry] = {
    "adamw": OptimizerEntry(lambda g, c, d: torch.optim.AdamW(g, lr=c.lr, betas=_betas(c), eps=c.eps,
                                                               fused=_fused(c, d)), _moments(1)),
    "adam": OptimizerEntry(  # coupled L2 weight decay, as Adam defines it
        lambda g, c, d: torch.optim.Adam(g, lr=c.lr, betas=_betas(c), eps=c.eps, fused=_fused(c, d)), _moments(1)),
    "sgd": OptimizerEntry(lambda g, c, d: torch.optim.SGD(g, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov),
                          lambda shape, momentum: math.prod(shape) if momentum > 0 else 0),
    "muon": OptimizerEntry(lambda g, c, d: _muon_with_adamw(g, c, d), lambda shape, momentum: math.prod(shape)),
    "lion": OptimizerEntry(lambda g, c, d: Lion(g, lr=c.lr, betas=_betas(c)), lambda shape, momentum: math.prod(shape)),
    "adafactor": OptimizerEntry(lambda g, c, d: torch.optim.Adafactor(g, lr=c.lr), _adafactor_floats),
    "radam": OptimizerEntry(lambda g, c, d: torch.optim.RAdam(g, lr=c.lr, betas=_betas(c), eps=c.eps,
                                                               decoupled_weight_decay=True), _moments(1)),
    "nadam": OptimizerEntry(lambda g, c, d: torch.optim.NAdam(g, lr=c.lr, betas=_betas(c), eps=c.eps,
                                                               decoupled_weight_decay=True), _moments(2)),
}


def _muon_with_adamw(groups: list[dict], cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    matrices = [g for g in groups if g["name"] == "matrices"]
    rest = [g for g in groups if g["name"] != "matrices"]
    muon = Muon(matrices, lr=cfg.muon_lr if cfg.muon_lr is not None else cfg.lr, weight_decay=cfg.weight_decay,
                momentum=cfg.muon_momentum, nesterov=True, ns_steps=cfg.muon_ns_steps,
                adjust_lr=cfg.muon_adjust_lr, ns_dtype=cfg.muon_ns_dtype)
    if not rest:
        return muon
    return CombinedOptimizer([muon, OPTIMIZERS["adamw"].build(rest, cfg, device)])
