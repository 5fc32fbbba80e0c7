"""The modern GPT options (model.pos rope, qk_norm, activation relu2, zero_init, logit_softcap): each does
what it says, the planner counts it, a short run with them learns and resumes exactly, the chunked loss
agrees with the plain one under the soft-cap, and the GPT-2 export refuses what GPT-2 cannot hold."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gradwise.cli.commands import main
from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError
from gradwise.models import build_model
from gradwise.models.chunked_ce import linear_cross_entropy
from gradwise.models.cost import param_counts
from gradwise.models.gpt import GPT, GPTConfig, apply_rope, rope_tables
from gradwise.plan.estimate import model_spec
from tests.conftest import run_cli
from tests.test_resume import assert_same_run, last_step, start_and_stop

MODERN = ["model.pos=rope", "model.qk_norm=true", "model.activation=relu2", "model.zero_init=true",
          "model.logit_softcap=15", "model.tie_embeddings=false"]


def small(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw))


def test_rotary_scores_depend_only_on_the_distance_between_positions() -> None:
    cos, sin = rope_tables(32, 8)
    q, k = torch.randn(8), torch.randn(8)
    at = torch.stack([q] * 32)[None, None]  # (1, 1, T, D): the same vector at every position
    rq, rk = apply_rope(at, cos, sin)[0, 0], apply_rope(torch.stack([k] * 32)[None, None], cos, sin)[0, 0]
    assert torch.allclose(rq[5] @ rk[2], rq[25] @ rk[22], atol=1e-5)  # distance 3, anywhere
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[4], atol=1e-3)
    assert torch.allclose(rq[0], q)  # position 0 is not rotated
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(32), atol=1e-5)  # a rotation keeps lengths


def test_rope_has_no_position_table_and_is_counted_so() -> None:
    cfg = load_config("default", ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=16",
                                  *MODERN])
    model = build_model(cfg.model, 50)
    assert model.wpe is None and "wpe.weight" not in model.state_dict()
    assert "rope_cos" not in model.state_dict()  # angles are recomputed, never saved
    counts = param_counts(model_spec(cfg, 50, 0))
    assert counts["total"] == model.num_params() and counts["non_embedding"] == model.num_params(non_embedding=True)
    assert model(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)


def test_rope_attention_stays_causal() -> None:
    model = small(pos="rope", qk_norm=True).eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50
    a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6) and not torch.allclose(a[0, 10:], b[0, 10:])


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys() -> None:
    x = torch.randint(0, 50, (2, 16))
    for norm, same in ((True, True), (False, False)):
        model = small(qk_norm=norm).eval()
        before = model(x)
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight[:64] *= 10.0  # the query and key rows (2 x C of the 3 x C)
        assert torch.allclose(before, model(x), atol=1e-4) is same


def test_relu2_mlp_is_the_squared_relu() -> None:
    model = small(activation="relu2")
    mlp = model.blocks[0].mlp
    h = torch.randn(2, 16, 32)
    assert torch.allclose(mlp(h), mlp.proj(F.relu(mlp.fc(h)) ** 2), atol=1e-6)


def test_zero_init_starts_every_block_as_the_identity() -> None:
    model = small(zero_init=True).eval()
    assert all(float(p.detach().abs().max()) == 0.0 for n, p in model.named_parameters() if n.endswith("proj.weight"))
    x = torch.randint(0, 50, (2, 16))
    embedded = model.wte(x) + model.wpe(torch.arange(16))
    assert torch.allclose(model.hidden(x), model.ln_f(embedded), atol=1e-6)


def test_the_soft_cap_bounds_the_logits_and_the_chunked_loss_matches_the_plain_one() -> None:
    model = small(logit_softcap=2.0, tie_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(200.0)  # raw logits far beyond the cap
    x = torch.randint(0, 50, (4, 16))
    peak = float(model(x).detach().abs().max())
    assert 1.9 < peak <= 2.0  # tanh saturates to exactly the cap in fp32, never beyond
    h = torch.randn(64, 32, requires_grad=True)
    w = (torch.randn(50, 32) * 3).requires_grad_()
    t = torch.randint(0, 50, (64,))
    t[:5] = -100
    capped = 2.0 * torch.tanh(h @ w.T / 2.0)
    ce_plain = F.cross_entropy(capped, t, ignore_index=-100, label_smoothing=0.1)
    z_plain = capped.logsumexp(-1)[t != -100].square().mean()
    plain = ce_plain + 0.3 * z_plain
    gh, gw = torch.autograd.grad(plain, (h, w))
    total, ce, z = linear_cross_entropy(h, w, t, label_smoothing=0.1, z_weight=0.3, softcap=2.0, chunk=16)
    ch, cw = torch.autograd.grad(total, (h, w))
    assert torch.allclose(total, plain, atol=1e-5) and torch.allclose(ce, ce_plain, atol=1e-5)
    assert torch.allclose(z, z_plain, atol=1e-5)
    assert torch.allclose(ch, gh, atol=1e-5) and torch.allclose(cw, gw, atol=1e-5)


@pytest.mark.parametrize(("sets", "message"), [
    (["model.pos=rope", "model.n_embd=30", "model.n_head=2"], "head width"),
    (["model.logit_softcap=0"], "model.logit_softcap must be a positive number"),
    (["model.logit_softcap=nan"], "model.logit_softcap must be a positive number"),
    (["model.pos=alibi"], "model.pos"),
])
def test_impossible_options_are_refused_by_key(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("default", sets)


SHORT = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.batch_size=8",
         "train.max_steps=60", "train.eval_every=20", "train.log_every=10",
         "train.checkpoint_every=10", "schedule.warmup_steps=5", "data.split_chunks=1", "data.check=false",
         "model.dropout=0.1", "train.eval_batches=auto", *MODERN]  # auto: its chosen count resumes too


def _sets(out: Path, name: str, extra: list[str] = ()) -> list[str]:
    return sum((["--set", a] for a in [*SHORT, *extra, f"out_dir={out}", f"name={name}"]), [])


@pytest.fixture(scope="module")
def modern_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("modern")
    proc = run_cli("train", *_sets(out, "full"))
    assert proc.returncode == 0, proc.stderr
    return out / "full"


def test_a_short_run_with_every_option_learns(modern_run: Path) -> None:
    evals = [json.loads(line) for line in (modern_run / "metrics.jsonl").read_text().splitlines()]
    val = [e["val_loss"] for e in evals if e["kind"] == "eval"]
    assert val[-1] < 0.8 * val[0], val


def test_every_option_resumes_exactly_after_ctrl_c(modern_run: Path, tmp_path: Path) -> None:
    start_and_stop(tmp_path, "cut", signal.SIGINT, 20, _sets(tmp_path, "cut"))
    assert last_step(tmp_path / "cut") < 60  # stopped part way
    resumed = run_cli("train", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(modern_run, tmp_path / "cut")


def test_the_gpt2_export_refuses_what_gpt2_cannot_hold(modern_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(modern_run), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.pos=rope" in err and "model.logit_softcap=15" in err, err
    assert not (tmp_path / "hf").exists()  # nothing written
