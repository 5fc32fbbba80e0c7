"""The memory preflight: a run no machine can hold is refused in one line before anything is allocated (train,
lr-find, and beside a loaded model, step and generate), and an allocation that still fails mid-run ends in one
line with the last checkpoint whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gradwise.core.device_memory as device_memory
import gradwise.training.memory as memory
from gradwise.cli.commands import main
from gradwise.config.load import load_config
from gradwise.core.errors import OUT_OF_MEMORY_EXIT, GradwiseError
from gradwise.inference import generate_text, load_run
from gradwise.models.cost import architecture_spec
from gradwise.models.gpt import GPT
from gradwise.tools.step_runs import text_batch
from gradwise.training.memory import MEMORY_HEADROOM, check_memory, memory_bytes
from gradwise.training.run import train
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


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preflight")
    corpus = root / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 400, encoding="utf-8")
    result = train("default", overrides=[f"data.path={corpus}", f"out_dir={root}", "name=lm", "data.check=false",
                                         "data.dedupe=false", *TINY, "train.max_steps=4", "train.eval_every=4",
                                         "train.eval_batches=1", "train.test_eval=false"], quiet=True)
    return result.run_dir


def test_generation_beyond_memory_is_refused_before_it_allocates(lm_run: Path, capsys) -> None:
    # a hundred million samples: the refusal comes before their ids are even made, with a count that fits
    assert main(["generate", str(lm_run), "--num-samples", "100000000", "--max-new-tokens", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "generating 100,000,000 sample(s)" in err and "GiB is free" in err, err
    fit = int(err.split("ask for fewer samples: ")[1].split(" fit")[0].replace(",", ""))
    assert 1000 < fit < 100_000_000
    assert len(generate_text(lm_run, "The", max_new_tokens=5, num_samples=3)) == 3  # an ordinary generation passes the same check


def test_a_step_beyond_memory_names_how_many_windows_fit_and_that_many_do(lm_run: Path, tmp_path: Path,
                                                                          monkeypatch, capsys) -> None:
    text = tmp_path / "long.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    assert main(["step", "--model", str(lm_run), "--text-file", str(text), "--json"]) == 0
    windows = json.loads(capsys.readouterr().out.splitlines()[0])["setup"]["windows"]
    assert windows >= 4

    # free memory for about half the windows, beside the gradients and Adam's two moments
    loaded = load_run(lm_run)
    x, _, _ = text_batch(loaded.tokenizer.encode(text.read_text()).tolist(), 32, torch.device("cpu"))
    fixed = 3 * sum(p.numel() * 4 for p in loaded.model.parameters())
    per_window = memory.saved_bytes(loaded.model.train(), 1, x.shape[1]) + x.shape[1] * loaded.tokenizer.vocab_size * 4
    free = int((fixed + (windows // 2 + 0.5) * per_window) / MEMORY_HEADROOM)
    monkeypatch.setattr(device_memory, "available_memory", lambda device: (free, "test"))
    assert main(["step", "--model", str(lm_run), "--text-file", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{windows} context window(s)" in err, err
    assert f"give a shorter text: {windows // 2} context window(s) of 32 tokens fit, this one has {windows}" in err
    words = text.read_text().split()
    shorter = tmp_path / "short.txt"
    for n in range(len(words), 0, -1):  # the longest text of that many windows
        shorter.write_text(" ".join(words[:n]), encoding="utf-8")
        if text_batch(loaded.tokenizer.encode(shorter.read_text()).tolist(), 32, torch.device("cpu"))[0].shape[0] \
                <= windows // 2:
            break
    assert main(["step", "--model", str(lm_run), "--text-file", str(shorter)]) == 0  # the advice, followed, runs
    monkeypatch.setattr(device_memory, "available_memory", lambda device: (1 << 10, "test"))
    assert main(["step", "--model", str(lm_run), "--text", "The quick brown fox"]) == 2
    err = capsys.readouterr().err
    assert "not even one context window fits" in err and "--optimizer adafactor" in err
