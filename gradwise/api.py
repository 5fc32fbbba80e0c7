"""The Python API, in the order of the workflow: look at the data, plan the run, find a learning rate, train,
diagnose, tune (or let autofit run that loop), evaluate once, use and export the model. A facade and nothing else: each name lives in the
layer that does the work, and this module only gathers them (the command line calls these)."""

from gradwise.autofit import AutofitResult, autofit
from gradwise.config import Config, load_config
from gradwise.core.errors import GradwiseError
from gradwise.export import export_hf, verify_export
from gradwise.inference import evaluate_run, generate_text, load_run, predict
from gradwise.plan import plan_run
from gradwise.report import write_report
from gradwise.search import TuneResult, tune
from gradwise.tools.data_stats import check_data, data_stats
from gradwise.tools.lr_find import lr_find
from gradwise.tools.step_runs import run_steps
from gradwise.training.diagnose import diagnose_run
from gradwise.training.run import RunResult, train
from gradwise.training.run_config import resolve_train_config
from gradwise.training.step import OptimizationStep, StepResult

__all__ = ["AutofitResult", "Config", "GradwiseError", "OptimizationStep", "RunResult", "StepResult", "TuneResult", "autofit", "check_data",
           "data_stats", "diagnose_run", "evaluate_run", "export_hf", "generate_text", "load_config", "load_run",
           "lr_find", "plan_run", "predict", "resolve_train_config", "run_steps", "train", "tune", "verify_export",
           "write_report"]
