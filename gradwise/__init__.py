"""gradwise: train and tune language models — a fast, instrumented optimization step and the honest
workflow around it (data → model → objective → step → loop → evaluation)."""

__version__ = "0.1.0"

from gradwise.api import RunResult, evaluate_run, generate_text, train  # noqa: E402
from gradwise.config import Config, load_config  # noqa: E402
from gradwise.errors import GradwiseError  # noqa: E402
from gradwise.step import OptimizationStep, StepResult  # noqa: E402

__all__ = ["train", "evaluate_run", "generate_text", "RunResult", "Config", "load_config", "GradwiseError",
           "OptimizationStep", "StepResult", "__version__"]
