"""``gradwise autofit``: validate, diagnose, adjust and retrain, in rounds, inside a budget.

0. With no config given, a language model's start is sized for the budget by the planner and its learning
   rate set by a range test (gradwise/autofit/start.py).
1. A probe of the starting config measures what a run costs (gradwise/autofit/budget.py), and the rungs are
   sized so the whole schedule fits the budget.
2. The start trains at the first rung and is diagnosed.
3. Each level: candidates from the diagnosis of the best run at that rung (gradwise/autofit/moves.py), plus
   a share of Optuna TPE proposals in the keys the diagnosis names, all trained at the rung; then the best
   third of the rung is promoted to a rung three times as long (successive halving). The last rung is
   sized to what is left of the budget. A level with no candidate better than its parent beyond the noise
   of its validation loss ends the rounds (gradwise/autofit/candidates.py, ``within_noise``).
4. The best run trains again with what is left of the budget, a GPT language model from its own best
   weights (gradwise/autofit/final.py).
5. The best validation score of all decides; its checkpoint is scored once on the test split.

Everything lands in ``<out_dir>/<name>/``: ``autofit.json`` (every round and candidate: its changes from its
parent, why it was tried, its verdicts, validation and cost), ``best.yaml``, ``study.db`` and ``trials/``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradwise.autofit.budget import (
    ETA,
    EXPLORE_SHARE,
    LEVELS,
    PROBE_STEPS,
    RESERVE,
    RunCost,
    RungPlan,
    parse_budget,
    plan_rungs,
)
from gradwise.autofit.candidates import (
    Candidate,
    describe_line,
    distributions,
    fail_state,
    find_recorded,
    run_candidate,
    within_noise,
)
from gradwise.autofit.final import (
    clock_schedule,
    final_eval_every,
    final_size,
    horizon_lr,
    no_early_stop,
    warm_start,
)
from gradwise.autofit.moves import moves_from, search_space, tpe_keys
from gradwise.autofit.record import Clock, open_record
from gradwise.autofit.shared import (
    POLL_SECONDS,
    claim_study,
    driven_elsewhere,
    in_queue_or_running,
    join,
    publish,
    queue_candidate,
    take_queued,
)
from gradwise.autofit.start import plan_start, wants_sizing
from gradwise.config.load import apply_overrides, build_config, read_config_file, save_config
from gradwise.config.schema import Config
from gradwise.core.errors import GradwiseError
from gradwise.core.rundir import check_dir_path, write_json
from gradwise.inference import evaluate_run
from gradwise.report.autofit import RECORD, write_autofit_page
from gradwise.search.study import (
    fail_dead_trials,
    make_sampler,
    make_storage,
    require_optuna,
    this_worker,
)
from gradwise.tasks import prepare_task
from gradwise.training.run import train
from gradwise.training.run_config import resolve_train_config

TPE_SHARE = 1 / 3  # of a level's candidates, proposed by Optuna's TPE in the keys the diagnosis names


@dataclass
class AutofitResult:
    out: Path
    best: Candidate | None
    best_config: Config | None
    test: dict[str, Any] | None
    record: dict[str, Any]
    interrupted: bool = False
    worker: bool = False  # this process joined another's autofit and trained its queued candidates


def autofit(config: Config | str | Path | None = None, overrides: list[str] | None = None, *, budget: str,
            out_dir: str | Path = "autofit", name: str | None = None, storage: str | None = None,
            resume: bool = False, seed: int = 0, quiet: bool = True,
            on_event: Callable[[str], None] | None = None) -> AutofitResult:
    """Run the validate -> diagnose -> adjust -> retrain loop on ``config`` inside ``budget`` (see the module doc)."""
    say = on_event or (lambda _line: None)
    plan_budget = parse_budget(budget)
    base, _, stem = resolve_train_config(config, overrides)
    out = check_dir_path(Path(out_dir) / (name or f"{stem}-autofit"), "the autofit directory")
    require_optuna()
    import optuna

    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")  # ask/tell: the trials are ours to end
    opened = None
    if storage is None or resume:  # refused before the study is touched: a taken name, nothing to resume
        opened = open_record(out, base, plan_budget, resume)
    study, created = claim_study(optuna, out.name, make_storage(storage, out), make_sampler("tpe", seed))
    info = None if created or resume or storage is None else driven_elsewhere(study)
    if info is not None:
        if info.get("done"):
            raise GradwiseError(f"the autofit of study {out.name} is finished (driven on "
                                f"{(info.get('driver') or {}).get('host', '?')}); choose --name NEW for a new one")
        worker_record: dict[str, Any] = {"task": base.task, "trained": 0}
        try:
            worker_record["trained"] = join(study, info, base, plan_budget.unit, out / "trials", quiet, say)
        except KeyboardInterrupt:
            return AutofitResult(out, None, None, None, worker_record, interrupted=True, worker=True)
        return AutofitResult(out, None, None, None, worker_record, worker=True)
    record = opened if opened is not None else open_record(out, base, plan_budget, resume)
    publish(study, driver=this_worker(), base=record["base"], ready=False, done=False)
    clock = Clock(plan_budget, 0.0)
    sized_now = False
    # No config given: the planner sizes the start and lr-find sets its rate, once, before anything is probed;
    # a resumed autofit keeps what its record says, whatever it is resumed with.
    if record.get("start_plan") is None and record.get("probe") is None and wants_sizing(config, base):
        record["start_plan"], sized_now = plan_start(base, list(overrides or []), plan_budget, say).to_json(), True
    start_overrides = (record.get("start_plan") or {}).get("overrides") or []
    if start_overrides:
        base = resolve_train_config(base, start_overrides)[0]
    publish(study, start_overrides=start_overrides, ready=True)
    space = search_space(base.to_dict())
    trials = out / "trials"
    state = _State(record, out, clock, study, base, space, trials, quiet, say)
    state.sized_now = sized_now
    try:
        best = state.run_all()
    except KeyboardInterrupt:
        state.save()
        say(f"interrupted: {out / RECORD} holds every finished candidate; continue with the same command and "
            "--resume")
        return AutofitResult(out, None, None, None, record, interrupted=True)
    best_cfg = state.finish(best)
    return AutofitResult(out, best, best_cfg, record.get("test"), record)


class _State:
    """The loop over rounds, with the record written after every candidate."""

    def __init__(self, record: dict[str, Any], out: Path, clock: Clock, study: Any, base: Config,
                 space: dict[str, dict[str, Any]], trials: Path, quiet: bool, say: Callable[[str], None]):
        self.record, self.out, self.clock, self.study, self.base = record, out, clock, study, base
        self.space, self.trials, self.quiet, self.say = space, trials, quiet, say
        self.done: dict[str, Candidate] = {}
        self.spent_recorded = 0.0
        self.rounds: list[dict[str, Any]] = []
        self.observed = [0.0, 0.0]  # candidates' real and predicted costs this session: the probe's correction
        self.sized_now = False  # the start was sized in this session (its wall clock is already on the clock)

    def estimate(self, steps: int) -> float:
        """A run's cost: the probe's estimate, scaled by how far the candidates so far were from theirs."""
        real, predicted = self.observed
        return self.cost.of(steps) * (real / predicted if predicted > 0 and real > 0 else 1.0)

    # ------------------------------------------------------------------ bookkeeping
    def save(self) -> None:
        self.record["rounds"] = self.rounds
        self.record["spent"] = round(self.spent_recorded, 3)
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / RECORD, self.record)

    def _round(self, stage: str, level: int, steps: int, parent: str | None, why: str) -> dict[str, Any]:
        r = {"round": len(self.rounds), "stage": stage, "level": level, "steps": steps, "parent": parent, "why": why,
             "candidates": []}
        self.rounds.append(r)
        self.say(f"round {r['round']} | {stage} at {steps:,} steps | {why}")
        return r

    def _train(self, rnd: dict[str, Any], cand: Candidate, trial: Any = None, expected: float | None = None) -> Candidate:
        """Train one candidate in this process (the start, a TPE proposal, the final run). ``expected``: its
        cost from the model that sized it (the final run: :func:`final_size`), else :meth:`estimate`."""
        recorded = find_recorded(self.study, cand.slot) is not None
        if not recorded and (self.estimate(cand.steps) if expected is None else expected) > self.clock.left:
            cand.state, cand.fail_reason = "skipped", "out of budget"
            if trial is not None:
                self.study.tell(trial, state=fail_state())
        else:
            cand = run_candidate(cand, self.base, self.study, self.space, self.trials, self.clock.budget.unit,
                                 max_time=self._max_time(), first=cand.slot == "0.start", trial=trial,
                                 quiet=self.quiet)
        return self._book(rnd, cand, recorded)

    def _train_shared(self, rnd: dict[str, Any], cands: list[Candidate]) -> None:
        """Train a round's fixed candidates through the study's queue, so that processes which joined this
        autofit (gradwise/autofit/shared.py) take their share; alone, this process trains them all, in order."""
        pending: dict[str, Candidate] = {}
        for c in cands:
            recorded = find_recorded(self.study, c.slot)
            if recorded is not None:
                self._book(rnd, recorded, recorded=True)
                continue
            if not in_queue_or_running(self.study, c.slot):  # on resume it may still be queued
                queue_candidate(self.study, c, self.space, self._deadline())
            pending[c.slot] = c
        publish(self.study, deadline=self._deadline())
        while pending:
            got = take_queued(self.study, self.space)
            if got is not None:
                trial, cand, _ = got
                if cand.slot not in pending:  # queued twice (its first taker was thought dead): done already
                    self.study.tell(trial, state=fail_state())
                    continue
                pending.pop(cand.slot)
                self._train(rnd, cand, trial)
                continue
            fail_dead_trials(self.study)
            for slot in list(pending):
                done = find_recorded(self.study, slot)
                if done is not None:  # trained by another process
                    self._book(rnd, pending.pop(slot), recorded=False, result=done)
                elif not in_queue_or_running(self.study, slot):  # its taker was stopped or died: again
                    queue_candidate(self.study, pending[slot], self.space, self._deadline())
            if pending:
                time.sleep(POLL_SECONDS)

    def _book(self, rnd: dict[str, Any], cand: Candidate, recorded: bool, result: Candidate | None = None) -> Candidate:
        """Count a candidate's cost and keep it. ``recorded``: trained in an earlier session; ``result``: trained
        just now by another process (this one's clock already runs for a wall-clock budget)."""
        predicted = self.cost.of(cand.steps)
        elsewhere = result is not None
        cand = result or cand
        if cand.state in ("complete", "failed"):
            self.spent_recorded += cand.cost
            if recorded:  # trained in an earlier session: its cost was spent then
                self.clock.before += cand.cost
            elif self.clock.budget.unit == "tokens":
                self.clock.tokens += cand.cost
            if not recorded and not elsewhere and cand.state == "complete":  # this machine's speed only
                self.observed[0] += cand.cost
                self.observed[1] += predicted
            self.done[cand.slot] = cand
        rnd["candidates"].append(cand.to_json())
        self.save()
        self.say(describe_line(cand, self.record["task"]) + (f" | on {cand.by}" if elsewhere else ""))
        return cand

    def _max_time(self) -> float | None:
        return self.clock.left - self._kept_back() if self.clock.budget.unit == "seconds" else None

    def _deadline(self) -> float | None:
        """The wall-clock time (epoch seconds) a queued candidate must end by, wherever it trains."""
        left = self._max_time()
        return None if left is None else time.time() + left

    # ------------------------------------------------------------------ the schedule
    def run_all(self) -> Candidate | None:
        self.cost, plan = self._probe()
        start = Candidate("0.start", {}, {}, plan.steps(0), None, "the starting config", "start")
        self._train(self._round("start", 0, plan.steps(0), None, "the starting config, diagnosed"), start)
        for level in range(LEVELS):
            steps = plan.steps(level)
            parent = self._best_at(steps)
            if parent is None:
                self.say("stopped: no candidate at this rung finished; see the failures above")
                break
            self._expand(level, steps, parent, plan.widths[level])
            margin = within_noise(parent, [c for c in self.done.values() if c.slot.startswith(f"{level + 1}.expand.")],
                                  self.base.train.best_on)
            if margin is not None:
                self.record["explore_stop"] = (f"no candidate beat {parent.slot} by more than {margin:.4f} (two standard "
                                               f"errors of its validation loss) at {steps:,} steps: the rounds cannot "
                                               "tell them apart, so the rest of the budget goes to the final run")
                self.say(f"no promotion: {self.record['explore_stop']}")
                break
            pool = self._ranked(steps)
            keep = pool[:math.ceil(len(pool) / ETA)]
            longer = steps * ETA
            if self.estimate(longer) * len(keep) > self.clock.left - self._kept_back():
                self.say(f"no promotion: what is left of the budget ({self.clock.budget.describe(self.clock.left)}) "
                         f"does not train {len(keep)} run(s) of {longer:,} steps")
                break
            at = self._common_seconds(pool)
            rnd = self._round("promote", level, longer, None, f"the best {len(keep)} of {len(pool)} at {steps:,} "
                              f"steps" + (f" (ranked at an equal {at:.1f} s of training)" if at else "")
                              + f", trained {longer / steps:.1f}x as long")
            self._train_shared(rnd, [Candidate(f"{level + 1}.promote.{i}", c.overrides, {}, longer, c.slot,
                                               f"promoted: rank {i + 1} of {len(pool)} at {steps:,} steps", "promote")
                                     for i, c in enumerate(keep)])
        self._final()
        return self._best_overall()

    def _kept_back(self) -> float:
        return RESERVE * self.clock.budget.amount * 0.5  # for the test evaluation and the estimates' error

    def _final(self) -> None:
        """The best run so far, trained again with everything left of the budget: the exploring rounds had
        EXPLORE_SHARE of it, and a longer run of the best config beats one more short one."""
        best = self._best_overall()
        if best is None:
            return
        error = self.estimate(best.steps) / max(self.cost.of(best.steps), 1e-9)
        steps, expected = final_size(self.base, self.clock.budget.unit, best, self.cost, error,
                                     self.clock.left - self._kept_back())
        if steps < best.steps * 1.5:
            self.say(f"no final run: what is left of the budget ({self.clock.budget.describe(self.clock.left)}) "
                     f"trains little more than {best.slot}'s {best.steps:,} steps")
            return
        warm = warm_start(self.base, best)
        lr = horizon_lr(self.base, best, steps, bool(warm))
        how = f"from its weights, {steps:,} steps more" if warm else f"{steps / best.steps:.1f}x its steps"
        if lr:
            how += (f"; its learning rate {best.overrides['optim.lr']:g}, chosen at {best.steps:,} steps, scaled to "
                    f"{lr['optim.lr']:g} for the longer run")
        clock = clock_schedule(self.clock.budget.unit)
        if clock:
            how += "; its schedule follows the clock as well as the steps"
        whole = no_early_stop(self.base)
        how += (f"; {'without early stopping, ' if whole else ''}its best checkpoint chosen from evaluations every "
                f"{final_eval_every(self.base, steps):,} steps")
        rnd = self._round("final", LEVELS, steps, best.slot, f"{best.slot}, the best so far, trained with what is "
                          f"left of the budget ({how})")
        final = Candidate(f"{LEVELS + 1}.final.0", {**best.overrides, **warm, **lr, **clock, **whole},
                          {**lr, **clock, **whole}, steps,
                          best.slot,
                          "the winner of the exploring rounds, trained for the rest of the budget", "final",
                          eval_every=final_eval_every(self.base, steps), warm_from=best.slot if warm else None)
        self._train(rnd, final, expected=expected)

    def _probe(self) -> tuple[RunCost, RungPlan]:
        saved = self.record.get("probe")
        probed_now = saved is None
        if probed_now:
            self.say(f"probe    2 x {PROBE_STEPS} steps of the starting config, to measure what a run costs")
            spent = 0.0
            for _ in range(2):  # the first warms up (tokenizing, caches, first calls); the second is measured
                shutil.rmtree(self.out / "probe", ignore_errors=True)
                started = time.monotonic()
                result = train(self.base, overrides=[
                    f"train.max_steps={PROBE_STEPS}", f"train.eval_every={PROBE_STEPS // 2}", "train.test_eval=false",
                    "data.baseline=false", "data.check=false", f"out_dir={json.dumps(str(self.out))}", "name=probe"],
                    quiet=True)
                wall = time.monotonic() - started
                spent += wall if self.clock.budget.unit == "seconds" else float(result.summary["tokens_seen"])
            cost = RunCost.from_probe(self.clock.budget.unit, result.summary, wall, evals=3)
            self.record["probe"] = {"cost": cost.__dict__, "spent": round(spent, 3)}
            shutil.rmtree(self.out / "probe", ignore_errors=True)
        cost = RunCost(**self.record["probe"]["cost"])
        probe_spent = float(self.record["probe"]["spent"])
        start_spent = float((self.record.get("start_plan") or {}).get("spent", 0.0))
        self.spent_recorded = probe_spent + start_spent  # each candidate found again adds its own cost
        # What earlier sessions spent; this session's own wall clock is already counted by the clock.
        wall = self.clock.budget.unit == "seconds"
        self.clock.before = (0.0 if wall and probed_now else probe_spent) + \
            (0.0 if wall and self.sized_now else start_spent)
        saved_plan = self.record.get("plan")
        if saved_plan is None:
            plan = plan_rungs(cost, self.clock.budget.amount, self.spent_recorded, max_first=self.base.train.max_steps)
            self.record["plan"] = plan.to_json()
        else:
            plan = RungPlan(**saved_plan)
        self.say(f"plan     rungs of {plan.steps(0):,}, {plan.steps(1):,} and {plan.steps(2):,} steps in "
                 f"{EXPLORE_SHARE:.0%} of the budget: {sum(plan.widths) + 1} candidates from the diagnosis, the best "
                 f"third promoted at each rung; then the winner trained with the rest | about "
                 f"{self.clock.budget.describe(cost.of(plan.steps(0)))} per first-rung run")
        self.save()
        return cost, plan

    def _expand(self, level: int, steps: int, parent: Candidate, width: int) -> None:
        parent_cfg = _config_dict(self.base, parent.overrides)
        moves = moves_from(parent.verdicts, parent_cfg, parent.facts)
        n_tpe = max(1, round(width * TPE_SHARE)) if width > 1 else 0
        chosen = moves[:max(0, width - n_tpe)]
        n_tpe = width - len(chosen)
        keys = tpe_keys(moves, self.space) or ["optim.lr"]
        kinds = ", ".join(v["title"] for v in parent.verdicts) or "no verdict"
        rnd = self._round("expand", level, steps, parent.slot, f"from {parent.slot} ({kinds}): {len(chosen)} "
                          f"move(s) from its diagnosis, {n_tpe} TPE proposal(s) in {', '.join(keys)}")
        self._train_shared(rnd, [Candidate(f"{level + 1}.expand.{i}", {**parent.overrides, **m.changes}, m.changes,
                                           steps, parent.slot, m.reason, m.source) for i, m in enumerate(chosen)])
        for j in range(n_tpe):
            slot = f"{level + 1}.expand.{len(chosen) + j}"
            trial = None
            values: dict[str, Any] = {}
            if find_recorded(self.study, slot) is None:
                trial = self.study.ask(distributions(keys, self.space))
                values = {k: float(f"{trial.params[k]:.3g}") for k in keys}
            cand = Candidate(slot, {**parent.overrides, **values}, values, steps, parent.slot,
                             f"TPE proposal in {', '.join(keys)} (named by {kinds})", "tpe")
            self._train(rnd, cand, trial)

    def _ranked(self, steps: int) -> list[Candidate]:
        """The rung's finished candidates, best first. Under a wall-clock budget they are compared at the same
        seconds of training (the fastest one's), so a bigger or slower config must learn more per second, not
        per step, to rank above: the final run trains for a time, not a step count. Under a token budget, the
        same steps are the same spending, and the scores compare as they are."""
        pool = [c for c in self.done.values() if c.steps == steps and c.state == "complete"]
        common = self._common_seconds(pool)
        if common is None:
            return sorted(pool, key=lambda c: c.score)
        return sorted(pool, key=lambda c: (c.score_at(common), c.score))

    def _common_seconds(self, pool: list[Candidate]) -> float | None:
        """The training seconds a wall-clock rung is compared at (None: a token budget, or a run without a curve)."""
        if self.clock.budget.unit != "seconds" or not pool or any(not c.curve for c in pool):
            return None
        return min(c.curve[-1][0] for c in pool)

    def _best_at(self, steps: int) -> Candidate | None:
        pool = self._ranked(steps)
        return pool[0] if pool else None

    def _best_overall(self) -> Candidate | None:
        pool = [c for c in self.done.values() if c.state == "complete"]
        return min(pool, key=lambda c: (c.score, -c.steps)) if pool else None

    # ------------------------------------------------------------------ the end
    def finish(self, best: Candidate | None) -> Config | None:
        publish(self.study, done=True)  # processes that joined stop here
        if best is None:
            self.save()
            raise GradwiseError(f"autofit found no candidate that trained to a finite validation score; see "
                                f"{self.out / RECORD} for each failure")
        if not (Path(best.run) / "config.yaml").is_file():  # trained on another machine: its checkpoint is there
            here = [c for c in self.done.values() if c.state == "complete" and (Path(c.run) / "config.yaml").is_file()]
            local = min(here, key=lambda c: (c.score, -c.steps))  # the final run trains here: there is one
            self.say(f"best     {best.slot} was trained on {best.by}, whose checkpoint this machine lacks: "
                     f"{local.slot}, the best trained here, is the one tested and written to best.yaml")
            self.record["best_elsewhere"] = {"slot": best.slot, "by": best.by, "score": best.score}
            best = local
        self.record["best"] = best.slot
        cfg = build_config(read_config_file(Path(best.run) / "config.yaml"))
        cfg.name, cfg.out_dir, cfg.train.test_eval = None, "runs", True
        cfg.train.max_time = self.base.train.max_time  # the candidate's own cap was the budget's, and
        cfg.schedule.horizon = self.base.schedule.horizon  # the final run's schedule followed that cap
        cfg.data.check, cfg.data.baseline = self.base.data.check, self.base.data.baseline
        save_config(cfg, self.out / "best.yaml")
        if self.record.get("test") is None:  # the one look at the test split, on the chosen checkpoint
            report = evaluate_run(best.run, "test")
            self.record["test"] = {"slot": best.slot, "loss": report.loss, **report.scalars}
        start = self.done.get("0.start")
        self.record["start"] = {"score": start.score, "val": start.val} if start else None
        if self.base.task == "classify" and self.base.data.baseline:
            # the bar to beat, TF-IDF + logistic regression on the same split (fitted once, cached): its val and
            # its own one test score, beside the winner's; nothing above was decided by it
            self.record["baseline"] = prepare_task(cfg, None).baseline()
        self.save()
        self.say(f"report   {write_autofit_page(self.out)}: validation by round, every decision, the winner "
                 "beside the start")
        return cfg


def _config_dict(base: Config, overrides: dict[str, Any]) -> dict[str, Any]:
    return apply_overrides(base.to_dict(), [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
