"""train.fp8: torchao's fp8 linear layers in the hidden layers, never the output layer; checkpoints stay
ordinary full-precision ones; training tracks the plain run within fp8 noise and resumes exactly; devices
and models that cannot run it are refused in one line. On a CPU the fp8 matmul is emulated, so all of this
runs here; the speed is measured on a GPU by bench/gpu_throughput.py."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

from gradwise.core.errors import ConfigError, GradwiseError
from gradwise.core.rundir import read_metrics
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.training.fp8 import check_fp8_device, convert_to_fp8, fp8_layers
from gradwise.training.run import train
from tests.conftest import TINY, run_cli

pytest.importorskip("torchao.float8")


def small_gpt(n_embd: int = 32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=n_embd))


def test_hidden_linear_layers_become_fp8_and_the_output_layer_stays():
    plain, model = small_gpt(), small_gpt()
    assert convert_to_fp8(model, torch.device("cpu")) == 8  # qkv, proj, fc, proj in each of 2 blocks
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.wte.weight  # tie kept
    assert all(type(m) is not nn.Linear for block in model.blocks for m in block.modules())
    assert model.state_dict().keys() == plain.state_dict().keys()  # a checkpoint loads into a plain model
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value) and model.state_dict()[key].dtype == torch.float32
    idx = torch.randint(0, 70, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = plain(idx), model(idx)
    assert not torch.equal(got, want)  # the fp8 matmuls ran ...
    assert (got - want).abs().max() < 0.1 * want.abs().max()  # ... within fp8's precision


def test_training_in_fp8_tracks_the_plain_run_and_checkpoints_are_ordinary(tmp_path, corpus_file):
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=30", "train.eval_every=10", "data.check=false"]
    runs = {f: train("default", overrides=[*over, f"name=fp8-{f}", f"train.fp8={f}"], quiet=True) for f in
            ("false", "true")}
    evals = {f: [r["val_loss"] for r in read_metrics(res.run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
             for f, res in runs.items()}
    assert evals["true"][-1] < evals["true"][0] - 0.5  # it learns
    assert evals["true"] == pytest.approx(evals["false"], rel=0.02)  # as the plain run does, within fp8 noise
    assert evals["true"] != evals["false"]  # and the fp8 matmuls really ran
    ckpt = runs["true"].run_dir / "checkpoints" / "best" / "model.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118 (not a dict)
    proc = run_cli("eval", str(runs["true"].run_dir))  # evaluation needs no fp8: an ordinary checkpoint
    assert proc.returncode == 0, proc.stderr
    plain_eval = float(re.search(r"loss (\d+\.\d+) nats/token", proc.stdout).group(1))
    assert plain_eval == pytest.approx(runs["true"].summary["test_loss"], rel=0.01)  # fp8 in the run, not here


def test_an_fp8_run_resumes_exactly(tmp_path, corpus_file):
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.eval_every=5", "train.log_every=5", "data.check=false", "train.fp8=true", "train.test_eval=false",
            "schedule.name=constant"]  # the same lr whatever max_steps says
    whole = train("default", overrides=[*over, "name=whole", "train.max_steps=10"], quiet=True).run_dir
    half = train("default", overrides=[*over, "name=half", "train.max_steps=5"], quiet=True).run_dir
    train(resume=half, overrides=["train.max_steps=10"], quiet=True)
    losses = [[(r["step"], r["train_loss"]) for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "train"]
              for run in (whole, half)]
    assert losses[1] == losses[0]


def test_devices_without_fp8_are_refused_in_one_line():
    check_fp8_device(torch.device("cpu"))  # emulated: allowed
    check_fp8_device(torch.device("cuda"), capability=(9, 0))  # H100, H200
    with pytest.raises(ConfigError, match=r"compute capability 8.9\+.*this one is 8.0"):
        check_fp8_device(torch.device("cuda"), capability=(8, 0))  # A100: no fp8 tensor cores
    with pytest.raises(ConfigError, match="not on mps"):
        check_fp8_device(torch.device("mps"))


def test_models_fp8_cannot_serve_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no nn.Linear layer whose sizes are multiples of 16"):
        convert_to_fp8(small_gpt(n_embd=24), torch.device("cpu"))
    with pytest.raises(GradwiseError, match="train.fp8 trains a language model"):
        train("classify-lstm", overrides=["train.fp8=true", f"out_dir={tmp_path}"], quiet=True)
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # torchao not installed
    with pytest.raises(ConfigError, match=r"train.fp8 needs torchao: pip install 'gradwise\[fp8\]'"):
        convert_to_fp8(small_gpt(), torch.device("cpu"))


def test_cli_refuses_an_fp8_model_without_eligible_layers_in_one_line(tmp_path, corpus_file):
    proc = run_cli("train", "--data", str(corpus_file), "--set", "train.fp8=true", "--set", "model.n_embd=24",
                   "--set", "model.n_head=2", "--set", f"out_dir={tmp_path}", "--set", "data.check=false")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "train.fp8 found no nn.Linear layer" in proc.stderr
    assert not any(m for m in fp8_layers(small_gpt()))  # a model never converted has none


def test_the_modern_gpt_options_run_in_fp8():
    """Rotary positions, QK-norm, ReLU² and an untied soft-capped head: the hidden linears still become fp8
    (the untied output layer stays plain) and the model's outputs stay within fp8's precision of the plain one."""
    opts = dict(pos="rope", qk_norm=True, activation="relu2", logit_softcap=15.0, tie_embeddings=False)
    torch.manual_seed(0)
    plain = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=32, **opts))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=2, n_embd=32, **opts))
    assert convert_to_fp8(model, torch.device("cpu")) == 8 and type(model.lm_head) is nn.Linear
    idx = torch.randint(0, 70, (4, 16), generator=torch.Generator().manual_seed(1))
    got = model(idx)
    got.float().logsumexp(-1).mean().backward()  # a backward through the fp8 layers and the rotation
    with torch.no_grad():
        want = plain(idx)
    assert not torch.equal(got.detach(), want) and (got.detach() - want).abs().max() < 0.1 * want.abs().max()
