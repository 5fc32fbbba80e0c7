"""``gradwise plan``: what a run will cost before it starts. ``estimate`` holds the memory and token formulas,
``hf_shape`` a Hugging Face model's shape built on the meta device, ``budget`` the calibration of the real
step and the budget search, ``planner`` the assembled plan."""

from gradwise.plan.estimate import (
    Plan,
    activation_bytes,
    fmt_bytes,
    fmt_count,
    memory_bytes,
    model_spec,
    optimizer_state_bytes,
)
from gradwise.plan.planner import plan_run, resolve_config

__all__ = ["Plan", "activation_bytes", "fmt_bytes", "fmt_count", "memory_bytes", "model_spec",
           "optimizer_state_bytes", "plan_run", "resolve_config"]
