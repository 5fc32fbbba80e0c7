"""A GPT-backbone text classifier: the gradwise GPT read at the last real token (or averaged) → linear.

With causal attention, the hidden state at the last real token has attended to the whole text, so it is a
summary of it; padding comes after the text and is never attended to. The backbone keeps its language-model
head, so a classifier can also be trained with an auxiliary next-token loss on its own texts (objective
term ``lm``), and a pretrained gradwise LM run can be loaded into ``backbone`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from gradwise.models.gpt import GPT, GPTConfig


class GPTClassifier(nn.Module):
    def __init__(self, cfg: GPTConfig, n_classes: int, pad_id: int, pool: str = "last"):
        super().__init__()
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', not {pool!r}")
        self.pad_id, self.pool = pad_id, pool
        self.backbone = GPT(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        return self.backbone.num_params(non_embedding) + sum(p.numel() for p in self.head.parameters())

    def forward(self, tokens: torch.Tensor, with_lm: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token ids (B, T) -> class logits (B, K); with ``with_lm`` also LM logits (B, T, V)."""
        h = self.backbone.hidden(tokens)  # (B, T, C)
        real = tokens != self.pad_id  # (B, T)
        if self.pool == "mean":
            pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp_min(1)
        else:
            last = (real.sum(1) - 1).clamp_min(0)  # index of the last real token of each row
            pooled = h[torch.arange(h.size(0), device=h.device), last]  # (B, C)
        logits = self.head(self.drop(pooled))
        return (logits, self.backbone.lm_head(h)) if with_lm else logits
