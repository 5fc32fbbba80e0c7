"""Objectives (label smoothing, z-loss, ignored targets), explicit L1/L2 penalties, and separate dropouts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gradwise import train
from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import read_metrics
from gradwise.models.gpt import GPT, GPTConfig
from gradwise.objectives.losses import IGNORE_INDEX, CausalLMObjective, LossTerms
from gradwise.objectives.penalties import Penalties
from gradwise.training.step import OptimizationStep
from tests.conftest import TINY


def gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=1, n_head=2, n_embd=16, **kw))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 20, (4, 13), generator=torch.Generator().manual_seed(3))
    return x[:, :-1], x[:, 1:]


def fit(objective, steps: int = 60) -> GPT:
    model = gpt()
    step = OptimizationStep(model, torch.optim.AdamW(model.parameters(), lr=1e-2), objective)
    for _ in range(steps):
        step([batch()])
    return model.eval()


def test_ignored_targets_count_nowhere() -> None:
    model = gpt()
    x, y = batch()
    masked = y.clone()
    masked[:, ::2] = IGNORE_INDEX
    got = CausalLMObjective()(model, x, masked).total
    logits = model(x)
    keep = masked != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], y[keep])
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_makes_the_fitted_model_less_confident() -> None:
    x, _ = batch()
    sharp = fit(CausalLMObjective()).forward(x).softmax(-1).amax(-1).mean()
    smooth = fit(CausalLMObjective(label_smoothing=0.3)).forward(x).softmax(-1).amax(-1).mean()
    assert smooth < sharp - 0.05


def test_z_loss_is_logged_and_keeps_logits_small() -> None:
    model = gpt()
    x, y = batch()
    terms = CausalLMObjective(z_loss_weight=0.1)(model, x, y)
    assert isinstance(terms, LossTerms) and set(terms.parts) == {"lm", "z_loss"}
    lse = torch.logsumexp(model(x), -1)
    assert terms.parts["z_loss"].item() == pytest.approx(lse.square().mean().item(), rel=1e-5)
    assert terms.total.item() == pytest.approx((terms.parts["lm"] + 0.1 * terms.parts["z_loss"]).item(), rel=1e-6)
    plain = torch.logsumexp(fit(CausalLMObjective())(x), -1).abs().mean()
    held = torch.logsumexp(fit(CausalLMObjective(z_loss_weight=1.0))(x), -1).abs().mean()
    assert held < 0.5 * plain


def test_penalties_apply_only_to_the_chosen_parameters() -> None:
    model = gpt()
    pen = Penalties(model, l1=0.01, l2=0.1, patterns=["blocks.*.mlp.*.weight"])
    chosen = [model.blocks[0].mlp.fc.weight, model.blocks[0].mlp.proj.weight]
    assert pen.params == chosen
    terms = pen()
    assert terms["reg_l2"].item() == pytest.approx(0.1 * sum(p.square().sum() for p in chosen).item(), rel=1e-6)
    assert terms["reg_l1"].item() == pytest.approx(0.01 * sum(p.abs().sum() for p in chosen).item(), rel=1e-6)
    sum(terms.values()).backward()
    w = chosen[0]
    assert torch.allclose(w.grad, 0.2 * w.detach() + 0.01 * torch.sign(w.detach()), atol=1e-7)
    assert model.wte.weight.grad is None and model.blocks[0].attn.qkv.weight.grad is None


def test_penalty_patterns_that_match_nothing_are_an_error() -> None:
    with pytest.raises(ConfigError, match="match no parameter; names look like wte.weight"):
        Penalties(gpt(), l2=0.1, patterns=["encoder.*"])


def test_l2_penalty_shrinks_weights_and_is_logged_next_to_the_loss(tmp_path: Path) -> None:
    def mlp_norm(result) -> float:
        from safetensors.torch import load_file

        w = load_file(str(result.last_checkpoint / "model.safetensors"))
        return math.sqrt(sum(v.square().sum().item() for k, v in w.items() if ".mlp." in k and k.endswith("weight")))

    base = [*TINY, f"out_dir={tmp_path}", "train.max_steps=40", "optim.weight_decay=0"]
    plain = train(None, overrides=[*base, "name=plain"], quiet=True)
    held = train(None, overrides=[*base, "name=l2", "regularization.l2=0.01",
                                  "regularization.params=['blocks.*.mlp.*.weight']"], quiet=True)
    assert mlp_norm(held) < mlp_norm(plain)
    lines = [r for r in read_metrics(held.run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert all(r["train_reg_l2"] > 0 and "train_loss" in r for r in lines)


def test_objective_terms_are_logged_each_on_their_own(tmp_path: Path) -> None:
    result = train(None, overrides=[*TINY, f"out_dir={tmp_path}", "name=z", "train.max_steps=20",
                                    "objective.z_loss=1e-3", "objective.label_smoothing=0.1"], quiet=True)
    line = next(r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "train")
    assert line["train_lm"] > 0 and line["train_z_loss"] > 0
    assert line["train_loss"] == pytest.approx(line["train_lm"] + 1e-3 * line["train_z_loss"], rel=1e-4)


def test_dropout_rates_can_be_set_per_place() -> None:
    model = gpt(dropout=0.1, attn_dropout=0.0, resid_dropout=0.3)
    assert model.drop.p == 0.1  # embeddings: the general rate
    assert model.blocks[0].attn.attn_dropout == 0.0
    assert model.blocks[0].attn.resid_drop.p == 0.3 and model.blocks[0].mlp.drop.p == 0.3
    cfg = load_config("default", ["model.dropout=0.2", "model.attn_dropout=0.05"])
    assert (cfg.model.dropout, cfg.model.attn_dropout, cfg.model.resid_dropout) == (0.2, 0.05, None)


@pytest.mark.parametrize("override, fragment", [
    ("objective.label_smoothing=1.5", "objective.label_smoothing must be in [0, 1)"),
    ("regularization.l1=-1", "regularization.l1 must be >= 0"),
    ("model.attn_dropout=1", "model.attn_dropout must be in [0, 1)"),
])
def test_bad_objective_and_regularization_values(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("default", [override])
    assert fragment in str(exc.value)
