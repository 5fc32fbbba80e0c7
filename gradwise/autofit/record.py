"""The autofit's record on disk (``autofit.json``), opened new or for ``--resume``, and the clock that says
what the budget has spent across the sessions of one autofit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gradwise.autofit.budget import Budget
from gradwise.config.schema import Config
from gradwise.core.errors import GradwiseError
from gradwise.report.autofit import RECORD, decided_by
from gradwise.search.study import changed_keys


class Clock:
    """What the budget has spent: the recorded spending of earlier sessions plus this one's."""

    def __init__(self, budget: Budget, spent_before: float):
        self.budget, self.before, self.started, self.tokens = budget, spent_before, time.monotonic(), 0.0

    @property
    def spent(self) -> float:
        if self.budget.unit == "tokens":
            return self.before + self.tokens
        return self.before + time.monotonic() - self.started

    @property
    def left(self) -> float:
        return self.budget.amount - self.spent


def open_record(out: Path, base: Config, budget: Budget, resume: bool) -> dict[str, Any]:
    """The record to write into: a new one, or with ``resume`` the one on disk, refused in one line when it is
    missing, damaged or another autofit's (before the study is touched, so nothing is lost)."""
    path = out / RECORD
    if path.exists() and not resume:
        raise GradwiseError(f"autofit {out} already exists; add --resume to continue it or choose --name NEW")
    if not path.exists():
        if resume:
            raise GradwiseError(f"--resume: {out} holds no autofit to continue (no {RECORD}); leave out --resume to "
                                "start one")
        return {"version": 2, "task": base.task, "decides": base.train.best_on, "base": base.to_dict(),
                "budget": {"amount": budget.amount, "unit": budget.unit}, "spent": 0.0, "rounds": [], "best": None,
                "test": None}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GradwiseError(f"--resume: {path} is damaged ({exc}); start a new autofit with --name NEW") from None
    if decided_by(record) != base.train.best_on:
        raise GradwiseError(f"--resume: {out} ranked its candidates on another score (an earlier gradwise ranked a "
                            "classifier on macro-F1, this one on train.best_on); start a new autofit with --name NEW")
    changed = changed_keys(record.get("base"), base.to_dict())
    if changed:
        raise GradwiseError(f"--resume: {out} is another autofit (its starting config differs in "
                            f"{', '.join(changed[:4])}); resume it with its own config, or choose --name NEW")
    if record["budget"]["unit"] != budget.unit:
        raise GradwiseError(f"--resume: {out} was budgeted in {record['budget']['unit']}, not {budget.unit}")
    record["budget"]["amount"] = budget.amount  # a resumed autofit may be given more (or less)
    return record
