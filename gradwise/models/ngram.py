"""The n-gram classifier (fastText-like): a text is the bag of its hashed word and character n-grams
(``data.tokenizer: ngram``); each n-gram has a learned vector, the bag is their sum scaled by 1/sqrt(its size)
(the scale of an L2-normalised bag of binary features, so a long text does not outshout a short one), then
dropout and a linear layer give the class logits.

On a few thousand labelled texts this is the function class of TF-IDF + logistic regression, trained by
gradwise's own step, so optimizers, schedules, regularizers, tune, diagnose, resume and predict all apply.
Padding (the tokenizer's last id) has a zero vector that never trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class NgramConfig:
    vocab_size: int
    n_classes: int
    pad_id: int
    n_embd: int = 16
    dropout: float = 0.0


class NgramClassifier(nn.Module):
    def __init__(self, cfg: NgramConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        nn.init.normal_(self.embed.weight, std=0.01)
        with torch.no_grad():
            self.embed.weight[cfg.pad_id].zero_()
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.n_embd, cfg.n_classes)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feature ids (B, T), right-padded -> class logits (B, n_classes)."""
        count = (tokens != self.cfg.pad_id).sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        bag = self.embed(tokens).sum(dim=1) / count.to(self.embed.weight.dtype).sqrt()  # padding rows are zero
        return self.head(self.drop(bag))
