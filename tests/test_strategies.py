"""Strategies: every optimizer minimises a convex problem and trains the GPT; Muon's pairing; new schedules;
per-group learning rates; clipping by value; accumulation to a target tokens-per-step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gradwise import train
from gradwise.config.load import load_config
from gradwise.config.schema import OptimConfig, ScheduleConfig
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import read_metrics
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.objectives.losses import CausalLMObjective
from gradwise.optim import build_optimizer, build_scheduler, lr_at
from gradwise.optim.combined import CombinedOptimizer
from gradwise.optim.lion import Lion
from gradwise.training.step import OptimizationStep
from tests.conftest import TINY

CPU = torch.device("cpu")
# A learning rate that suits each optimizer on the problems below (Lion's sign update wants a small one).
CONVEX_LR = {"adamw": 0.05, "adam": 0.05, "sgd": 0.1, "muon": 0.05, "lion": 0.01, "adafactor": 0.05,
             "radam": 0.05, "nadam": 0.05}
GPT_LR = {"adamw": 3e-3, "adam": 3e-3, "sgd": 0.3, "muon": 3e-3, "lion": 2e-3, "adafactor": 0.1,
          "radam": 1e-2, "nadam": 3e-3}


class Regression(nn.Module):
    """Least squares: convex in (weight, bias). Its weight is a hidden matrix, its bias a vector."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 8)


def convex_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g)
    w, b = torch.randn(16, 8, generator=g), torch.randn(8, generator=g)
    return x, x @ w + b


@pytest.mark.parametrize("name", sorted(CONVEX_LR))
def test_each_optimizer_minimises_a_convex_problem(name: str) -> None:
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, OptimConfig(name=name, lr=CONVEX_LR[name], weight_decay=0.0), CPU)
    x, y = convex_problem()

    def loss() -> torch.Tensor:
        return ((model.proj(x) - y) ** 2).mean()

    start = loss().item()
    for _ in range(400):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.02 * start, f"{name}: {start:.3f} -> {loss().item():.4f}"


@pytest.mark.parametrize("name", sorted(GPT_LR))
def test_each_optimizer_trains_the_gpt(name: str, tmp_path: Path) -> None:
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", f"name={name}", f"optim.name={name}",
                                    f"optim.lr={GPT_LR[name]}", "schedule.min_lr=0", "train.max_steps=80",
                                    "train.eval_every=40"], quiet=True)
    evals = [r["val_loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1] < 0.85 * evals[0], f"{name}: {evals}"  # well below the untrained ln(V)


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True))


def test_muon_takes_hidden_matrices_and_adamw_the_rest() -> None:
    model = gpt()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-3), CPU)
    assert isinstance(opt, CombinedOptimizer)
    muon, adamw = opt.optimizers
    assert type(muon).__name__ == "Muon" and isinstance(adamw, torch.optim.AdamW)
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    assert all(p.dim() == 2 for g in muon.param_groups for p in g["params"])
    assert id(model.wte.weight) not in muon_params and id(model.wpe.weight) not in muon_params
    assert id(model.blocks[0].mlp.fc.weight) in muon_params
    everything = {id(p) for p in model.parameters()}
    adamw_params = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert muon_params | adamw_params == everything and not muon_params & adamw_params


def test_muon_ns_steps_reaches_the_optimizer_and_changes_the_update() -> None:
    """Fewer Newton-Schulz iterations are a speed/quality trade a user sets in the config, so it must take effect."""
    updates = {}
    for steps in (1, 5):
        torch.manual_seed(0)
        model = gpt()
        opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-2, muon_ns_steps=steps), CPU)
        assert {g["ns_steps"] for g in opt.optimizers[0].param_groups} == {steps}
        before = model.blocks[0].mlp.fc.weight.detach().clone()
        model(torch.randint(0, 40, (2, 8))).float().square().mean().backward()
        opt.step()
        updates[steps] = model.blocks[0].mlp.fc.weight.detach() - before
    assert not torch.allclose(updates[1], updates[5])
    with pytest.raises(ConfigError, match="optim.muon_ns_steps must be 1 to 10; got 0"):
        load_config("default", ["optim.name=muon", "optim.muon_ns_steps=0"])


def test_scheduler_drives_both_parts_of_a_combined_optimizer() -> None:
    model = gpt()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-3, muon_lr=2e-2), CPU)
    cfg = ScheduleConfig(name="cosine", warmup_steps=2, min_lr=1e-4)
    sched = build_scheduler(opt, cfg, 1e-3, 10)
    step = OptimizationStep(model, opt, CausalLMObjective(), scheduler=sched)
    x = torch.randint(0, 40, (4, 17))
    for s in range(5):
        factor = lr_at(s, cfg, 1e-3, 10) / 1e-3
        muon_lr = opt.optimizers[0].param_groups[0]["lr"]
        adamw_lr = opt.optimizers[1].param_groups[0]["lr"]
        assert muon_lr == pytest.approx(2e-2 * factor) and adamw_lr == pytest.approx(1e-3 * factor)
        step([(x[:, :-1], x[:, 1:])])


def test_lion_matches_its_definition() -> None:
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5, 3))
    ref, m = p.detach().clone(), torch.zeros(5, 3)
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    for _ in range(4):
        grad = torch.randn(5, 3)
        p.grad = grad.clone()
        opt.step()
        ref = ref * (1 - 0.1 * 0.5) - 0.1 * torch.sign(0.9 * m + 0.1 * grad)
        m = 0.99 * m + 0.01 * grad
        assert torch.allclose(p.detach(), ref, atol=1e-6)


