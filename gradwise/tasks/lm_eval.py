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

AUTO_PILOT_BATCHES = 10  # train.eval_batches auto: batches read until the count is chosen
AUTO_MIN_BATCHES = 4  # ...and the fewest it may choose (a standard error needs a few batches to mean anything)


def auto_eval_batches(loss_se: float, pilot_batches: int, target_se: float, all_batches: int) -> int:
    """The fewest batches whose mean is within ``target_se`` (one standard error) of the whole split's, from a
    pilot's standard error: s² / n x (N - n) / (N - 1) <= target² with s the spread of batch means, N every
    batch of the split (reading all of them has no error); at least AUTO_MIN_BATCHES."""
    if not math.isfinite(loss_se) or all_batches <= 1:
        return max(1, min(pilot_batches, all_batches))
    spread = loss_se ** 2 * pilot_batches  # s², the variance of one batch's mean
    need = math.ceil(spread * all_batches / (target_se ** 2 * (all_batches - 1) + spread))
    return max(min(AUTO_MIN_BATCHES, all_batches), min(need, all_batches))


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy in nats per token
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int
    windows: int = 0  # how many windows were read
    windows_all: int = 0  # ...of the split's
    loss_se: float = float("nan")  # standard error of ``loss`` as an estimate of the whole split's (see below)

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
    ``loss_se`` is the standard error of the mean from the spread of the batches' own means (windows spread
    evenly over the split, so batches are near-independent samples of it): how well the figure measures the
    loss on text like this split's, the ± to compare runs by. NaN with fewer than 2 batches.
    """
    was_training = model.training
    model.eval()
    starts = split.eval_starts(block_size, max_windows)
    total_nats = 0.0
    total_tokens = 0
    total_bytes = 0
    per_batch: list[tuple[float, int]] = []  # (nats, tokens) of each batch
    for i in range(0, len(starts), batch_size):
        windows = split.store.gather(starts[i:i + batch_size], block_size + 1)
        targets_np = windows[:, 1:]
        inputs = torch.from_numpy(windows[:, :-1]).to(device, non_blocking=True)
        targets = torch.from_numpy(targets_np).to(device, non_blocking=True)
        with autocast_context(device, autocast_dtype):
            nats = CausalLMObjective.summed(model, inputs, targets, fused=fused).item()
        per_batch.append((nats, targets_np.size))
        total_nats += nats
        total_tokens += targets_np.size
        total_bytes += int(byte_lengths[targets_np].sum())
    model.train(was_training)
    if total_tokens == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0, 0)
    loss = total_nats / total_tokens
    bpb = total_nats / (max(total_bytes, 1) * math.log(2))
    every = len(starts) if max_windows is None else len(split.eval_starts(block_size))
    return EvalResult(loss, math.exp(min(loss, 700.0)), bpb, total_tokens, total_bytes, len(starts), every,
                      standard_error(per_batch))


def standard_error(per_batch: list[tuple[float, int]]) -> float:
    """The standard error of the token-weighted mean loss, from batches' (nats, tokens): the weighted
    variance of the batch means over the effective number of batches; NaN with fewer than 2 batches."""
    if len(per_batch) < 2:
        return float("nan")
    w = np.array([t for _, t in per_batch], dtype=np.float64)
    means = np.array([n / t for n, t in per_batch], dtype=np.float64)
    mean = float((w * means).sum() / w.sum())
    var = float((w * (means - mean) ** 2).sum() / w.sum())
    n_eff = float(w.sum() ** 2 / (w ** 2).sum())
    return math.sqrt(var / max(n_eff - 1.0, 1.0))
