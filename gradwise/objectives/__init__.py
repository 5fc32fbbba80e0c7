"""What the step minimises: the loss terms of a task (``losses``) and explicit L1/L2 penalties (``penalties``)."""

from gradwise.objectives.losses import (
    IGNORE_INDEX,
    CausalLMObjective,
    ClassificationObjective,
    LossTerms,
    Objective,
)
from gradwise.objectives.penalties import Penalties

__all__ = ["IGNORE_INDEX", "CausalLMObjective", "ClassificationObjective", "LossTerms", "Objective", "Penalties"]
