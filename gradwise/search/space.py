"""A search space: dotted config keys, each with a distribution or an explicit list of values.

``space.yaml``::

    optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.n_layer: {type: int, low: 2, high: 6}            # optional step, log
    optim.name: {type: categorical, choices: [adamw, muon]}
    model.dropout: [0.0, 0.1, 0.2]                          # a plain list: these values (what grid search needs)

Every key is checked against the config before any trial runs, so a typo fails at once with the key named.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradwise.config.load import apply_overrides, build_config
from gradwise.config.schema import Config
from gradwise.core.errors import ConfigError


@dataclass(frozen=True)
class Param:
    key: str  # dotted config key, e.g. optim.lr
    kind: str  # float, int or categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def grid_values(self) -> list[Any]:
        """The values grid search visits: the choices, or every step of an integer range."""
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(f"space key '{self.key}': grid search needs explicit values; write it as a list, "
                          f"e.g. {self.key}: [{self.low:g}, {self.high:g}]")

    def describe(self) -> str:
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        return f"{self.kind} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


def load_space(source: str | Path | dict[str, Any], base: Config | None = None) -> list[Param]:
    """Parse a space from a YAML file or a dict; with ``base``, check every key against that config."""
    if isinstance(source, dict):
        raw, where = source, "space"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"search space file '{source}' not found; pass --space FILE.yaml")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}; fix the YAML there") from None
        where = str(path)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where} must map config keys to distributions, e.g. optim.lr: "
                          "{type: float, low: 1e-4, high: 1e-2, log: true}")
    params = [_param(str(key), spec) for key, spec in raw.items()]
    if base is not None:
        for p in params:
            _check_key(p, base)
    return params


def _param(key: str, spec: Any) -> Param:
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"space key '{key}': the list of values is empty")
        return Param(key, "categorical", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise ConfigError(f"space key '{key}': give a list of values or a mapping with 'type'; got {spec!r}")
    kind = spec.get("type")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"space key '{key}': type must be float, int or categorical; got {kind!r}")
    extra = set(spec) - allowed[kind]
    if extra:
        raise ConfigError(f"space key '{key}': unknown field(s) {sorted(extra)} for type {kind}; "
                          f"allowed: {sorted(allowed[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space key '{key}': categorical needs a non-empty list 'choices'")
        return Param(key, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = float(spec["step"]) if spec.get("step") is not None else None
    except KeyError as exc:
        raise ConfigError(f"space key '{key}': {kind} needs '{exc.args[0]}'") from None
    except (TypeError, ValueError):
        raise ConfigError(f"space key '{key}': low, high and step must be numbers; got {spec}") from None
    log = bool(spec.get("log", False))
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"space key '{key}': low must be less than high; got low={low:g}, high={high:g}")
    if log and low <= 0:
        raise ConfigError(f"space key '{key}': a log range needs low > 0; got low={low:g}")
    if log and step is not None:
        raise ConfigError(f"space key '{key}': choose either log or step, not both")
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"space key '{key}': an int range needs whole-number bounds; got {low:g}..{high:g}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _check_key(p: Param, base: Config) -> None:
    """Apply the range's ends (or each choice) to the config: unknown keys and bad values fail now."""
    values = list(p.choices) if p.choices is not None else [p.low, p.high]
    if p.kind == "int":
        values = [int(v) for v in values]
    for value in values:
        try:
            build_config(apply_overrides(base.to_dict(), [f"{p.key}={json.dumps(value)}"]))
        except ConfigError as exc:
            raise ConfigError(f"space key '{p.key}' = {value!r}: {exc}") from None


def to_overrides(params: dict[str, Any]) -> list[str]:
    """Sampled values as ``--set`` strings (JSON is valid YAML, so strings and lists survive)."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]
