"""Hyperparameter search: a space of config keys (``space``) searched by Optuna, one training run per trial
(``study``)."""

from gradwise.search.space import Param, load_space
from gradwise.search.study import TuneResult, tune

__all__ = ["Param", "TuneResult", "load_space", "tune"]
