"""One assembly of the training step (gradwise/training/build.py): training, the planner's calibration,
lr-find and `gradwise step` build the same step, so each times or tests what training runs (the one
exception: a CPU calibration does not compile, which would take longer than its time bound). Before the
redesign the calibration left out compile and asynchronous steps, and lr-find left out the penalties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gradwise.training.build as build
from gradwise.api import lr_find, plan_run, train
from tests.conftest import TINY


@pytest.fixture
def steps_built(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every OptimizationStep built, with what it was built with; torch.compile recorded, not run (slow)."""
    built: list[dict] = []
    real = build.OptimizationStep

    def recording(model, optimizer, objective, **kwargs):  # noqa: ANN001, ANN003, ANN202
        built.append({"compiled": getattr(model, "compiled_by_test", False), **kwargs})
        return real(model, optimizer, objective, **kwargs)

    def fake_compile(module, mode=None):  # noqa: ANN001, ANN202
        module.compiled_by_test = True
        return module

    monkeypatch.setattr(build, "OptimizationStep", recording)
    monkeypatch.setattr(torch, "compile", fake_compile)
    return built


def test_every_tool_steps_what_training_steps(steps_built: list[dict], corpus_file: Path, tmp_path: Path) -> None:
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=4", "train.eval_every=2", "data.check=false", "regularization.l2=0.01",
            "optim.name=adamw", "optim.fused=true", "train.async_steps=true", "train.compile=true",
            "train.grad_clip_mode=value", "train.grad_clip=0.5"]
    train("default", overrides=[*over, "name=run"], quiet=True)
    plan_run("default", over, calibrate=True)
    lr_find("default", overrides=over, steps=12, save=False)
    trained, calibrated, found = steps_built
    for step in (trained, calibrated, found):  # the same step: penalties, clipping, precision
        assert step["penalty"] is not None
        assert (step["grad_clip"], step["clip_mode"], step["autocast_dtype"]) == (0.5, "value", None)
    # and compile, except the calibration on a CPU: compiling there takes minutes, beyond its time bound, so it
    # times the eager step and the plan says so (gradwise/plan/budget.py)
    assert trained["compiled"] and found["compiled"] and not calibrated["compiled"]
    assert trained["asynchronous"] and calibrated["asynchronous"]  # the planner times what training runs
    assert not found["asynchronous"]  # lr-find reads every step's loss: synchronous by design
    assert calibrated["max_nonfinite"] == 1 << 30 and found["max_nonfinite"] == 13  # timed / ranged, never stopped
