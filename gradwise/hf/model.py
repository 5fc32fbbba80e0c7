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
from gradwise.hf.causal import from_config, from_run, load_pretrained, model_dir
from gradwise.hf.classifier import meta_classifier
from gradwise.hf.lora import apply_lora
from gradwise.hf.wrapper import HFWrapper, check_vocab, frozen_base_record, uses_pretrained
from gradwise.models.gpt import sample_tokens


class HFCausalLM(HFWrapper):
    """A causal LM: token ids (B, T) -> logits (B, T, V)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V)."""
        self.check_length(idx)
        return self.hf(input_ids=idx, use_cache=False).logits

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base_model().get_output_embeddings()

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

    pretrained = uses_pretrained(m, run_dir)
    base = load_pretrained(m.hf_path) if pretrained else from_run(run_dir)
    check_vocab(base, vocab_size, f"hf:{m.hf_path}")
    model: nn.Module = base
    if m.lora is not None:
        model, _ = apply_lora(base, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.targets)
    return HFCausalLM(model, m.block_size, frozen_base_record(m, pretrained))


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
