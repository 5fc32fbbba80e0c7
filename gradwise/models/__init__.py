"""Models: the gradwise GPT (more architectures come with later issues)."""

from __future__ import annotations

from gradwise.config.schema import ModelConfig
from gradwise.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "build_model", "gpt_config"]


def gpt_config(cfg: ModelConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, dropout=cfg.dropout, embd_dropout=cfg.embd_dropout,
                     attn_dropout=cfg.attn_dropout, resid_dropout=cfg.resid_dropout, bias=cfg.bias,
                     tie_embeddings=cfg.tie_embeddings, activation=cfg.activation)


def build_model(cfg: ModelConfig, vocab_size: int) -> GPT:
    return GPT(gpt_config(cfg, vocab_size))
