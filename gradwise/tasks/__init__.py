"""Tasks: what is learned from which data. A task prepares its data, builds its model and objective,
draws training batches and evaluates a split; the loop works the same for every task."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from gradwise.config import Config
from gradwise.data import Tokenizer
from gradwise.hf.auto_tokenizer import load_any_tokenizer
from gradwise.hf.classifier import build_hf_classifier
from gradwise.hf.model import build_hf_model
from gradwise.models import build_model
from gradwise.tasks.base import EvalReport, Task
from gradwise.tasks.classify import ClassifyTask, class_probabilities, classifier
from gradwise.tasks.init_from import adopt_init_config, init_tokenizer, load_init_weights
from gradwise.tasks.lm import LMTask

__all__ = ["ClassifyTask", "EvalReport", "LMTask", "Task", "adopt_init_config", "class_probabilities", "classifier",
           "init_tokenizer", "load_init_weights", "model_for_run", "prepare_task"]


def model_for_run(cfg: Config, run_dir: Path) -> tuple[nn.Module, Tokenizer, list[str] | None]:
    """An untrained model shaped like a run's (from its config, tokenizer and labels), with those."""
    tok = load_any_tokenizer(run_dir / "tokenizer.json")
    if cfg.task == "classify":
        classes = json.loads((run_dir / "labels.json").read_text())["classes"]
        if cfg.model.arch == "hf":
            return build_hf_classifier(cfg.model, classes, tok.eot_id, tok.vocab_size, run_dir), tok, classes
        return classifier(cfg, tok.vocab_size, len(classes), tok.eot_id), tok, classes
    if cfg.model.arch == "hf":
        return build_hf_model(cfg.model, tok.vocab_size, run_dir), tok, None
    return build_model(cfg.model, tok.vocab_size), tok, None


def prepare_task(cfg: Config, run_dir: Path | None = None) -> Task:
    """The task ``cfg.task`` names, with its data ready (using a run's tokenizer and labels when given)."""
    return (ClassifyTask if cfg.task == "classify" else LMTask).prepare(cfg, run_dir)
