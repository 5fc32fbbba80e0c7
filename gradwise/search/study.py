"""``gradwise tune``: hyperparameter search on Optuna, where every trial is a real gradwise training run.

Optuna does the searching (samplers, pruners, storage); gradwise supplies what a trial is: a run directory
under the study, validation loss reported at every evaluation so a pruner can stop a hopeless trial, and
failures (an exception, non-finite training, out of memory) recorded on the trial while the study goes on.
The test split is never touched by a trial; ``final`` retrains the best config once and tests it.

Studies live in ``<out_dir>/<study>/``: ``study.db`` (SQLite, the default storage), ``trials/`` (one run
directory per trial), ``best.yaml`` (the best trial's full config, ready for ``gradwise train``) and
``trials.json``. Re-running the same call continues the study: ``trials`` is the total to reach, counting
finished and pruned trials, so an interrupted search picks up where it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradwise.config.load import build_config, read_config_file, save_config
from gradwise.config.schema import Config
from gradwise.core.errors import ConfigError, GradwiseError
from gradwise.core.rundir import check_dir_path
from gradwise.search.plots import write_study_plots
from gradwise.search.space import Param, load_space, to_overrides
from gradwise.training.distributed import torchrun_world_size
from gradwise.training.run import train
from gradwise.training.run_config import resolve_train_config

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
PRUNERS = ("none", "median", "halving", "hyperband")


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise GradwiseError("gradwise tune needs Optuna: pip install 'gradwise[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: their reasons go in the table, not tracebacks
    return optuna


@dataclass
class TuneResult:
    study: Any  # optuna.Study
    study_dir: Path
    best_config: Config | None  # None when no trial finished
    best_value: float | None
    final: dict[str, Any] | None = None  # summary of the retrained best config (with final=True)
    interrupted: bool = False  # Ctrl-C stopped the search; the same call resumes it


def make_sampler(name: str, seed: int) -> Any:
    """The sampler that proposes new trials. Grid search proposes none: its points are queued up front
    (:func:`enqueue_grid`), and a worker never samples past the queue."""
    optuna = require_optuna()
    # Arguments pinned so a study means the same on Optuna 4 and 5 (5 changes TPE's defaults).
    if name == "tpe":
        # Multivariate TPE models the parameters jointly (lr and dropout interact); replaying a recorded
        # 36-point grid with 30 sampler seeds, it came within 1% of the grid's best at 30% of its steps in 28
        # of 30 seeds, against 25 of 30 for independent TPE (bench/search.py, docs/benchmarks.md).
        warnings.filterwarnings("ignore", message=".*(constant_liar|multivariate).*")  # "experimental" in Optuna 4
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True)
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        try:
            return optuna.samplers.GPSampler(seed=seed)
        except ImportError as exc:
            raise GradwiseError(f"sampler gp needs {exc.name or 'scipy'}: pip install scipy") from None
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401 - Optuna imports it lazily, at the first trial
        except ImportError:
            raise GradwiseError("sampler cmaes needs the 'cmaes' package: pip install 'gradwise[tune]'") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ConfigError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, cfg: Config) -> Any:
    optuna = require_optuna()
    t = cfg.train
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":  # the first evaluation of a trial never prunes it: so early, it says too little
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=t.eval_every + 1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=t.eval_every, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=t.eval_every, max_resource=t.max_steps, reduction_factor=3)
    raise ConfigError(f"unknown pruner '{name}'; choose one of {', '.join(PRUNERS)}")


def make_storage(url: str | None, study_dir: Path) -> Any:
    """None: SQLite in the study directory. 'journal': a journal file there (several local processes).
    Anything else: an RDB URL (postgresql://..., mysql://..., sqlite:///...) shared by many machines."""
    optuna = require_optuna()
    study_dir.mkdir(parents=True, exist_ok=True)
    if url == "journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    url = url or f"sqlite:///{study_dir / 'study.db'}"
    warnings.filterwarnings("ignore", message=".*heartbeat_interval.*")  # "experimental" since Optuna 2.9
    for attempt in range(4):
        try:
            # The heartbeat marks a trial FAIL when its worker died mid-trial, so none stays RUNNING forever.
            return optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=30)
        except Exception as exc:  # noqa: BLE001 - driver errors vary; the message names the URL
            # Workers starting together race to create the schema; the loser finds it made on a retry.
            if attempt == 3 or "already exists" not in str(exc) and "duplicate key" not in str(exc):
                raise GradwiseError(f"cannot open study storage {url}: {str(exc).splitlines()[0]}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def suggest(trial: Any, params: list[Param]) -> dict[str, Any]:
    values = {}
    for p in params:
        if p.choices is not None:
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return values


@dataclass
class WorkerSpec:
    """Everything a worker process needs to join a study (plain data: it crosses process boundaries)."""

    base: dict[str, Any]  # the resolved base config
    space: dict[str, Any] | str  # the space as given (a dict, or a YAML path)
    study_name: str
    study_dir: str
    storage: str | None
    sampler: str
    pruner: str
    seed: int
    trials: int | None
    max_tokens: int | None
    timeout: float | None
    quiet: bool
    threads: int | None = None  # torch threads in this worker (several workers share the cores)
    keep: int | None = None  # keep checkpoints of the best k finished trials only


def tune(config: Config | str | Path | None, space: str | Path | dict[str, Any], *, trials: int | None = None,
         timeout: float | None = None, sampler: str = "tpe", pruner: str = "halving", storage: str | None = None,
         study_name: str | None = None, out_dir: str | Path = "studies", overrides: list[str] | None = None,
         seed: int = 0, resume: bool = False, final: bool = False, quiet: bool = True,
         workers: int = 1, max_tokens: int | None = None, keep: int | None = None) -> TuneResult:
    """Search ``space`` around ``config``; returns the study and the best config (see the module doc).

    ``keep`` deletes the checkpoints of every trial outside the best ``keep`` finished ones as the study goes
    (their configs, metrics and summaries stay). ``max_tokens`` caps the training tokens of all trials together
    (no new trial starts past it).
    ``workers`` > 1 starts that many local processes on one study (journal-file storage unless ``storage``
    names a database); workers on other machines join by running the same call with the same ``storage``.
    """

    if torchrun_world_size() > 1:  # every rank would run its own search on the one study
        raise GradwiseError("gradwise tune runs each trial in one process; start it without torchrun (--workers N "
                            "on one machine, the same command with --storage URL on several)")
    base, _, stem = resolve_train_config(config, overrides)
    params = load_space(space, base)
    if sampler == "grid":
        for p in params:
            p.grid_values()  # a clear error now for a float range
    elif trials is None and timeout is None and max_tokens is None:
        raise ConfigError(f"sampler {sampler} needs a budget: pass --trials N, --timeout 30m or --max-tokens N")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1; got {trials}")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1; got {max_tokens}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout must be a positive duration, e.g. 30m; got {timeout}")
    if keep is not None and keep < 1:
        raise ConfigError(f"--keep must be at least 1; got {keep}")
    if workers > 1 and storage is not None and storage.startswith("sqlite"):
        raise ConfigError("SQLite locks up under several workers; use --storage journal (one machine) or a "
                          "database URL such as postgresql://user@host/db")
    name = study_name or stem
    study_dir = check_dir_path(Path(out_dir) / name, "the study directory")
    existing = (study_dir / "study.db").exists() or (study_dir / "journal.log").exists()
    if existing and not resume and storage is None:
        raise GradwiseError(f"study {study_dir} already exists; add --resume to continue it or choose --study NEW")
    if storage is None and (workers > 1 or (study_dir / "journal.log").exists()):
        storage = "journal"
    study = open_study(name, storage, study_dir, sampler, pruner, base, seed)
    changed = changed_keys(study.user_attrs.get("base"), base.to_dict())
    if changed:
        print(f"gradwise: warning: the base config differs from the one this study started with ({', '.join(changed[:5])}"
              f"{', ...' if len(changed) > 5 else ''}); trials are comparable only under one base config "
              "(start a new one with --study NEW)", file=sys.stderr)
    elif "base" not in study.user_attrs:
        study.set_user_attr("base", base.to_dict())
    study.set_user_attr("space", {p.key: p.describe() for p in params})
    if sampler == "grid":
        trials = enqueue_grid(study, params, seed)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    spec = WorkerSpec(base.to_dict(), space if isinstance(space, dict) else str(space), name, str(study_dir),
                      storage, sampler, pruner, seed, trials, max_tokens, timeout, quiet, threads, keep)
    interrupted = False
    procs = []
    try:
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")  # no forked torch or SQLAlchemy state
            procs = [ctx.Process(target=run_worker, args=(spec, i), daemon=False) for i in range(1, workers)]
            for proc in procs:
                proc.start()
        interrupted = run_worker(spec, 0)
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        interrupted = True
        for proc in procs:
            proc.join(timeout=60)
    interrupted = interrupted or any(proc.exitcode not in (0, None) for proc in procs)
    best_cfg, best_value = write_outputs(study, study_dir)
    write_study_plots(study, study_dir)
    final_summary = None
    if final and best_cfg is not None and not interrupted:
        best_cfg.name, best_cfg.out_dir, best_cfg.train.test_eval = "final", str(study_dir), True
        shutil.rmtree(study_dir / "final", ignore_errors=True)
        final_summary = train(best_cfg, quiet=quiet).summary
    return TuneResult(study, study_dir, best_cfg, best_value, final_summary, interrupted)


