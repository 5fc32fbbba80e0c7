"""Autofit: the multi-step optimization loop (train, validate, diagnose, adjust, retrain) run by gradwise itself,
inside a budget, every decision recorded (``rounds``: the loop; ``moves``: what the diagnosis asks for;
``budget``: the arithmetic; ``candidates``: one trial of the study)."""

from gradwise.autofit.rounds import AutofitResult, autofit

__all__ = ["AutofitResult", "autofit"]
