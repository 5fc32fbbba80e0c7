"""Checkpoints: exact round trip without pickle, atomic replacement, and clear refusal of damaged files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise.core import checkpoint as ckpt
from gradwise.core.checkpoint import load_checkpoint, load_weights, read_state, save_checkpoint
from gradwise.core.errors import CheckpointError
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.optim.schedules import build_scheduler


def trained(seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    from gradwise.config.schema import ScheduleConfig

    sched = build_scheduler(opt, ScheduleConfig(warmup_steps=2, min_lr=1e-3), 1e-2, 50)
    for _ in range(3):
        model(torch.randint(0, 30, (2, 8))).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    model, opt, sched = trained()
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(9)
    save_checkpoint(tmp_path / "last", model, {"step": 3, "note": "x"}, optimizer=opt, scheduler=sched)
    expected_draws = (torch.rand(3), np.random.rand(), random.random())

    model2, opt2, sched2 = trained(seed=1)  # different weights and state
    state = load_checkpoint(tmp_path / "last", model2, opt2, sched2)
    assert state["step"] == 3 and state["note"] == "x"
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for pa, pb in zip(opt.state.values(), opt2.state.values(), strict=True):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert np.random.rand() == expected_draws[1] and random.random() == expected_draws[2]
    assert model2.lm_head.weight is model2.wte.weight  # tying survives loading


def test_no_pickle_in_a_checkpoint(tmp_path: Path) -> None:
    model, opt, sched = trained()
    save_checkpoint(tmp_path / "c", model, {"step": 1}, optimizer=opt, scheduler=sched)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["model.safetensors", "state.json",
                                                                   "trainer.safetensors"]


def test_truncated_weights_are_refused_with_the_file_named(tmp_path: Path) -> None:
    model, opt, _ = trained()
    save_checkpoint(tmp_path / "last", model, {"step": 1}, optimizer=opt)
    f = tmp_path / "last" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"damaged: model.safetensors has \d+ bytes, expected \d+"):
        load_weights(tmp_path / "last", trained()[0])


def test_garbage_weights_with_the_right_size_are_refused(tmp_path: Path) -> None:
    model, _, _ = trained()
    save_checkpoint(tmp_path / "best", model, {"step": 1})
    f = tmp_path / "best" / "model.safetensors"
    f.write_bytes(b"\xff" * f.stat().st_size)
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_weights(tmp_path / "best", trained()[0])


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    model, opt, _ = trained()
    save_checkpoint(tmp_path / "last", model, {"step": 1}, optimizer=opt)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last", model, {"step": 2}, optimizer=opt)
    assert read_state(tmp_path / "last")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temporary left behind


def test_a_kill_between_the_two_renames_falls_back_to_the_previous(tmp_path: Path) -> None:
    model, opt, _ = trained()
    save_checkpoint(tmp_path / "last", model, {"step": 5}, optimizer=opt)
    (tmp_path / "last").rename(tmp_path / ".last.old")  # what a kill at that instant leaves
    assert read_state(tmp_path / "last")["step"] == 5
    load_checkpoint(tmp_path / "last", trained()[0], trained()[1])


def test_missing_checkpoint_and_best_without_optimizer(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_state(tmp_path / "nothing")
    model, opt, _ = trained()
    save_checkpoint(tmp_path / "best", model, {"step": 1})
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(tmp_path / "best", model, opt)
