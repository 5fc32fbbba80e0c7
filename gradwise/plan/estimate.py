"""The planner's estimates: what a training run will cost, before it starts.

:func:`gradwise.plan.planner.plan_run` answers for a config, from these formulas and those of
gradwise.models.cost: parameters (total and non-embedding), FLOPs per token and in total,
memory for weights, gradients, optimizer state and the activations of one micro-batch, whether that fits
this machine (and which micro-batch would, keeping the global batch), tokens per parameter against the
compute-optimal ~20 of Hoffmann et al. 2022 ("Chinchilla"), and the wall time on this device from a short
calibration run of the real step (gradwise/plan/calibration.py; budget.py makes the ``--budget`` proposal).

Parameter counts and optimizer-state sizes are exact: they follow the code that builds the models and the
optimizers (tests compare them with real ones). Activation memory is an estimate, written down term by term
in :func:`gradwise.training.memory.activation_bytes`; tests hold it to 30% of the bytes autograd really saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradwise.config.schema import Config
from gradwise.config.validate import parse_duration
from gradwise.core.errors import ConfigError
from gradwise.hf.auto_tokenizer import load_hf_tokenizer
from gradwise.models.cost import ModelSpec, architecture_spec
from gradwise.plan.hf_shape import hf_shape
from gradwise.tasks import prepare_task
from gradwise.tasks.init_from import init_tokenizer

CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022: compute-optimal training tokens per parameter


def model_spec(cfg: Config, vocab_size: int, n_classes: int = 0) -> ModelSpec:
    """The planner's :class:`ModelSpec` of ``cfg``: gradwise's own models from their config
    (:func:`gradwise.models.cost.architecture_spec`), a Hugging Face model read from the model itself, built on
    the meta device (gradwise.plan.hf_shape)."""
    hf = hf_shape(cfg, vocab_size) if cfg.model.arch == "hf" else None
    return architecture_spec(cfg, vocab_size, n_classes, hf)


# ---------------------------------------------------------------- data and budget

def read_data(cfg: Config, data: bool) -> tuple[dict[str, Any], Any]:
    """Vocabulary, split sizes and evaluation windows from the config's corpus (tokenized once, then cached);
    with ``data=False`` only what the config says, and assumptions stated in ``notes``."""

    if not data:
        # a Hugging Face model's own tokenizer: the vocabulary without reading the corpus
        tok = load_hf_tokenizer(cfg.model.hf_path) if cfg.model.arch == "hf" else init_tokenizer(cfg)
        d = cfg.data
        vocab = tok.vocab_size if tok is not None else (d.vocab_size if d.tokenizer == "bpe" else 256)
        info: dict[str, Any] = {"read": False, "vocab_size": vocab, "notes": []}
        if tok is None and d.tokenizer == "char":
            info["notes"].append("corpus not read: a character vocabulary of 256 is assumed")
        if cfg.task == "classify":
            info["classes"] = 2
            info["notes"].append("corpus not read: 2 classes assumed")
        return info, None
    task = prepare_task(cfg)
    source = task.corpus.source.describe() if cfg.task == "lm" else str(cfg.data.path)
    info = {"read": True, "source": source, "vocab_size": task.tokenizer.vocab_size,
            "tokenizer": task.tokenizer.kind, "unit": "tokens" if cfg.task == "lm" else "records",
            "splits": task.split_sizes(), "notes": []}
    T = cfg.model.block_size
    if cfg.task == "lm":
        info["val_windows_all"] = len(task.corpus.split("val").eval_starts(T))
        info["test_windows_all"] = len(task.corpus.split("test").eval_starts(T))
    else:
        info["classes"] = len(task.classes)
        info["mean_tokens_per_record"] = float(np.mean([len(ids) for ids in task.splits["train"].ids]))
    return info, task


def budget_seconds(budget: str | float) -> float:
    """A budget as seconds: a duration such as "10m" (as train.max_time reads it) or a positive number."""
    if isinstance(budget, int | float) and not isinstance(budget, bool):
        if not budget > 0 or not math.isfinite(budget):
            raise ConfigError(f"--budget must be a positive duration such as 10m or 2h; got {budget!r}")
        return float(budget)
    return parse_duration(str(budget), "--budget")  # type: ignore[return-value]


# ---------------------------------------------------------------- the plan

@dataclass
class Plan:
    """What ``gradwise plan`` prints: one section per question (see :meth:`to_json` for the keys)."""

    config: dict[str, Any]
    params: dict[str, Any]
    flops: dict[str, Any]
    data: dict[str, Any]
    memory: dict[str, Any]
    time: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "params": self.params, "flops": self.flops, "data": self.data,
                "memory": self.memory, "time": self.time, "budget": self.budget, "notes": self.notes}


def tokens_per_step(cfg: Config) -> int:
    """Tokens one optimization step reads (classification: records x block_size, an upper bound)."""
    t = cfg.train
    return t.batch_size * t.grad_accum * cfg.model.block_size


def fmt_count(x: float) -> str:
    """3.2M, 450k, 1.1G, 7.5T: enough digits to compare, not to read off."""
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
