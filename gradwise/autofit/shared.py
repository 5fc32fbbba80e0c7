"""Several processes, on one machine or many, sharing one autofit's rounds through its Optuna study.

The first process to create the study drives: it runs the schedule, keeps ``autofit.json``, trains the start,
the TPE proposals and the final run, and scores the winner on test. A round's other candidates (the moves
from the diagnosis, the promotions) go into the study's queue as WAITING trials. Any process with the same
command and ``--storage`` takes them from there: the storage hands each queued trial to one process only, so
no candidate is trained twice. A process that finds the study already driven joins it as a worker. It trains
queued candidates until the driver is done or the budget's deadline passes, and writes each result into its
trial, where the driver reads it.

The study's ``autofit`` user attribute says who drives, from which config, and until when:
``{"driver": {host, pid, start}, "base": the starting config, "start_overrides": the sizing, "ready",
"deadline": epoch seconds, "done"}``. A wall-clock deadline is read on each machine's own clock, so the
machines' clocks must agree (NTP) to within the accuracy the budget needs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradwise.autofit.candidates import Candidate, describe_line, distributions, optuna_params, run_candidate
from gradwise.autofit.moves import search_space
from gradwise.config.schema import Config
from gradwise.core.errors import GradwiseError
from gradwise.search.study import changed_keys, fail_dead_trials, this_worker, worker_alive
from gradwise.training.run_config import resolve_train_config

POLL_SECONDS = 1.0  # how often a waiting process looks at the study again
JOIN_WAIT_SECONDS = 60.0  # how long a joining process waits for a new driver to publish its start
NOTHING_QUEUED = "nothing queued: another process took the last candidate"
LOCAL_KEYS = ("out_dir", "name", "data.path", "data.cache_dir")  # may differ from machine to machine
ATTR = "autofit"


def claim_study(optuna: Any, name: str, storage: Any, sampler: Any) -> tuple[Any, bool]:
    """Open the study; True when this process created it (and so drives it). Creation is atomic in every
    Optuna storage (study names are unique), so of two processes started together exactly one drives."""
    from optuna.exceptions import DuplicatedStudyError

    common = dict(study_name=name, storage=storage, direction="minimize", sampler=sampler,
                  pruner=optuna.pruners.NopPruner())
    try:
        return optuna.create_study(**common), True
    except DuplicatedStudyError:
        return optuna.create_study(**common, load_if_exists=True), False


def driven_elsewhere(study: Any) -> dict[str, Any] | None:
    """The study's ``autofit`` attribute when another process drives it (waiting briefly for a new driver to
    write it); None when nobody has yet."""
    waited = time.monotonic()
    while True:
        info = study.user_attrs.get(ATTR)
        if info is not None or time.monotonic() - waited > JOIN_WAIT_SECONDS:
            return info
        time.sleep(POLL_SECONDS)


def publish(study: Any, **fields: Any) -> None:
    """Update the driver's ``autofit`` attribute (merged into what is there)."""
    study.set_user_attr(ATTR, {**(study.user_attrs.get(ATTR) or {}), **fields})


def queue_candidate(study: Any, cand: Candidate, space: dict[str, dict[str, Any]], deadline: float | None) -> None:
    """Put ``cand`` in the study's queue: whichever process asks next trains it, within ``deadline``."""
    study.enqueue_trial(optuna_params(cand.overrides, space),
                        user_attrs={"slot": cand.slot, "queued": cand.to_json(), "deadline": deadline})


def in_queue_or_running(study: Any, slot: str) -> bool:
    from optuna.trial import TrialState

    return any(t.user_attrs.get("slot") == slot
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))


def take_queued(study: Any, space: dict[str, dict[str, Any]]) -> tuple[Any, Candidate, float | None] | None:
    """The next queued candidate as (its trial, now RUNNING and ours; the candidate; its deadline), or None."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    trial = study.ask()  # pops the oldest WAITING trial, atomically; a fresh one when another took the last
    trial.set_user_attr("worker", this_worker())  # so a dead process's trial can be failed and redone
    queued = trial.user_attrs.get("queued")
    if queued is None:
        trial.set_user_attr("fail_reason", NOTHING_QUEUED)
        study.tell(trial, state=TrialState.FAIL)
        return None
    cand = Candidate.from_json(queued)
    params = optuna_params(cand.overrides, space)
    for key, d in distributions(params, space, params).items():  # records the queued values as the trial's
        trial.suggest_float(key, d.low, d.high, log=d.log)
    return trial, cand, trial.user_attrs.get("deadline")


def check_same_autofit(info: dict[str, Any], base: Config) -> None:
    changed = [k for k in changed_keys(info.get("base"), base.to_dict())
               if not any(k == key or k.startswith(key + ".") for key in LOCAL_KEYS)]
    if changed:
        driver = info.get("driver") or {}
        raise GradwiseError(f"this study's autofit (driven on {driver.get('host', '?')}) starts from another config "
                            f"(it differs in {', '.join(changed[:4])}); join it with the driver's command, or "
                            "choose --name NEW")


def join(study: Any, info: dict[str, Any], base: Config, unit: str, trials: Path, quiet: bool,
         say: Callable[[str], None]) -> int:
    """This process is not the study's first: check it runs the same autofit, wait for the driver's start,
    then train the candidates it queues; returns how many."""
    check_same_autofit(info, base)
    driver = info.get("driver") or {}
    if driver.get("host") == socket.gethostname() and not worker_alive(driver):
        raise GradwiseError(f"the driver of this autofit (pid {driver.get('pid')}) is gone; continue it with the "
                            "same command and --resume")
    waited = time.monotonic()
    while not info.get("ready") and not info.get("done"):  # the driver is still sizing its start
        if time.monotonic() - waited > 3600:
            raise GradwiseError("the driver of this autofit has not published its start in an hour; is it running?")
        time.sleep(POLL_SECONDS)
        info = study.user_attrs.get(ATTR) or info
    if info.get("start_overrides"):
        base = resolve_train_config(base, info["start_overrides"])[0]
    return work(study, info, base, search_space(base.to_dict()), trials, unit, quiet, say)


def work(study: Any, info: dict[str, Any], base: Config, space: dict[str, dict[str, Any]], trials: Path,
         unit: str, quiet: bool, say: Callable[[str], None]) -> int:
    """Train queued candidates until the driver is done or the deadline passes; returns how many."""
    driver = info.get("driver") or {}
    say(f"worker   joined the autofit driven on {driver.get('host', '?')} (pid {driver.get('pid', '?')}): "
        "training the candidates it queues")
    count = 0
    while True:
        info = study.user_attrs.get(ATTR) or {}
        deadline = info.get("deadline") if unit == "seconds" else None
        if info.get("done") or (deadline is not None and time.time() >= deadline):
            break
        fail_dead_trials(study)
        got = take_queued(study, space)
        if got is None:
            time.sleep(POLL_SECONDS)
            continue
        trial, cand, until = got
        max_time = None if until is None or unit != "seconds" else until - time.time()
        cand = run_candidate(cand, base, study, space, trials, unit, max_time=max_time, first=False, trial=trial,
                             quiet=quiet)
        say(describe_line(cand, base.task))
        count += 1
    say(f"worker   done: trained {count} candidate(s); the driver keeps the record, best.yaml and the test score")
    return count
