"""``gradwise plan``: what a run will cost before it starts. ``estimate`` holds the token formulas (the memory ones
are gradwise.training.memory, which every run also checks before it builds its model),
``hf_shape`` a Hugging Face model's shape built on the meta device, ``calibration`` a bounded timing of the
real step, ``budget`` the loop's wall time and the budget search, ``planner`` the assembled plan."""

from gradwise.plan.estimate import Plan, fmt_count, model_spec
from gradwise.plan.planner import plan_run, resolve_config

__all__ = ["Plan", "fmt_count", "model_spec", "plan_run", "resolve_config"]
