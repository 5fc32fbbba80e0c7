"""Exact evaluation of a language model on a split: loss (nats/token), perplexity, bits per byte."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from gradwise.core.runtime import autocast_context
from gradwise.data.splits import Split
from gradwise.objectives.losses import CausalLMObjective


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy in nats per token
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, block_size: int, batch_size: int, device: torch.device,
             byte_lengths: np.ndarray, max_windows: int | None = None,
             autocast_dtype: torch.dtype | None = None, fused: bool = False) -> EvalResult:
    """Evaluate on non-overlapping windows tiling the split (all of them, or a fixed evenly spaced subset).

    Sums the loss over every target token and divides once, so the result does not depend on the
    batch size; bits per byte divides the summed nats by the UTF-8 bytes the targets stand for. ``fused``
    (train.fused_ce): the loss goes through the output layer in chunks, as in training, never all logits.
    """
    was_training = model.training
    model.eval()
    starts = split.eval_starts(block_size, max_windows)
    total_nats = 0.0
    total_tokens = 0
    total_bytes = 0
    for i in range(0, len(starts), batch_size):
        windows = split.store.gather(starts[i:i + batch_size], block_size + 1)
        targets_np = windows[:, 1:]
        inputs = torch.from_numpy(windows[:, :-1]).to(device, non_blocking=True)
        targets = torch.from_numpy(targets_np).to(device, non_blocking=True)
        with autocast_context(device, autocast_dtype):
            total_nats += CausalLMObjective.summed(model, inputs, targets, fused=fused).item()
        total_tokens += targets_np.size
        total_bytes += int(byte_lengths[targets_np].sum())
    model.train(was_training)
    if total_tokens == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0, 0)
    loss = total_nats / total_tokens
    bpb = total_nats / (max(total_bytes, 1) * math.log(2))
    return EvalResult(loss, math.exp(min(loss, 700.0)), bpb, total_tokens, total_bytes)
