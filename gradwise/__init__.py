"""gradwise: train and tune language models — a fast, instrumented optimization step and the honest
workflow around it (data → model → objective → step → loop → evaluation).

The public names are imported lazily, so ``gradwise --help`` answers without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "train": "gradwise.api", "evaluate_run": "gradwise.api", "generate_text": "gradwise.api", "predict": "gradwise.api",
    "RunResult": "gradwise.api", "Config": "gradwise.config", "load_config": "gradwise.config",
    "GradwiseError": "gradwise.errors", "OptimizationStep": "gradwise.step", "StepResult": "gradwise.step",
    "tune": "gradwise.search", "TuneResult": "gradwise.search",
}

__all__ = ["train", "evaluate_run", "generate_text", "predict", "RunResult", "Config", "load_config", "GradwiseError",
           "OptimizationStep", "StepResult", "tune", "TuneResult", "__version__"]

if TYPE_CHECKING:
    from gradwise.api import RunResult, evaluate_run, generate_text, predict, train
    from gradwise.config import Config, load_config
    from gradwise.errors import GradwiseError
    from gradwise.search import TuneResult, tune
    from gradwise.step import OptimizationStep, StepResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gradwise' has no attribute {name!r}")
