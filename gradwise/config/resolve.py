"""The values a config derives from itself, computed once after validation: the optimizer ``auto`` names for
the architecture, and ``train.grad_accum`` from ``train.tokens_per_step``. A saved config names what really
ran; :func:`gradwise.training.run_config.resolve_train_config` then adds what depends on files (a Hugging
Face model's context, an ``init_from`` run's shape) and freezes it."""

from __future__ import annotations

from gradwise.config.schema import Config
from gradwise.config.validate import default_optimizer


def derive(cfg: Config) -> Config:
    """Fill the derived keys of a validated config in place; return it."""
    o, t, m = cfg.optim, cfg.train, cfg.model
    if o.name == "auto":
        o.name = default_optimizer(m.arch)
    if t.tokens_per_step is not None:  # validate() checked it holds at least one micro-batch
        t.grad_accum = round(t.tokens_per_step / (t.batch_size * m.block_size))
    return cfg
