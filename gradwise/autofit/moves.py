"""The candidates autofit tries next, read off the diagnosis of the best run so far.

The diagnosis (gradwise/training/diagnose.py) already ends every verdict with ready ``--set`` actions; those
are the first candidates, one per alternative. Autofit adds a few rules of its own where the diagnosis
gives no ``--set`` (a still-improving run is told to "train longer", which the next rung does anyway):

- overfitting: the diagnosis's regularization, and each of its keys alone;
- still improving, or barely learned: a learning rate twice as high;
- converged: with validation well above training, the overfitting moves; else a higher learning rate;
- unstable: the diagnosis's lower rate and clipping; diverged: its rate / 10, and a gentler / 3.

Keys that set the length of a run (steps, time, evaluations) are left out: the rungs decide those. The keys
the moves name are also the space for Optuna's proposals (:func:`search_space`), with ranges fixed around
the starting config so that every trial of the study shares one distribution per key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from gradwise.config.keys import get_key
from gradwise.config.load import parse_override

LENGTH_KEYS = ("train.max_steps", "train.max_time", "train.eval_every", "train.max_tokens")
SMALL_GAP = 0.05  # as the diagnosis's: at a plateau, validation within 5% of training loss
_SET = re.compile(r"--set\s+([A-Za-z0-9_.]+)=(\S+)")


@dataclass
class Move:
    """One candidate's change to its parent: overrides and the verdict that asked for them."""

    changes: dict[str, Any]
    reason: str
    source: str = "diagnosis"  # "diagnosis", "rule" or "tpe"
    verdicts: list[str] = field(default_factory=list)


def action_overrides(action: str) -> list[dict[str, Any]]:
    """The ``--set KEY=VALUE`` changes of one diagnosis action, one dict per alternative ("... or ...")."""
    out = []
    for part in re.split(r"\s+or\s+", action):
        changes = {}
        for key, raw in _SET.findall(part):
            raw = raw.rstrip(",;:)")
            if key in LENGTH_KEYS:
                continue
            changes[key] = parse_override(f"{key}={raw}")[1]
        if changes:
            out.append(changes)
    return out


def moves_from(verdicts: list[dict[str, Any]], config: dict[str, Any], facts: dict[str, Any] | None = None) -> list[Move]:
    """Candidate changes for the run whose verdicts (as summary.json keeps them) and config are given."""
    moves: list[Move] = []

    def add(changes: dict[str, Any], reason: str, source: str, kind: str) -> None:
        if changes and all(_differs(config, k, v) for k, v in changes.items()) and \
                not any(m.changes == changes for m in moves):
            moves.append(Move(changes, reason, source, [kind]))

    lr = float(get_key(config, "optim.lr", 1e-3) or 1e-3)
    for v in verdicts:
        kind, why = v["kind"], f"{v['title']}: {v['evidence']}"
        for action in v.get("actions", []):
            for changes in action_overrides(action):
                add(changes, why, "diagnosis", kind)
                if kind == "overfitting" and len(changes) > 1:  # each regularizer alone, too
                    for key, value in changes.items():
                        add({key: value}, why, "rule", kind)
        if kind in ("still_improving", "underfitting") or (kind == "converged" and _gap(facts) < SMALL_GAP):
            add({"optim.lr": _round(lr * 2)}, why + " (a higher learning rate learns faster)", "rule", kind)
        if kind == "converged" and _gap(facts) >= SMALL_GAP:
            dropout = float(get_key(config, "model.dropout", 0.0) or 0.0)
            add({"model.dropout": round(min(0.5, dropout + 0.1), 2)}, why + " (validation well above training)",
                "rule", kind)
        if kind == "diverged":
            add({"optim.lr": _round(lr / 3)}, why + " (a gentler cut than / 10)", "rule", kind)
    return moves


def _differs(config: dict[str, Any], key: str, value: Any) -> bool:
    return get_key(config, key, None) != value


def _gap(facts: dict[str, Any] | None) -> float:
    gap = (facts or {}).get("gap")
    return float(gap) if isinstance(gap, (int, float)) and math.isfinite(gap) else 0.0


def _round(x: float) -> float:
    return float(f"{x:.3g}")


# The keys Optuna proposes values for, and their ranges around the starting config (log: a ratio scale).
def search_space(start: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lr = float(get_key(start, "optim.lr", 1e-3) or 1e-3)
    return {
        "optim.lr": {"low": lr / 10, "high": lr * 10, "log": True},
        "model.dropout": {"low": 0.0, "high": 0.5, "log": False},
        "optim.weight_decay": {"low": 0.0, "high": 0.5, "log": False},
        "train.grad_clip": {"low": 0.25, "high": 2.0, "log": False},
        "regularization.l2": {"low": 0.0, "high": 1e-2, "log": False},
    }


def tpe_keys(moves: list[Move], space: dict[str, dict[str, Any]]) -> list[str]:
    """The keys the moves name that Optuna can propose values for (in the order first named)."""
    keys: list[str] = []
    for m in moves:
        keys += [k for k in m.changes if k in space and k not in keys]
    return keys