def test_embedding_lr_is_its_own_group_and_keeps_its_ratio() -> None:
    model = gpt()
    opt = build_optimizer(model, OptimConfig(lr=1e-3, embedding_lr=5e-3), CPU)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["embeddings"]["lr"] == 5e-3 and groups["matrices"]["lr"] == 1e-3
    sched = build_scheduler(opt, ScheduleConfig(name="linear", warmup_steps=0, min_lr=0.0), 1e-3, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert groups["embeddings"]["lr"] / groups["matrices"]["lr"] == pytest.approx(5.0)


def test_wsd_holds_then_decays_over_the_final_fraction() -> None:
    cfg = ScheduleConfig(name="wsd", warmup_steps=10, min_lr=0.0, decay_fraction=0.2)
    lrs = [lr_at(s, cfg, 1.0, 100) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70
    assert lrs[90] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.05)
    assert lr_at(100, cfg, 1.0, 100) == 0.0


def test_inverse_sqrt_and_onecycle_shapes() -> None:
    inv = ScheduleConfig(name="inverse_sqrt", warmup_steps=100, min_lr=1e-3)
    assert lr_at(99, inv, 1.0, 10_000) == pytest.approx(100 / 101)  # last warmup step
    assert lr_at(100, inv, 1.0, 10_000) == pytest.approx(1.0)
    assert lr_at(400, inv, 1.0, 10_000) == pytest.approx(0.5)  # sqrt(100 / 400)
    assert lr_at(10**9, inv, 1.0, 10_000) == 1e-3  # floor
    one = ScheduleConfig(name="onecycle", warmup_steps=30, min_lr=1e-4)
    assert lr_at(0, one, 1.0, 100) == pytest.approx(1 / 25)
    assert lr_at(30, one, 1.0, 100) == pytest.approx(1.0)
    assert lr_at(15, one, 1.0, 100) == pytest.approx((1 + 1 / 25) / 2)
    assert lr_at(100, one, 1.0, 100) == pytest.approx(1e-4)


def test_clip_by_value_bounds_every_element_and_reports_the_norm() -> None:
    model = gpt()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    step = OptimizationStep(model, opt, CausalLMObjective(), grad_clip=1e-4, clip_mode="value")
    x = torch.randint(0, 40, (4, 17))
    result = step([(x[:, :-1], x[:, 1:])])
    assert result.clipped and result.grad_norm > 1e-4
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) <= 1e-4 + 1e-12


def test_tokens_per_step_sets_gradient_accumulation() -> None:
    cfg = load_config("default", ["train.batch_size=8", "model.block_size=64", "train.tokens_per_step=2048"])
    assert cfg.train.grad_accum == 4
    with pytest.raises(ConfigError, match="less than one micro-batch"):
        load_config("default", ["train.batch_size=8", "model.block_size=64", "train.tokens_per_step=100"])


def test_resume_with_a_combined_optimizer_is_exact(tmp_path: Path) -> None:
    common = [*TINY, f"out_dir={tmp_path}", "optim.name=muon", "schedule.decay_steps=30", "train.eval_every=10",
              "train.checkpoint_every=10", "model.dropout=0.1"]
    full = train(None, overrides=[*common, "name=full", "train.max_steps=30"], quiet=True)
    part = train(None, overrides=[*common, "name=part", "train.max_steps=15"], quiet=True)
    train(None, overrides=["train.max_steps=30"], resume=part.run_dir, quiet=True)
    a = load_file(str(full.last_checkpoint / "model.safetensors"))
    b = load_file(str(part.last_checkpoint / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert math.isfinite(read_metrics(part.run_dir / "metrics.jsonl")[-1]["test_loss"])


def test_auto_optimizer_is_muon_for_gpt_and_adamw_for_lstm() -> None:
    """The default strategy: Muon+AdamW for GPT models (the optimizer benchmark's winner), AdamW for the LSTM."""
    gpt_cfg = load_config("default", ["optim.name=auto"])
    lstm_cfg = load_config("classify-lstm", ["optim.name=auto"])
    assert gpt_cfg.optim.name == "muon" and lstm_cfg.optim.name == "adamw"  # resolved, so saved configs say it
    assert isinstance(build_optimizer(gpt(), OptimConfig(), CPU), CombinedOptimizer)
    assert OptimConfig().name == "auto"


def test_muon_ns_dtype_reaches_the_optimizer_and_bf16_stays_close_to_fp32() -> None:
    """The Newton-Schulz precision is a config key (bf16 where its matmuls are fast); both give nearly one update."""
    updates = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = gpt()
        opt = build_optimizer(model, OptimConfig(name="muon", lr=1e-2, muon_ns_dtype=dtype), CPU)
        assert {g["ns_dtype"] for g in opt.optimizers[0].param_groups} == {dtype}
        before = model.blocks[0].mlp.fc.weight.detach().clone()
        model(torch.randint(0, 40, (2, 8))).float().square().mean().backward()
        opt.step()
        updates[dtype] = model.blocks[0].mlp.fc.weight.detach() - before
    assert not torch.equal(updates["float32"], updates["bfloat16"])
    cosine = torch.nn.functional.cosine_similarity(updates["float32"].flatten(), updates["bfloat16"].flatten(), dim=0)
    assert cosine > 0.95, cosine  # bf16 keeps 8 bits of mantissa and the plain iteration: the same direction
    with pytest.raises(ConfigError, match="optim.muon_ns_dtype must be one of auto, float32, bfloat16"):
        load_config("default", ["optim.name=muon", "optim.muon_ns_dtype=bf16"])
