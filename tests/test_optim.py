"""Optimizers' parameter groups and learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from gradwise.config.schema import OptimConfig, ScheduleConfig
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.optim import ScheduleClock, build_optimizer, build_scheduler, lr_at, param_groups


def model() -> GPT:
    return GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=True))


def test_weight_decay_only_on_matrices() -> None:
    m = model()
    groups = {g["name"]: g for g in param_groups(m, 0.1)}
    decayed = {id(p) for g in groups.values() if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    assert set(groups) == {"matrices", "embeddings", "vectors"}
    assert decayed == {id(p) for p in groups["matrices"]["params"]}
    assert all(p.dim() == 2 for p in groups["matrices"]["params"])
    assert id(m.wte.weight) not in decayed and id(m.wpe.weight) not in decayed  # embeddings (and tied head)
    assert not any("bias" in names[i] or "ln" in names[i] for i in decayed)
    assert id(m.blocks[0].mlp.fc.weight) in decayed
    every = param_groups(m, 0.1, "all")
    assert all(g["weight_decay"] == 0.1 for g in every)
    assert sum(len(g["params"]) for g in every) == len({id(p) for p in m.parameters()})


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_each_optimizer_builds_and_moves_weights(name: str) -> None:
    m = model()
    opt = build_optimizer(m, OptimConfig(name=name, lr=1e-2), torch.device("cpu"))
    before = m.blocks[0].mlp.fc.weight.detach().clone()
    m(torch.randint(0, 40, (2, 8))).sum().backward()
    opt.step()
    assert not torch.equal(before, m.blocks[0].mlp.fc.weight)


def test_cosine_schedule_warms_up_decays_and_floors() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr=1e-4)
    lrs = [lr_at(s, cfg, 1e-3, 100) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-3 / 11)
    assert lrs[9] == pytest.approx(1e-3 * 10 / 11)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * 0.9e-3, rel=1e-6)  # half-way: mean of max and floor
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100], strict=False))
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)


def test_linear_and_constant_schedules() -> None:
    lin = ScheduleConfig(name="linear", warmup_steps=0, min_lr=0.0)
    assert lr_at(50, lin, 1.0, 100) == pytest.approx(0.5)
    const = ScheduleConfig(name="constant", warmup_steps=4, min_lr=0.0)
    assert lr_at(3, const, 1.0, 100) == pytest.approx(0.8) and lr_at(99, const, 1.0, 100) == 1.0


def test_scheduler_drives_the_optimizer_lr() -> None:
    m = model()
    opt = build_optimizer(m, OptimConfig(lr=1e-3), torch.device("cpu"))
    cfg = ScheduleConfig(warmup_steps=3, min_lr=1e-5)
    sched = build_scheduler(opt, cfg, 1e-3, 20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, cfg, 1e-3, 20) for s in range(20)])


def test_a_clock_schedule_stands_where_the_steps_or_the_clock_is_further() -> None:
    m = model()
    opt = build_optimizer(m, OptimConfig(lr=1e-3), torch.device("cpu"))
    cfg, clock = ScheduleConfig(warmup_steps=0, min_lr=1e-5), ScheduleClock(100)
    sched = build_scheduler(opt, cfg, 1e-3, 100, clock)
    seen = []
    for step, share in enumerate([0.0, 0.0, 0.5, 0.5, 0.9, 0.9, 1.0]):
        clock.share = share  # the loop sets it before each step
        opt.step()
        sched.step()
        seen.append(opt.param_groups[0]["lr"])  # the rate of step + 1
        assert seen[-1] == pytest.approx(lr_at(max(step + 1, int(share * 100)), cfg, 1e-3, 100))
    assert seen[1] > 0.99e-3 and seen[3] == pytest.approx(lr_at(50, cfg, 1e-3, 100)) and seen[-1] == pytest.approx(1e-5)
    clock.share = 0.01  # the clock behind the steps: the steps lead
    assert clock.position(40) == 40 and clock.position(0) == 1


def test_the_optimizer_names_are_one_table() -> None:
    """gradwise.optim.OPTIMIZERS is the one list of optimizers: the config accepts exactly its names (and
    auto), every one builds, and the planner sizes every one's state."""
    import typing

    from gradwise.config import OptimConfig
    from gradwise.models.cost import ParamTensor
    from gradwise.optim import OPTIMIZERS, build_optimizer
    from gradwise.training.memory import optimizer_state_bytes

    accepted = set(typing.get_args(typing.get_type_hints(OptimConfig)["name"]))
    assert accepted == set(OPTIMIZERS) | {"auto"}
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3))
    for name in OPTIMIZERS:
        assert isinstance(build_optimizer(model, OptimConfig(name=name), torch.device("cpu")), torch.optim.Optimizer)
        assert optimizer_state_bytes([ParamTensor("w", (3, 4), "matrices")], name) >= 0