# Keys that may differ between runs of one study without changing what a trial means.
_WHERE_KEYS = ("name", "out_dir", "data.cache_dir", "data.path")


def changed_keys(saved: dict[str, Any] | None, current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between the study's recorded base config and this one."""
    if saved is None:
        return []
    out = []
    for key in sorted(set(saved) | set(current)):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{dotted}.")
        elif a != b and dotted not in _WHERE_KEYS:
            out.append(dotted)
    return out


def open_study(name: str, storage: str | None, study_dir: Path, sampler: str, pruner: str, base: Config,
               seed: int) -> Any:
    optuna = require_optuna()
    return optuna.create_study(study_name=name, storage=make_storage(storage, study_dir), direction="minimize",
                               sampler=make_sampler(sampler, seed), pruner=make_pruner(pruner, base),
                               load_if_exists=True)


def enqueue_grid(study: Any, params: list[Param], seed: int) -> int:
    """Queue every grid point not yet in the study, in a seeded random order; returns the grid's size.

    Queued trials are handed out one per worker by the storage, so several workers never run a point twice.
    The order is shuffled so that a pruner compares early trials across the whole grid, not one corner.
    """
    points = [dict(zip([p.key for p in params], combo, strict=True))
              for combo in itertools.product(*(p.grid_values() for p in params))]
    random.Random(seed).shuffle(points)
    from optuna.trial import TrialState

    taken = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)
             if not (t.state == TrialState.FAIL and not_its_fault(t.user_attrs.get("fail_reason")))]
    for point in points:
        if point not in taken:
            study.enqueue_trial(point, skip_if_exists=True)  # narrows the race of two coordinators
    return len(points)


