"""Several processes sharing one autofit through its study: the second process to run the same command joins
as a worker, takes queued candidates, and the driver's record holds every slot once, whoever trained it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tests.test_autofit import SMALL  # noqa: E402


def _study(path: Path):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.load_study(study_name="s", storage=storage)


def test_a_second_process_joins_the_rounds_and_no_slot_is_trained_twice(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("It is a truth universally acknowledged, that a single man in possession of a good "
                       "fortune, must be in want of a wife. ") * 400, encoding="utf-8")
    # A budget whose rounds outlast a second process's start (imports, study) on a loaded machine: the whole
    # suite runs two tests at once, and a 25 s wall-clock autofit beside this one slowed the worker's start
    # until the driver had trained every slot of 60,000 tokens' rounds alone.
    args = [sys.executable, "-m", "gradwise", "autofit", "--data", str(corpus), "--budget", "150000 tokens",
            "--out-dir", str(tmp_path), "--name", "s", "--storage", "journal",
            *[x for s in SMALL for x in ("--set", s)],
            "--set", "optim.lr=3e-4"]  # a start with room to improve: rounds past the first, for both to share
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    journal = tmp_path / "s" / "journal.log"
    deadline = time.time() + 120
    while not journal.exists() and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out_d, err_d = driver.communicate(timeout=600)
    out_w, err_w = worker.communicate(timeout=120)
    assert driver.returncode == 0, err_d[-2000:]
    assert worker.returncode == 0, err_w[-2000:]
    assert "worker   joined the autofit" in out_w and "worker   done: trained" in out_w

    record = json.loads((tmp_path / "s" / "autofit.json").read_text())
    slots = [c["slot"] for r in record["rounds"] for c in r["candidates"]]
    assert len(slots) == len(set(slots))  # each slot in the record once
    by = {c["slot"]: c["by"] for r in record["rounds"] for c in r["candidates"] if c["state"] == "complete"}
    pids = {b.rsplit(":", 1)[1] for b in by.values()}
    assert str(worker.pid) in pids and str(driver.pid) in pids, by  # both trained some of the rounds
    assert record["test"] is not None and record["best"] in by  # the driver scored the winner once
    trained = [t.user_attrs["slot"] for t in _study(journal).get_trials()
               if (t.user_attrs.get("candidate") or {}).get("state") == "complete"]
    assert sorted(trained) == sorted(by)  # no candidate trained twice, none lost
