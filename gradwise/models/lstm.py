"""An LSTM text classifier: embedding → (bi)LSTM over packed variable-length sequences → dropout → linear.

Inputs are right-padded token ids (B, T); each length is found from the padding id, and the sequences are
packed so the LSTM never reads padding. The classifier reads the final hidden state of the last layer
(both directions when bidirectional), or with ``pool="mean"`` the average of the last layer's outputs over
the real tokens, which keeps the start of a long text in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class LSTMConfig:
    vocab_size: int
    n_classes: int
    pad_id: int
    n_embd: int = 128
    hidden: int = 128
    n_layer: int = 1
    bidirectional: bool = True
    dropout: float = 0.0
    pool: str = "last"  # last: final hidden state(s); mean: average of the outputs over real tokens


class LSTMClassifier(nn.Module):
    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        self.lstm = nn.LSTM(cfg.n_embd, cfg.hidden, num_layers=cfg.n_layer, batch_first=True,
                            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden * (2 if cfg.bidirectional else 1), cfg.n_classes)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), right-padded -> class logits (B, n_classes)."""
        lengths = (tokens != self.cfg.pad_id).sum(dim=1).clamp_min(1)  # (B,)
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)  # h: (layers * directions, B, hidden)
        if self.cfg.pool == "mean":
            seq, _ = pad_packed_sequence(out, batch_first=True)  # (B, T', hidden * dirs), zeros past each length
            pooled = seq.sum(dim=1) / lengths.to(seq.dtype)[:, None]
        else:
            pooled = torch.cat([h[-2], h[-1]], dim=-1) if self.cfg.bidirectional else h[-1]  # (B, hidden * dirs)
        return self.head(self.drop(pooled))