def run_worker(spec: WorkerSpec, index: int) -> bool:
    """Run trials of the study until its budget is reached; True when interrupted. Index 0 is the caller,
    whose thread count is given back afterwards (the workers' share of the cores is for this study only)."""
    import torch

    before = torch.get_num_threads()
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        return _run_trials(spec, index)
    finally:
        torch.set_num_threads(before)


def _run_trials(spec: WorkerSpec, index: int) -> bool:
    optuna = require_optuna()
    base = build_config(spec.base)
    params = load_space(spec.space, base)
    study_dir = Path(spec.study_dir)
    # Each worker samples with its own seed, or two random/TPE workers would propose the same points.
    study = open_study(spec.study_name, spec.storage, study_dir, spec.sampler, spec.pruner, base, spec.seed + index)
    trial_root = study_dir / "trials"

    from optuna.trial import TrialState

    grid = spec.sampler == "grid"

    def objective(trial: Any) -> float:
        if grid and "fixed_params" not in study._storage.get_trial(trial._trial_id).system_attrs:
            # Another worker took the last queued point between our check and this trial's start.
            trial.set_user_attr("fail_reason", GRID_DONE)
            raise GradwiseError(GRID_DONE)
        values = suggest(trial, params)
        run_name = f"trial-{trial.number:04d}"
        run_overrides = [*to_overrides(values), f"out_dir={json.dumps(str(trial_root))}",
                         f"name={run_name}", "train.test_eval=false"]
        trial.set_user_attr("run", str(trial_root / run_name))
        trial.set_user_attr("worker", this_worker())
        shutil.rmtree(trial_root / run_name, ignore_errors=True)  # a retried number starts clean

        def report(step: int, value: float) -> bool:  # the evaluation's selection_score
            if not math.isfinite(value):
                return False  # the step's own non-finite guard decides about those
            trial.report(value, step)
            return trial.should_prune()

        try:
            result = train(base, overrides=run_overrides, quiet=spec.quiet, on_eval=report)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            raise
        s = result.summary
        trial.set_user_attr("steps", s["steps"])
        trial.set_user_attr("tokens", s["tokens_seen"])
        if s["stopped_because"] == "interrupted":
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise KeyboardInterrupt
        if s["stopped_because"] == "pruned":
            raise optuna.TrialPruned(f"pruned at step {s['steps']}")
        if s["best_val_loss"] is None or not math.isfinite(s["best_val_loss"]):
            trial.set_user_attr("fail_reason", "no finite validation loss")
            raise GradwiseError("no finite validation loss")
        return float(s["best_score"])  # what chose the checkpoint: the val loss, or 1 - train.best_on's metric

    def finished(study: Any) -> bool:
        if grid:  # a grid is done when its queue is empty: never sample a point of our own
            return not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if spec.max_tokens is not None and tokens_used(study) >= spec.max_tokens:
            return True
        return spec.trials is not None and counted_trials(study) >= spec.trials

    def enough(study: Any, _trial: Any) -> None:
        fail_dead_trials(study)
        if spec.keep is not None:
            prune_checkpoints(study, spec.keep)
        if finished(study):
            study.stop()

    fail_dead_trials(study)
    if finished(study):
        return False
    try:
        study.optimize(objective, n_trials=None, timeout=spec.timeout, catch=(Exception,), callbacks=[enough],
                       gc_after_trial=True)
    except KeyboardInterrupt:
        return True  # the interrupted trial is recorded as failed; the study is intact
    return False


