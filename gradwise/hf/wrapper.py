"""What every Hugging Face model gradwise trains has in common, written once: the causal LM (gradwise.hf.model)
and the sequence classifier (gradwise.hf.classifier) both wrap a transformers model, or the peft model around it.

- which weights a run starts from: the pretrained directory, or (resuming a full fine-tune) the run's own copy
  of the config for a checkpoint to fill; a LoRA run always reads its frozen base from ``model.hf_path``;
- the frozen base's record, so that a LoRA checkpoint holds only what trains and is loaded only onto that base;
- the vocabulary check, the context check and the parameter counts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gradwise.config.schema import ModelConfig
from gradwise.core.errors import GradwiseError
from gradwise.hf.causal import base_fingerprint


class HFWrapper(nn.Module):
    """``hf``: the transformers model (or the peft model wrapping it with LoRA adapters)."""

    def __init__(self, hf: nn.Module, block_size: int, frozen_base: dict[str, str] | None = None):
        super().__init__()
        self.hf = hf
        self.block_size = block_size
        # {"path", "fingerprint"} of the pretrained weights this model holds frozen (LoRA): checkpoints then
        # save only the rest, and loading one checks that this base is the one it was trained on.
        self.frozen_base = frozen_base

    def check_length(self, tokens: torch.Tensor) -> None:
        if tokens.size(1) > self.block_size:
            raise ValueError(f"sequence of {tokens.size(1)} tokens exceeds block_size {self.block_size}")

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the frozen parameters (tied names included): what a checkpoint can leave out."""
        return {k for k, v in self.state_dict(keep_vars=True).items()
                if isinstance(v, nn.Parameter) and not v.requires_grad}

    def base_model(self) -> nn.Module:
        """The transformers model itself (inside peft's wrapper when LoRA is on)."""
        return self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (tied weights are shared); non_embedding drops the input embedding table."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.base_model().get_input_embeddings().weight.numel()
        return n

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def uses_pretrained(m: ModelConfig, run_dir: Path | None) -> bool:
    """Whether the model is built with ``model.hf_path``'s weights: a new run, or a LoRA run (its checkpoints
    hold only the adapters, so its frozen base is read again while it is still there; otherwise loading a
    checkpoint says what is missing). A full fine-tune resumed is rebuilt from the run for its checkpoint."""
    return run_dir is None or (m.lora is not None and Path(m.hf_path).expanduser().is_dir())


def check_vocab(model: nn.Module, vocab_size: int, where: str) -> None:
    rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size > rows:
        raise GradwiseError(f"{where}: the tokenizer has {vocab_size} tokens but the model embeds only {rows}; "
                            "resize the model's embeddings to the tokenizer first (resize_token_embeddings)")


def frozen_base_record(m: ModelConfig, pretrained: bool) -> dict[str, str] | None:
    """The frozen base a LoRA model holds (its path and fingerprint); None for a full fine-tune."""
    if m.lora is None or not pretrained:
        return None
    return {"path": str(Path(m.hf_path).expanduser().resolve()), "fingerprint": base_fingerprint(m.hf_path)}


__all__ = ["HFWrapper", "check_vocab", "frozen_base_record", "uses_pretrained"]
