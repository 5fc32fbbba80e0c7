"""A Hugging Face causal LM as a gradwise language model: token ids (B, T) in, logits (B, T, V) out.

The wrapper is what lets the rest of gradwise (objective, step, evaluation, checkpoints, sampling) treat
any ``AutoModelForCausalLM`` like its own GPT: the loss is gradwise's next-token cross-entropy on these
logits (the same number as the model's own ``labels=`` loss), the key/value cache is off (training and
gradwise's sampler recompute the window), and the output head is reported through
``get_output_embeddings`` so the optimizer groups it with the embedding tables. The model's own dropout
is kept as its config sets it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from gradwise.config.schema import ModelConfig
from gradwise.core.errors import GradwiseError
from gradwise.hf.causal import base_fingerprint, from_config, from_run, load_pretrained, model_dir
from gradwise.hf.classifier import meta_classifier
from gradwise.hf.lora import apply_lora
from gradwise.models.gpt import sample_tokens


class HFCausalLM(nn.Module):
    """``hf``: the transformers model (or the peft model wrapping it with LoRA adapters)."""

    def __init__(self, hf: nn.Module, block_size: int, frozen_base: dict[str, str] | None = None):
        super().__init__()
        self.hf = hf
        self.block_size = block_size
        # {"path", "fingerprint"} of the pretrained weights this model holds frozen (LoRA): checkpoints then
        # save only the rest, and loading one checks that this base is the one it was trained on.
        self.frozen_base = frozen_base

    def frozen_keys(self) -> set[str]:
        """State-dict keys of the frozen parameters (tied names included): what a checkpoint can leave out."""
        return {k for k, v in self.state_dict(keep_vars=True).items()
                if isinstance(v, nn.Parameter) and not v.requires_grad}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V)."""
        if idx.size(1) > self.block_size:
            raise ValueError(f"sequence of {idx.size(1)} tokens exceeds block_size {self.block_size}")
        return self.hf(input_ids=idx, use_cache=False).logits

    def base_model(self) -> nn.Module:
        """The transformers model itself (inside peft's wrapper when LoRA is on)."""
        return self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base_model().get_output_embeddings()

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (tied weights are shared); non_embedding drops the input embedding table."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.base_model().get_input_embeddings().weight.numel()
        return n

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, stop_token: int | None = None,
                 on_token: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of idx (B, T) with gradwise's sampler; temperature 0 is greedy."""
        return sample_tokens(self, idx, self.block_size, max_new_tokens, temperature, top_k, top_p, generator,
                             stop_token, on_token)


def build_hf_model(m: ModelConfig, vocab_size: int, run_dir: Path | None = None) -> HFCausalLM:
    """The ``model.hf_path`` model with its trained weights, or (``run_dir``) rebuilt from a run's copy of its
    config for a checkpoint to fill; with ``model.lora``, wrapped with adapters (the targets used are recorded
    in the config when it is resolved, :func:`fit_lora_targets`, so the saved config names them)."""

    # A LoRA run's checkpoints hold only the adapters: its frozen base comes from model.hf_path (when it is
    # still there; otherwise loading a checkpoint says what is missing). A full fine-tune's hold everything.
    pretrained = run_dir is None or (m.lora is not None and Path(m.hf_path).expanduser().is_dir())
    base = load_pretrained(m.hf_path) if pretrained else from_run(run_dir)
    rows = base.get_input_embeddings().weight.shape[0]
    if vocab_size > rows:
        raise GradwiseError(f"hf:{m.hf_path}: the tokenizer has {vocab_size} tokens but the model embeds only {rows}; "
                            "resize the model's embeddings to the tokenizer first (resize_token_embeddings)")
    model: nn.Module = base
    frozen = None
    if m.lora is not None:
        model, _ = apply_lora(base, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.targets)
        if pretrained:
            frozen = {"path": str(Path(m.hf_path).expanduser().resolve()), "fingerprint": base_fingerprint(m.hf_path)}
    return HFCausalLM(model, m.block_size, frozen)


def fit_lora_targets(m: ModelConfig, classify: bool = False) -> None:
    """``model.lora`` without targets: record the layers peft (or the attention fallback) picks for this
    architecture, found on a copy built on the meta device (no weights read), so the run's resolved config
    names what it trains before it starts. ``classify``: the copy is the sequence classifier."""
    if m.lora is None or m.lora.targets is not None:
        return
    if classify:
        base, task = meta_classifier(m.hf_path), "SEQ_CLS"
    else:
        base, task = from_config(model_dir(m.hf_path), f"hf:{m.hf_path}", device="meta"), "CAUSAL_LM"
    _, m.lora.targets = apply_lora(base, m.lora.r, m.lora.alpha, m.lora.dropout, None, task=task)


__all__ = ["HFCausalLM", "build_hf_model", "fit_lora_targets"]
