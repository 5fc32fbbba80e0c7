"""Resume: a run killed for real (SIGKILL) or stopped by Ctrl-C and resumed ends exactly where an
uninterrupted run ends: same weights bit for bit, same logged losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gradwise.core.checkpoint import read_state
from gradwise.core.errors import CheckpointError
from gradwise.core.rundir import read_metrics
from tests.conftest import run_cli

# Dropout and gradient accumulation on: resume must restore the RNG and the data position too.
ARGS = ["model.n_layer=2", "model.n_head=2", "model.n_embd=48", "model.block_size=48", "model.dropout=0.1",
        "train.batch_size=8", "train.grad_accum=2", "train.max_steps=240", "train.eval_every=40",
        "train.checkpoint_every=20", "train.log_every=10", "train.eval_batches=4", "data.split_chunks=1",
        "schedule.warmup_steps=10"]


def cli_sets(out_dir: Path, name: str) -> list[str]:
    return sum((["--set", a] for a in [*ARGS, f"out_dir={out_dir}", f"name={name}"]), [])


def last_step(run: Path) -> int:
    """The step of the checkpoint a resume would read (a kill between a save's two renames leaves the
    previous one as ``.last.old``, which resume reads)."""
    try:
        return read_state(run / "checkpoints" / "last")["step"]
    except (OSError, ValueError, CheckpointError):
        return -1


def start_and_stop(out_dir: Path, name: str, sig: int, after_step: int,
                   sets: list[str] | None = None) -> subprocess.CompletedProcess:
    """Start a real training process (``sets``: its --set arguments, default ARGS'); send it ``sig`` once its
    last checkpoint has reached ``after_step``."""
    cmd = [sys.executable, "-m", "gradwise", "train", *(sets if sets is not None else cli_sets(out_dir, name))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.time() + 240
    while last_step(out_dir / name) < after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def losses(run: Path) -> list[tuple]:
    return [(r["kind"], r["step"], r.get("train_loss"), r.get("val_loss"), r.get("test_loss"))
            for r in read_metrics(run / "metrics.jsonl")]


def assert_same_run(a: Path, b: Path) -> None:
    wa = load_file(str(a / "checkpoints" / "last" / "model.safetensors"))
    wb = load_file(str(b / "checkpoints" / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert losses(a) == losses(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    for key in ("best_val_loss", "best_step", "test_loss", "steps", "tokens_seen", "stopped_because"):
        assert sa[key] == sb[key], key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    proc = run_cli("train", *cli_sets(out, "full"))
    assert proc.returncode == 0, proc.stderr
    return out / "full"


def test_resume_after_sigkill_is_exact(uninterrupted: Path, tmp_path: Path) -> None:
    killed = start_and_stop(tmp_path, "killed", signal.SIGKILL, after_step=60)
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run = tmp_path / "killed"
    assert not (run / "summary.json").exists()
    assert 60 <= last_step(run) < 240

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(uninterrupted, run)


def test_ctrl_c_saves_and_resume_is_exact(uninterrupted: Path, tmp_path: Path) -> None:
    stopped = start_and_stop(tmp_path, "ctrlc", signal.SIGINT, after_step=40)
    assert stopped.returncode == 130, stopped.stderr
    run = tmp_path / "ctrlc"
    assert f"gradwise train --resume {run}" in stopped.stdout
    assert json.loads((run / "summary.json").read_text())["stopped_because"] == "interrupted"
    assert last_step(run) >= 40  # the step in flight finished and was saved

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stdout
    assert_same_run(uninterrupted, run)


def test_resume_refuses_damaged_finished_or_mismatched_runs(uninterrupted: Path, tmp_path: Path) -> None:
    finished = run_cli("train", "--resume", str(uninterrupted))
    assert finished.returncode == 2 and "already reached train.max_steps" in finished.stderr

    other = run_cli("train", "--resume", str(uninterrupted), "--set", "model.n_layer=3")
    assert other.returncode == 2 and "model differs from the run being resumed" in other.stderr

    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(uninterrupted, broken)
    weights = broken / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = run_cli("train", "--resume", str(broken), "--set", "train.max_steps=400")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is damaged: model.safetensors has 1000 bytes" in proc.stderr
