"""The n-gram classifier (fastText-like): a text is the bag of its hashed word and character n-grams
(``data.tokenizer: ngram``); each n-gram has a learned vector, the bag is their sum scaled by 1/sqrt(its size)
(the scale of an L2-normalised bag of binary features, so a long text does not outshout a short one), then
dropout and a linear layer give the class logits.

With ``idf`` each n-gram's vector is weighed by its inverse document frequency in the training split and the
bag is scaled by the L2 norm of those weights: the bag of an L2-normalised TF-IDF row, as the baseline reads
it, so n-grams in every text ("th", "the") stop drowning the rare ones that name a class. The weights are a
buffer: set once from the training split (:meth:`NgramClassifier.set_idf`), saved and restored with the model.

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
    idf: bool = False


def idf_weights(documents: list, vocab_size: int) -> torch.Tensor:
    """Smoothed inverse document frequency, ln((1 + N) / (1 + df)) + 1 (scikit-learn's TfidfVectorizer form),
    from each document's distinct ids. An id no document holds gets the highest weight, as an unseen term."""
    import numpy as np

    df = np.zeros(vocab_size, dtype=np.int64)
    for ids in documents:
        df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    return torch.from_numpy(np.log((1 + len(documents)) / (1 + df)) + 1).float()


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
        if cfg.idf:  # ones until set_idf: a model built to load a checkpoint gets its weights from the file
            self.register_buffer("idf", torch.ones(cfg.vocab_size))

    def set_idf(self, weights: torch.Tensor) -> None:
        """The training split's inverse document frequencies, one per id (:func:`idf_weights`)."""
        self.idf.copy_(weights)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feature ids (B, T), right-padded -> class logits (B, n_classes)."""
        vectors = self.embed(tokens)  # (B, T, n_embd); padding rows are zero
        if self.cfg.idf:
            weight = self.idf[tokens] * (tokens != self.cfg.pad_id)  # (B, T)
            norm = weight.square().sum(dim=1, keepdim=True).sqrt().clamp_min(1e-6)  # (B, 1)
            bag = (vectors * (weight / norm).unsqueeze(-1).to(vectors.dtype)).sum(dim=1)
        else:
            count = (tokens != self.cfg.pad_id).sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
            bag = vectors.sum(dim=1) / count.to(vectors.dtype).sqrt()
        return self.head(self.drop(bag))
