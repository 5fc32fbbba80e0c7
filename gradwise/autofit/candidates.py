"""One autofit candidate: a config (the start plus overrides) trained at one rung, as a trial of the study.

Every candidate is an Optuna trial (ask and tell), so the study's storage keeps it, Optuna's TPE learns from
it, and a resumed autofit finds it again by its slot (``"1.expand.3"``: level, stage, index) instead of
training it twice. A candidate that fails is recorded with its reason and skipped; one stopped by Ctrl-C is
redone on resume. Only validation is read: every run trains with ``train.test_eval=false``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradwise.autofit.budget import EVALS_PER_RUN
from gradwise.config.schema import Config
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import read_metrics
from gradwise.training.diagnose import diagnose_run
from gradwise.training.run import train

INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass
class Candidate:
    slot: str  # level.stage.index, e.g. "1.expand.3"; "0.start" is the starting config
    overrides: dict[str, Any]  # the whole difference from the starting config
    changes: dict[str, Any]  # the difference from its parent
    steps: int
    parent: str | None
    reason: str
    source: str  # start, diagnosis, rule, tpe, promote
    state: str = "pending"  # complete, failed, skipped, interrupted
    score: float | None = None  # what decides (lower is better): what chose its checkpoint (:func:`score_of`)
    val: dict[str, Any] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    cost: float = 0.0  # in the budget's unit
    run: str | None = None
    trial: int | None = None
    fail_reason: str | None = None
    curve: list[list[float]] = field(default_factory=list)  # [seconds into the run, score] at each evaluation
    by: str | None = None  # the process that trained it, "host:pid" (several machines can share an autofit)
    eval_every: int | None = None  # its evaluation cadence (None: the rung's, EVALS_PER_RUN a run)
    warm_from: str | None = None  # the slot whose best weights it started from (None: from scratch)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def score_at(self, seconds: float) -> float | None:
        """The best score this run had reached ``seconds`` into training, interpolated in time between its
        evaluations (None without a curve): what a candidate is worth to a wall-clock budget, where a run twice
        as slow must learn twice as much per step to be as good."""
        running, best = [], math.inf
        for t, v in self.curve:
            if math.isfinite(v):
                best = min(best, v)  # the best checkpoint is the one kept
                running.append((t, best))
        if not running:
            return None
        if seconds <= running[0][0]:
            return running[0][1]
        for (t0, v0), (t1, v1) in zip(running, running[1:], strict=False):
            if seconds <= t1:
                return v0 + (seconds - t0) / (t1 - t0) * (v1 - v0) if t1 > t0 else v1
        return running[-1][1]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)

    def describe_changes(self) -> str:
        return " ".join(f"{k}={_short(v)}" for k, v in self.changes.items()) or "(as its parent)"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, (int, str)) else str(v)


NOISE_SES = 2  # a candidate must beat its parent by this many standard errors of the parent's val loss


def within_noise(parent: Candidate, tried: list[Candidate], decides: str = "loss") -> float | None:
    """The margin that no run of ``tried`` beat ``parent`` by, when none is better than it by NOISE_SES standard
    errors of its validation loss: a level that found nothing the rung can see, where more rounds buy noise
    and the final run loses their steps. None when one is clearly better, when none finished, or when the
    score is not that loss (``decides``, the ``train.best_on``, a metric: it has no standard error)."""
    se = parent.val.get("loss_se")
    scores = [c.score for c in tried if c.state == "complete" and c.score is not None]
    if not isinstance(se, (int, float)) or not math.isfinite(se) or se <= 0 or parent.score is None or not scores \
            or decides != "loss":
        return None
    margin = NOISE_SES * float(se)
    return margin if parent.score - min(scores) < margin else None


def rung_overrides(cfg_dict: dict[str, Any], steps: int, changes: dict[str, Any],
                   eval_every: int | None = None) -> dict[str, Any]:
    """The keys a rung sets: its steps, evaluations that give the diagnosis enough points (or ``eval_every``),
    and a warmup that fits in the run (a quarter at most) unless the candidate sets one itself."""
    out: dict[str, Any] = {"train.max_steps": steps, "train.eval_every": eval_every or max(1, steps // EVALS_PER_RUN)}
    warmup = int(changes.get("schedule.warmup_steps", cfg_dict.get("schedule", {}).get("warmup_steps", 0)) or 0)
    if warmup > steps // 4:
        out["schedule.warmup_steps"] = steps // 4
    return out


def score_of(summary: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """(score, validation numbers): the score that chose the run's best checkpoint, lower is better: its val
    loss, or 1 - ``train.best_on``'s metric. A classifier is ranked by its val loss too (``best_on: loss``, the
    presets' default): on a few hundred validation texts the loss is steadier than macro-F1, and the best
    macro-F1 of fifteen candidates overstates its model (the winner's curse, docs/autofit.md). None when the
    run has no finite validation."""
    val = {"loss": summary.get("best_val_loss"), **(summary.get("best_val_metrics") or {})}
    score = summary.get("best_score", val["loss"])
    return (float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None), val


def eval_curve(run_dir: Path, best_on: str) -> list[list[float]]:
    """[training seconds, score] at each of a run's evaluations, the score as :func:`score_of` reads it."""
    out = []
    for r in read_metrics(run_dir / "metrics.jsonl"):
        if r.get("kind") != "eval" or not isinstance(r.get("elapsed_s"), (int, float)):
            continue
        value = r.get("val_loss") if best_on == "loss" else r.get(f"val_{best_on}")
        if isinstance(value, (int, float)) and best_on != "loss":
            value = 1.0 - value
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append([float(r["elapsed_s"]), float(value)])
    return out


def optuna_params(values: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The values Optuna records as parameters: those of keys in the search space (numbers)."""
    return {k: float(v) for k, v in values.items() if k in space and isinstance(v, (int, float))}


def distributions(keys: Any, space: dict[str, dict[str, Any]], fixed: dict[str, float] | None = None) -> dict[str, Any]:
    """Optuna float distributions for ``keys``, widened to hold a fixed value outside the range."""
    from optuna.distributions import FloatDistribution

    out = {}
    for k in keys:
        r = space[k]
        low, high = r["low"], r["high"]
        if fixed and k in fixed:
            low, high = min(low, fixed[k]), max(high, fixed[k])
            if r["log"] and low <= 0:
                low = r["low"]
        out[k] = FloatDistribution(low, high, log=r["log"])
    return out


def find_recorded(study: Any, slot: str) -> Candidate | None:
    """A finished or failed trial of this slot (not one stopped by Ctrl-C, which is redone)."""
    for t in study.get_trials(deepcopy=False):
        record = t.user_attrs.get("candidate")
        if t.user_attrs.get("slot") == slot and record and record.get("state") in ("complete", "failed"):
            return Candidate.from_json(record)
    return None


def run_candidate(cand: Candidate, base: Config, study: Any, space: dict[str, dict[str, Any]], trial_root: Path,
                  unit: str, max_time: float | None, first: bool, trial: Any = None, quiet: bool = True) -> Candidate:
    """Train ``cand`` (or take it from the study when its slot is already there) and fill in its results.
    ``trial``: an Optuna trial already asked (a TPE proposal); else one is asked with the candidate's values."""
    recorded = find_recorded(study, cand.slot)
    if recorded is not None:
        if trial is not None:  # a proposal asked again on resume: not needed, the slot's record stands
            study.tell(trial, state=fail_state())
        return recorded
    if trial is None:
        params = optuna_params(cand.overrides, space)
        if params:
            study.enqueue_trial(params)
        trial = study.ask(distributions(params, space, params))
    cand.trial = trial.number
    cand.by = f"{socket.gethostname()}:{os.getpid()}"
    trial.set_user_attr("slot", cand.slot)
    name = cand.slot
    run_dir = trial_root / name
    cand.run = str(run_dir)
    cfg_dict = base.to_dict()
    overrides = {**cand.overrides, **rung_overrides(cfg_dict, cand.steps, cand.overrides, cand.eval_every)}
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    sets += [f"out_dir={json.dumps(str(trial_root))}", f"name={name}", "train.test_eval=false"]
    if not first:  # the start run checked the data and fitted the baseline; the split is the same for all
        sets += ["data.check=false", "data.baseline=false"]
    if max_time is not None and unit == "seconds":
        sets.append(f"train.max_time={max(1.0, max_time):.1f}s")
    shutil.rmtree(run_dir, ignore_errors=True)  # a redone slot starts clean
    started = time.monotonic()
    try:
        result = train(base, overrides=sets, quiet=quiet)
    except KeyboardInterrupt:
        _tell_failed(study, trial, cand, INTERRUPTED, "interrupted")
        raise
    except GradwiseError as exc:
        cand.cost = _cost(unit, time.monotonic() - started, None)
        return _tell_failed(study, trial, cand, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a candidate's own failure is recorded; the search goes on
        cand.cost = _cost(unit, time.monotonic() - started, None)
        return _tell_failed(study, trial, cand, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    s = result.summary
    cand.cost = _cost(unit, time.monotonic() - started, s)
    if s.get("stopped_because") == "interrupted":
        _tell_failed(study, trial, cand, INTERRUPTED, "interrupted")
        raise KeyboardInterrupt
    cand.score, cand.val = score_of(s)
    cand.curve = eval_curve(run_dir, base.train.best_on)
    d = diagnose_run(run_dir)
    cand.verdicts = [asdict(v) for v in d.verdicts]
    cand.facts = {k: v for k, v in d.facts.items() if isinstance(v, (int, float, str)) or v is None}
    if cand.score is None:
        return _tell_failed(study, trial, cand, "no finite validation score")
    cand.state = "complete"
    trial.set_user_attr("candidate", cand.to_json())
    study.tell(trial, cand.score)
    return cand


def _cost(unit: str, wall: float, summary: dict[str, Any] | None) -> float:
    if unit == "tokens":
        return float((summary or {}).get("tokens_seen") or 0)
    return round(wall, 3)


def fail_state() -> Any:
    """Optuna's FAIL state, imported only when a trial is told (optuna is an extra)."""
    from optuna.trial import TrialState

    return TrialState.FAIL


def _tell_failed(study: Any, trial: Any, cand: Candidate, reason: str, state: str = "failed") -> Candidate:
    cand.state, cand.fail_reason = state, reason
    trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr("candidate", cand.to_json())
    study.tell(trial, state=fail_state())
    return cand


def validation_words(score: float | None, val: dict[str, Any], task: str) -> str:
    """A candidate's validation in a few words: what decided, and a classifier's macro-F1 beside it."""
    loss = val.get("loss")
    out = f"val loss {loss:.4f}" if isinstance(loss, (int, float)) else f"val score {score:.4f}"
    f1 = val.get("macro_f1")
    return out + (f", macro-F1 {f1:.4f}" if task == "classify" and isinstance(f1, (int, float)) else "")


def describe_line(c: Candidate, task: str) -> str:
    """One candidate's line in autofit's output: its changes, its validation, its verdicts and its cost."""
    if c.state != "complete":
        return f"  {c.slot:<12} {c.describe_changes():<40} {c.state}: {c.fail_reason}"
    shown = validation_words(c.score, c.val, task)
    kinds = ", ".join(v["kind"] for v in c.verdicts)
    cost = f"{c.cost:,.0f} tokens" if c.cost >= 1000 else f"{c.cost:.1f} s"
    return f"  {c.slot:<12} {c.describe_changes():<40} {shown} | {kinds} | {cost}"
