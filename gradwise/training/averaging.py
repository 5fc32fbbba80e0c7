"""A moving average of the weights (``train.ema``): the model that validation, the best checkpoint and so the
test score, export and predict see, while the optimizer goes on training the raw weights.

The raw weights at any step carry the noise of the last few mini-batches; their exponential moving average
over the last few hundred steps does not, and it generalises better on small data (measured on fortunes4:
docs/benchmarks.md). The average itself is torch's ``AveragedModel`` with its EMA rule; this module only
puts it where gradwise's loop needs it: swapped into the live model for an evaluation, and saved with the
last checkpoint so that a resumed run continues the same average bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

# The average's tensors in a checkpoint's trainer.safetensors carry this prefix.
PREFIX = "average."


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, in the order AveragedModel averages them (use_buffers=True)."""
    return list(itertools.chain(model.parameters(), model.buffers()))


class WeightAverage:
    """The EMA of a model's parameters and buffers, updated after every optimization step."""

    def __init__(self, model: nn.Module, decay: float):
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    @contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[None]:
        """``model`` holds the average inside the block (and so does any wrapper sharing its tensors: the
        compiled module validation runs), and its own trained weights again after it."""
        live = _tensors(model)
        kept = [t.detach().clone() for t in live]
        with torch.no_grad():
            for t, a in zip(live, _tensors(self.averaged.module), strict=True):
                t.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for t, k in zip(live, kept, strict=True):
                    t.copy_(k)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The average and its count, for the last checkpoint (each tensor its own copy: safetensors refuses
        tensors that share memory, as tied embeddings do)."""
        return {PREFIX + k: v.detach().clone().contiguous().cpu() for k, v in self.averaged.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Restore the average from a checkpoint's tensors; False when it holds none (saved without train.ema)."""
        mine = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not mine:
            return False
        self.averaged.load_state_dict(mine)
        return True
