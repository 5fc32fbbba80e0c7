"""gradwise tune: grid visits every point once, pruning stops trials, failures don't stop the study, resume,
clear errors for malformed spaces, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("optuna")

from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError, GradwiseError  # noqa: E402
from gradwise.search import load_space, tune  # noqa: E402
from gradwise.search.report import read_trials  # noqa: E402
from tests.conftest import TINY, run_cli  # noqa: E402

QUICK = [*TINY, "train.max_steps=12", "train.eval_every=4", "train.log_every=4", "schedule.warmup_steps=2"]


def base(corpus: Path, tmp: Path) -> list[str]:
    return [*QUICK, f"data.path={corpus}", f"out_dir={tmp}/runs"]


def test_grid_runs_every_point_exactly_once(corpus_file: Path, tmp_path: Path) -> None:
    space = {"optim.lr": [1e-3, 4e-3], "model.n_layer": [1, 2]}
    res = tune("default", space, sampler="grid", pruner="none", out_dir=tmp_path / "studies", keep=1,
               overrides=base(corpus_file, tmp_path))
    rows = read_trials(res.study_dir)
    points = sorted((r["params"]["optim.lr"], r["params"]["model.n_layer"]) for r in rows)
    assert points == [(1e-3, 1), (1e-3, 2), (4e-3, 1), (4e-3, 2)]
    assert all(r["state"] == "COMPLETE" and r["steps"] == 12 for r in rows)
    best = min(rows, key=lambda r: r["value"])
    kept = [r["number"] for r in rows if (Path(r["run"]) / "checkpoints").exists()]
    assert kept == [best["number"]]  # keep=1: only the best trial's checkpoints remain
    assert all((Path(r["run"]) / "summary.json").is_file() for r in rows)
    assert res.best_value == pytest.approx(best["value"])
    saved = load_config(res.study_dir / "best.yaml")  # ready to run: the best trial's full config
    assert (saved.optim.lr, saved.model.n_layer) == (best["params"]["optim.lr"], best["params"]["model.n_layer"])
    assert all((res.study_dir / f).stat().st_size > 5000 for f in ("history.png", "importances.png", "parallel.png"))
    assert saved.train.test_eval and not (Path(best["run"]) / "summary.json").read_text().count('"test_loss": 0')
    assert json.loads((Path(best["run"]) / "summary.json").read_text())["test_loss"] is None  # trials never test


def test_pruner_stops_hopeless_trials(corpus_file: Path, tmp_path: Path) -> None:
    space = {"optim.lr": [4e-3, 1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6]}  # one good lr, six hopeless ones
    res = tune("default", space, sampler="grid", pruner="median", out_dir=tmp_path / "studies", seed=1,
               overrides=[*base(corpus_file, tmp_path), "train.max_steps=24", "optim.name=adamw",
                                                                            "schedule.min_lr=0"])
    rows = read_trials(res.study_dir)
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(8 <= r["steps"] < 24 for r in pruned)  # never at the first evaluation (step 4)
    assert all(r["params"]["optim.lr"] < 1e-5 for r in pruned)  # only the hopeless ones
    assert len(rows) == 7


def test_a_failing_trial_does_not_stop_the_study(corpus_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import gradwise.search.study
    import gradwise.training.run

    real_train = gradwise.training.run.train

    def flaky(cfg, **kw):  # noqa: ANN001, ANN003, ANN202
        if gradwise.training.run_config.resolve_train_config(cfg, kw.get("overrides"))[0].optim.lr == 2e-3:
            raise torch_oom()
        return real_train(cfg, **kw)

    monkeypatch.setattr(gradwise.search.study, "train", flaky)
    res = tune("default", {"optim.lr": [1e-3, 2e-3, 3e-3]}, sampler="grid", pruner="none",
               out_dir=tmp_path / "studies", overrides=base(corpus_file, tmp_path))
    rows = {r["params"]["optim.lr"]: r for r in read_trials(res.study_dir)}
    assert rows[2e-3]["state"] == "FAIL" and "out of memory" in rows[2e-3]["fail_reason"]
    assert rows[1e-3]["state"] == rows[3e-3]["state"] == "COMPLETE"


def torch_oom() -> Exception:
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_resume_continues_the_same_study(corpus_file: Path, tmp_path: Path) -> None:
    space = {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    kw = dict(sampler="random", pruner="none", out_dir=tmp_path / "studies", overrides=base(corpus_file, tmp_path))
    first = tune("default", space, trials=2, **kw)
    with pytest.raises(GradwiseError, match="already exists; add --resume"):
        tune("default", space, trials=3, **kw)
    second = tune("default", space, trials=3, resume=True, **kw)
    assert second.study_dir == first.study_dir
    numbers = [r["number"] for r in read_trials(second.study_dir)]
    assert numbers == [0, 1, 2]  # two kept, one added
    again = tune("default", space, trials=3, resume=True, **kw)  # the budget is reached: nothing runs
    assert len(read_trials(again.study_dir)) == 3


@pytest.mark.parametrize(("space", "message"), [
    ({"optim.lrr": [1e-3]}, "space key 'optim.lrr'.*did you mean 'optim.lr'"),
    ({"optim.lr": {"type": "float", "low": 1e-2, "high": 1e-3}}, "low must be less than high"),
    ({"optim.lr": {"type": "float", "low": 0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
    ({"optim.lr": {"type": "uniform", "low": 0, "high": 1}}, "type must be float, int or categorical"),
    ({"optim.lr": {"type": "float", "high": 1}}, "float needs 'low'"),
    ({"model.n_layer": [0, 2]}, "model.n_layer must be at least 1"),
    ({"optim.lr": "fast"}, "give a list of values or a mapping"),
])
def test_malformed_space_gives_a_clear_error(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_space(space, load_config("default"))


def test_grid_needs_values_not_ranges(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grid search needs explicit values"):
        tune("default", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}, sampler="grid",
             out_dir=tmp_path)


def test_cli_tune_and_report(corpus_file: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sets = [a for o in base(corpus_file, tmp_path) for a in ("--set", o)]
    proc = run_cli("tune", "--space", str(space), "--trials", "2", "--sampler", "random", "--study", "s",
                   "--out-dir", str(tmp_path / "studies"), "--final", *sets, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 trials: 2 finished" in proc.stdout and "best.yaml" in proc.stdout and "final" in proc.stdout
    final = json.loads((tmp_path / "studies" / "s" / "final" / "summary.json").read_text())
    assert final["test_loss"] is not None  # the one test evaluation, of the best config
    report = run_cli("tune-report", str(tmp_path / "studies" / "s"))
    assert report.returncode == 0 and "optim.lr" in report.stdout and "history.png" in report.stdout
    bad = run_cli("tune", "--space", str(tmp_path / "nope.yaml"), "--trials", "1", cwd=tmp_path)
    assert bad.returncode == 2 and "search space file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("sampler", ["grid", "random"])
def test_two_workers_share_one_study(corpus_file: Path, tmp_path: Path, sampler: str) -> None:
    """Two local processes on one journal-file study: every trial run once, none lost, the budget kept."""
    space = {"optim.lr": [1e-3, 2e-3, 3e-3, 4e-3], "model.n_layer": [1, 2]}
    threads = torch.get_num_threads()
    res = tune("default", space, sampler=sampler, trials=None if sampler == "grid" else 6, pruner="none",
               workers=2, out_dir=tmp_path / "studies", overrides=base(corpus_file, tmp_path))
    assert torch.get_num_threads() == threads  # the caller's worker gave its thread count back
    rows = [r for r in read_trials(res.study_dir) if r["state"] == "COMPLETE"]
    points = [(r["params"]["optim.lr"], r["params"]["model.n_layer"]) for r in rows]
    assert (res.study_dir / "journal.log").is_file()
    runs = {Path(r["run"]).name for r in rows}
    assert len(runs) == len(rows) and all((res.study_dir / "trials" / n / "summary.json").is_file() for n in runs)
    if sampler == "grid":
        assert sorted(points) == sorted((lr, n) for lr in (1e-3, 2e-3, 3e-3, 4e-3) for n in (1, 2))
    else:
        assert len(rows) in (6, 7)  # the budget; a worker already mid-trial when it is reached may finish one more


def test_token_budget_stops_the_search(corpus_file: Path, tmp_path: Path) -> None:
    per_trial = 12 * 8 * 32  # steps x batch x context of QUICK
    res = tune("default", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}, sampler="random",
               pruner="none", max_tokens=2 * per_trial + 1, out_dir=tmp_path / "studies",
               overrides=base(corpus_file, tmp_path))
    rows = read_trials(res.study_dir)
    assert len(rows) == 3 and all(r["tokens"] == per_trial for r in rows)  # no trial starts past the budget


@pytest.fixture(scope="module")
def postgres_url() -> str:
    from tests.pg_server import postgres_server

    with postgres_server() as (url, reason):
        if url is None:
            pytest.skip(f"no PostgreSQL server could be started: {reason}")
        yield url


def test_workers_on_two_machines_share_a_postgresql_study(corpus_file: Path, tmp_path: Path,
                                                          postgres_url: str) -> None:
    """Two independent `gradwise tune` processes (as on two machines: own directories) on one PostgreSQL study."""
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sets = [a for o in base(corpus_file, tmp_path) for a in ("--set", o)]
    procs = [subprocess.Popen([sys.executable, "-m", "gradwise", "tune", "--space", str(space), "--trials", "8",
                               "--sampler", "random", "--pruner", "none", "--seed", str(i), "--storage", postgres_url,
                               "--study", "shared",
                               "--out-dir", str(tmp_path / f"machine{i}"), *sets], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    import optuna

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 8 <= len(done) <= 9  # the budget; the other machine may be mid-trial when it is reached
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    runs = [Path(t.user_attrs["run"]) for t in done]
    assert all((r / "summary.json").is_file() for r in runs)  # each trial's run is on the machine that ran it
    # both machines did work (8 trials: the one that loses the race to create the schema retries for up to
    # ~4.5 s, in which the other could finish 4 short trials)
    assert {r.parents[2].name for r in runs} == {"machine0", "machine1"}


def test_ctrl_c_stops_cleanly_and_resume_finishes_the_study(corpus_file: Path, tmp_path: Path) -> None:
    import signal
    import time

    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sets = [a for o in [*base(corpus_file, tmp_path), "train.max_steps=400"] for a in ("--set", o)]
    args = [sys.executable, "-m", "gradwise", "tune", "--space", str(space), "--trials", "2", "--sampler", "random",
            "--pruner", "none", "--study", "s", "--out-dir", str(tmp_path / "studies"), *sets]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "studies" / "s" / "trials" / "trial-0000" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-500:]
    assert "--resume" in err and "Traceback" not in err
    rows = read_trials(tmp_path / "studies" / "s")
    assert [r["state"] for r in rows] == ["FAIL"] and rows[0]["fail_reason"] == "interrupted (Ctrl-C)"

    done = subprocess.run([*args[:-len(sets)], "--resume", *[s.replace("400", "12") for s in sets]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    rows = read_trials(tmp_path / "studies" / "s")
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]  # the interrupted one is redone


def test_a_killed_worker_leaves_no_trial_running_forever(corpus_file: Path, tmp_path: Path) -> None:
    """Journal storage has no heartbeat: the next worker on the machine marks the dead worker's trial failed
    ("worker died") and redoes it, so the study still reaches its budget of finished trials."""
    import signal
    import time

    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sets = [a for o in [*base(corpus_file, tmp_path), "train.max_steps=400"] for a in ("--set", o)]
    args = [sys.executable, "-m", "gradwise", "tune", "--space", str(space), "--trials", "2", "--sampler", "random",
            "--pruner", "none", "--storage", "journal", "--study", "k", "--out-dir", str(tmp_path / "studies")]
    proc = subprocess.Popen([*args, *sets], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "studies" / "k" / "trials" / "trial-0000" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "studies" / "k" / "journal.log")))
    assert [t.state.name for t in optuna.load_study(study_name="k", storage=journal).trials] == ["RUNNING"]

    done = subprocess.run([*args, "--resume", *[s.replace("400", "12") for s in sets]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    rows = read_trials(tmp_path / "studies" / "k")
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert rows[0]["fail_reason"] == f"worker died (pid {proc.pid})"


def test_resume_with_a_changed_base_config_warns(corpus_file: Path, tmp_path: Path, capsys) -> None:
    space = {"optim.lr": [1e-3, 2e-3]}
    tune(None, space, sampler="grid", pruner="none", study_name="b", out_dir=tmp_path / "studies",
         overrides=base(corpus_file, tmp_path))
    assert "differs" not in capsys.readouterr().err
    tune(None, space, sampler="grid", pruner="none", study_name="b", out_dir=tmp_path / "studies", resume=True,
         overrides=[*base(corpus_file, tmp_path), "model.dropout=0.1"])
    err = capsys.readouterr().err
    assert "base config differs" in err and "model.dropout" in err and "data.path" not in err


def test_a_classifier_tuned_on_macro_f1_minimises_one_minus_it(tmp_path: Path) -> None:
    from tests.test_classify import make_dataset
    from tests.test_ngram_classifier import SMALL

    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    res = tune("classify-ngram", {"optim.lr": [3e-3, 3e-2]}, sampler="grid", pruner="none",
               out_dir=tmp_path / "studies", overrides=[*SMALL, f"data.path={data}", "train.best_on=macro_f1"])
    rows = read_trials(res.study_dir)
    assert len(rows) == 2
    for r in rows:
        s = json.loads((Path(r["run"]) / "summary.json").read_text())
        assert r["value"] == pytest.approx(1.0 - s["best_val_metrics"]["macro_f1"])
