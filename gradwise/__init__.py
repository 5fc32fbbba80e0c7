"""gradwise: train and tune language models — a fast, instrumented optimization step and the honest
workflow around it (data → model → objective → step → loop → evaluation).

The public names are imported lazily, so ``gradwise --help`` answers without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {name: "gradwise.api" for name in (
    "train", "evaluate_run", "generate_text", "predict", "RunResult", "Config", "load_config", "GradwiseError",
    "OptimizationStep", "StepResult", "tune", "TuneResult", "autofit", "AutofitResult")}

__all__ = ["train", "evaluate_run", "generate_text", "predict", "RunResult", "Config", "load_config", "GradwiseError",
           "OptimizationStep", "StepResult", "tune", "TuneResult", "autofit", "AutofitResult", "__version__"]

if TYPE_CHECKING:
    from gradwise.autofit import AutofitResult, autofit
    from gradwise.config.load import load_config
    from gradwise.config.schema import Config
    from gradwise.core.errors import GradwiseError
    from gradwise.inference import evaluate_run, generate_text, predict
    from gradwise.search.study import TuneResult, tune
    from gradwise.training.run import RunResult, train
    from gradwise.training.step import OptimizationStep, StepResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gradwise' has no attribute {name!r}")
