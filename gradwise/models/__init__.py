"""Models: the gradwise GPT (``gpt``), its classifier head (``gpt_classifier``), the LSTM classifier (``lstm``),
the chunked loss through the output layer (``chunked_ce``) and what each costs (``cost``). The tables below
map ``model.arch`` to its builder, one for language models and one for classifiers; a Hugging Face model
(arch ``hf``) is built by gradwise.hf.model, which the LM task asks for it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gradwise.config.schema import ModelConfig
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.models.gpt_classifier import GPTClassifier
from gradwise.models.lstm import LSTMClassifier, LSTMConfig
from gradwise.models.ngram import NgramClassifier, NgramConfig

__all__ = ["CLASSIFIERS", "GPT", "GPTConfig", "LANGUAGE_MODELS", "build_classifier", "build_model", "gpt_config"]


def gpt_config(cfg: ModelConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, dropout=cfg.dropout, embd_dropout=cfg.embd_dropout,
                     attn_dropout=cfg.attn_dropout, resid_dropout=cfg.resid_dropout, bias=cfg.bias,
                     tie_embeddings=cfg.tie_embeddings, activation=cfg.activation, pos=cfg.pos, qk_norm=cfg.qk_norm,
                     zero_init=cfg.zero_init, logit_softcap=cfg.logit_softcap)


def build_model(cfg: ModelConfig, vocab_size: int) -> GPT:
    """The language model ``cfg.arch`` names (gradwise's own: the GPT)."""
    return LANGUAGE_MODELS[cfg.arch](cfg, vocab_size)


def _gpt_classifier(cfg: ModelConfig, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    return GPTClassifier(gpt_config(cfg, vocab_size), n_classes, pad_id, cfg.pool)


def _lstm_classifier(cfg: ModelConfig, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    return LSTMClassifier(LSTMConfig(vocab_size=vocab_size, n_classes=n_classes, pad_id=pad_id, n_embd=cfg.n_embd,
                                     hidden=cfg.hidden or cfg.n_embd, n_layer=cfg.n_layer,
                                     bidirectional=cfg.bidirectional, dropout=cfg.dropout, pool=cfg.pool))


def _ngram_classifier(cfg: ModelConfig, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    return NgramClassifier(NgramConfig(vocab_size=vocab_size, n_classes=n_classes, pad_id=pad_id, n_embd=cfg.n_embd,
                                       dropout=cfg.dropout, idf=cfg.idf, nb=cfg.nb))


def build_classifier(cfg: ModelConfig, vocab_size: int, n_classes: int, pad_id: int) -> nn.Module:
    """The classifier ``cfg.arch`` names: a GPT backbone with a class head, the LSTM, or the n-gram bag."""
    return CLASSIFIERS[cfg.arch](cfg, vocab_size, n_classes, pad_id)


LANGUAGE_MODELS: dict[str, Callable[[ModelConfig, int], GPT]] = {"gpt": lambda cfg, vocab: GPT(gpt_config(cfg, vocab))}
CLASSIFIERS: dict[str, Callable[[ModelConfig, int, int, int], nn.Module]] = {
    "gpt": _gpt_classifier, "lstm": _lstm_classifier, "ngram": _ngram_classifier}