INTERRUPTED = "interrupted (Ctrl-C)"
GRID_DONE = "grid exhausted: another worker took the last point"
WORKER_DIED = "worker died"  # its process ended mid-trial (killed, machine crash): the trial is redone


def not_its_fault(reason: str | None) -> bool:
    """A failure that says nothing about the trial's parameters: it does not count, and is redone."""
    return reason in (INTERRUPTED, GRID_DONE) or bool(reason and reason.startswith(WORKER_DIED))


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the worker."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def worker_alive(worker: dict[str, Any]) -> bool:
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:
        fields = Path(f"/proc/{int(worker['pid'])}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc (not Linux): the pid answered, trust it
    return fields[0] != "Z" and (worker.get("start") is None or fields[19] == worker["start"])


def fail_dead_trials(study: Any) -> int:
    """Mark FAIL the RUNNING trials whose worker process on this machine is gone; returns how many.

    Journal storage has no heartbeat; this is its replacement for workers on one machine (database storage
    also has Optuna's heartbeat, for workers on other machines)."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if not worker or worker.get("host") != host or worker_alive(worker):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"{WORKER_DIED} (pid {worker['pid']})")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
        except Exception:  # noqa: BLE001 - another worker finished it first
            pass
    return failed


def counted_trials(study: Any) -> int:
    """Trials that count toward the budget: finished, pruned, or failed for a reason of their own
    (a failure repeats if retried); a trial stopped by Ctrl-C does not count, so resuming redoes it."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not not_its_fault(t.user_attrs.get("fail_reason"))))


def prune_checkpoints(study: Any, keep: int) -> None:
    """Delete the checkpoints of finished trials outside the best ``keep``, and of pruned and failed ones.
    Runs on other machines are out of reach and stay as they are."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    ranked = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                    key=lambda t: t.value)
    best = {t.number for t in ranked[:keep]}
    for t in trials:
        run = t.user_attrs.get("run")
        if run and t.number not in best:
            shutil.rmtree(Path(run) / "checkpoints", ignore_errors=True)


def tokens_used(study: Any) -> int:
    """Training tokens of every trial so far, pruned and failed ones included: the compute spent."""
    return sum(int(t.user_attrs.get("tokens") or 0) for t in study.get_trials(deepcopy=False))


def best_trial(study: Any) -> Any | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: t.value) if done else None


def write_outputs(study: Any, study_dir: Path) -> tuple[Config | None, float | None]:
    """trials.json (every trial: params, state, value, steps, failure reason) and best.yaml."""
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "steps": t.user_attrs.get("steps"), "tokens": t.user_attrs.get("tokens"), "fail_reason": t.user_attrs.get("fail_reason"),
             "run": t.user_attrs.get("run")} for t in study.get_trials(deepcopy=False)]
    (study_dir / "trials.json").write_text(json.dumps(rows, indent=1))
    best = best_trial(study)
    if best is None:
        return None, None
    cfg = build_config(read_config_file(Path(best.user_attrs["run"]) / "config.yaml"))
    cfg.name, cfg.out_dir, cfg.train.test_eval = None, "runs", True
    save_config(cfg, study_dir / "best.yaml")
    return cfg, best.value
