"""The memory preflight: a run no machine can hold is refused in one line before anything is allocated, and an
allocation that still fails mid-run ends in one line with the last checkpoint whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gradwise.core.device_memory as device_memory
import gradwise.training.memory as memory
from gradwise.cli.commands import main
from gradwise.config.load import load_config
from gradwise.core.errors import OUT_OF_MEMORY_EXIT, GradwiseError
from gradwise.models.cost import architecture_spec
from gradwise.models.gpt import GPT
from gradwise.training.memory import MEMORY_HEADROOM, check_memory, memory_bytes
from tests.conftest import TINY, run_cli

GIB = 1 << 30


def test_a_model_far_beyond_memory_is_one_line_and_leaves_no_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    for command in (["train", "--set", f"out_dir={out}"], ["lr-find", "--out", str(out / "lr")]):
        proc = run_cli(*command, "--set", "model.n_embd=8192", "--set", "model.n_layer=24", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "needs about" in lines[0] and "GiB is free" in lines[0] and "model.n_embd" in lines[0]
        assert not out.exists()  # refused before the run directory (or lr-find's) was made


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


def test_on_a_gpu_the_check_reads_its_free_memory_and_proposes_a_micro_batch(monkeypatch) -> None:
    cfg = load_config("default", ["model.n_layer=2", "model.n_embd=256", "model.block_size=256",
                                  "train.batch_size=64", "train.grad_accum=1"])
    spec = architecture_spec(cfg, 65)
    need = {b: memory_bytes(spec, "adamw", 0.9, b, False, "cuda")["total"] for b in (8, 16, 64)}
    free = int((need[8] + need[16]) / 2 / MEMORY_HEADROOM)  # a micro-batch of 8 fits, 16 does not
    _fake_gpu(monkeypatch, free)
    assert device_memory.available_memory(torch.device("cuda"))[0] == free
    with pytest.raises(GradwiseError, match="on cuda") as exc:
        check_memory(cfg, 65, 0, torch.device("cuda"), None)
    assert "--set train.batch_size=8 --set train.grad_accum=8 keeps the global batch" in str(exc.value)
    assert "free on Fake GPU" in str(exc.value)

    _fake_gpu(monkeypatch, int(need[64] / MEMORY_HEADROOM) + 1)  # room for the whole batch: no complaint
    check_memory(cfg, 65, 0, torch.device("cuda"), None)
    _fake_gpu(monkeypatch, 1 << 20)  # 1 MiB: nothing fits, and the way out is named
    with pytest.raises(GradwiseError, match="not even a micro-batch of 1 fits.*bf16"):
        check_memory(cfg, 65, 0, torch.device("cuda"), None)
    off = load_config("default", ["train.memory_check=false"])
    check_memory(off, 65, 0, torch.device("cuda"), None)  # the escape hatch


def test_a_run_that_runs_out_of_memory_midway_is_one_line_with_its_checkpoint_whole(
        tmp_path: Path, corpus_file: Path, monkeypatch, capsys) -> None:
    calls = {"n": 0}
    forward = GPT.forward

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 30:  # after the first checkpoint (step 10)
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 "
                               "bytes. Error code 12 (Cannot allocate memory)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", failing)
    overrides = [o for o in TINY if not o.startswith("train.eval_every")]
    args = ["train", "--data", str(corpus_file), "--set", f"out_dir={tmp_path}", "--name", "oom",
            "--set", "train.eval_every=10", "--set", "data.dedupe=false"]
    for o in overrides:
        args += ["--set", o]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == OUT_OF_MEMORY_EXIT
    assert err[-1].startswith("gradwise: error: out of memory in RAM") and "the last checkpoint is intact" in err[-1]
    assert not any("Traceback" in line for line in err)
    last = tmp_path / "oom" / "checkpoints" / "last"
    assert load_file(str(last / "model.safetensors"))  # whole: it loads
    monkeypatch.setattr(GPT, "forward", forward)
    assert main(["train", "--resume", str(tmp_path / "oom")]) == 0  # and the run goes on from it


def test_the_preflight_uses_the_plan_memory_estimate(monkeypatch) -> None:
    """One estimate, two readers: what the check compares is what `gradwise plan` shows."""
    cfg = load_config("default", ["model.n_layer=2", "model.n_embd=64"])
    spec = architecture_spec(cfg, 65)
    need = memory_bytes(spec, cfg.optim.name, cfg.optim.momentum, cfg.train.batch_size, False, "cpu")["total"]
    monkeypatch.setattr(memory, "available_memory", lambda device: (int(need / MEMORY_HEADROOM) - 1024, "test"))
    with pytest.raises(GradwiseError, match="needs about"):
        check_memory(cfg, 65, 0, torch.device("cpu"), None)
    monkeypatch.setattr(memory, "available_memory", lambda device: (int(need / MEMORY_HEADROOM) + 1024, "test"))
    check_memory(cfg, 65, 0, torch.device("cpu"), None)
