"""Speed levers change speed, never results. train.fused_ce: the loss computed through the output layer in
chunks must be the plain loss, with the same gradients, for every option the objective has (ignored targets,
label smoothing, z-loss), and train the same. train.compile_mode reaches torch.compile."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gradwise.core.errors import GradwiseError, TrainingStopped
from gradwise.core.rundir import read_metrics
from gradwise.models.chunked_ce import IGNORE_INDEX, chunk_rows, linear_cross_entropy
from gradwise.objectives.losses import z_loss
from gradwise.training.run import train
from tests.conftest import TINY


def plain(hidden, weight, targets, smoothing, z_weight):
    logits = (hidden @ weight.T).float()
    ce = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=smoothing)
    z = z_loss(logits, targets)
    return ce + z_weight * z, ce, z


def inputs(n=37, width=16, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, width, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, width, generator=g) * 0.3).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[[3, 10, 11]] = IGNORE_INDEX  # padding
    return hidden, weight, targets


@pytest.mark.parametrize("chunk", [1, 7, 37, 64])
@pytest.mark.parametrize(("smoothing", "z_weight"), [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-2), (0.2, 0.5)])
def test_loss_and_gradients_equal_the_plain_path(chunk, smoothing, z_weight):
    h1, w1, t = inputs()
    h2, w2 = h1.detach().clone().requires_grad_(), w1.detach().clone().requires_grad_()
    want = plain(h1, w1, t, smoothing, z_weight)
    got = linear_cross_entropy(h2, w2, t, label_smoothing=smoothing, z_weight=z_weight, chunk=chunk)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    (3.0 * want[0]).backward()  # a non-unit incoming gradient is applied too
    (3.0 * got[0]).backward()
    torch.testing.assert_close(h2.grad, h1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-5, atol=1e-7)
    assert not got[1].requires_grad and not got[2].requires_grad  # the parts are for logging only


def test_without_gradients_and_all_ignored():
    h, w, t = inputs()
    with torch.no_grad():
        want, got = plain(h, w, t, 0.1, 0.1), linear_cross_entropy(h, w, t, label_smoothing=0.1, z_weight=0.1)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    total, _, _ = linear_cross_entropy(h, w, torch.full_like(t, IGNORE_INDEX))
    total.backward()
    assert total.item() == 0.0 and h.grad.abs().max() == 0  # nothing to learn from padding


def test_bf16_autocast_stays_within_bf16_noise():
    h, w, t = inputs(n=64, width=32, vocab=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(F.linear(h, w).float(), t, ignore_index=IGNORE_INDEX)
        got, _, _ = linear_cross_entropy(h, w, t, chunk=16)
    assert abs(got.item() - want.item()) < 1e-2 * want.item()


def test_chunk_rows_keeps_chunk_logits_near_the_hidden_size():
    assert chunk_rows(32 * 1024, 768, 50304) == 512  # 512 x 50304 logits ~ 32768 x 768 hidden
    assert chunk_rows(2048, 256, 50304) == 256  # the floor: 16 rows would make tiny matmuls
    assert chunk_rows(10, 64, 65) == 10 and chunk_rows(1, 8, 8) == 1  # fewer rows than the floor: one chunk


def test_gpt_gradients_through_the_fused_loss_equal_the_plain_ones():
    """The whole model, tied embeddings included: one backward each way, every parameter's gradient."""
    from gradwise.config.load import load_config
    from gradwise.models import build_model
    from gradwise.objectives.losses import CausalLMObjective

    cfg = load_config("default", ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 70)
    x, y = torch.randint(0, 70, (8, 32)), torch.randint(0, 70, (8, 32))
    grads, losses = [], []
    for fused in (False, True):
        model.zero_grad()
        out = CausalLMObjective(0.05, 1e-3, fused=fused)(model, x, y)
        out.total.backward()
        losses.append(out.total.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_training_with_fused_ce_matches_the_plain_loss(tmp_path, corpus_file):
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=20", "train.eval_every=10", "train.log_every=5", "objective.z_loss=1e-3",
            "objective.label_smoothing=0.05", "data.check=false"]
    runs = [train("default", overrides=[*over, f"name=fused-{f}", f"train.fused_ce={f}"], quiet=True).run_dir
            for f in ("false", "true")]
    logs = [[r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "train"] for run in runs]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_z_loss"] == pytest.approx(a["train_z_loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)  # Adam amplifies 1e-9 differences
    evals = [[r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "eval"] for run in runs]
    assert evals[1] == pytest.approx(evals[0], rel=1e-4)


def test_fused_ce_refused_where_it_cannot_work(tmp_path):
    with pytest.raises(GradwiseError, match="train.fused_ce works with gradwise's GPT language model"):
        train("classify-lstm", overrides=["train.fused_ce=true", f"out_dir={tmp_path}"], quiet=True)


def test_compile_mode_reaches_torch_compile(tmp_path, corpus_file, monkeypatch):
    """train.compile_mode is the mode the training step's and evaluation's torch.compile get."""
    modes = []

    def fake_compile(module, mode=None):  # records the call; runs the module as it is (a real compile is slow)
        modes.append(mode)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=2", "train.eval_every=2", "data.check=false", "train.compile=true"]
    train("default", overrides=[*over, "name=autotune", "train.compile_mode=max-autotune"], quiet=True)
    train("default", overrides=[*over, "name=plain"], quiet=True)
    assert modes == ["max-autotune", "max-autotune", None, None]


def test_batch_prefetcher_gives_each_step_its_own_batches_in_any_order():
    """The next step's batches are made in a background thread; asked out of order, a step is made on the
    spot. Either way each step gets exactly make(step)."""
    import threading

    from gradwise.training.loop import BatchPrefetcher

    made: list[tuple[int, str]] = []

    def make(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        made.append((step, threading.current_thread().name))
        return [(torch.full((2,), step), torch.full((2,), -step))]

    prefetch = BatchPrefetcher(make, max_steps=6)
    try:
        for step in (0, 1, 2, 4, 5):  # 3 skipped: a step asked out of order
            (x, y), = prefetch.get(step)
            assert x.tolist() == [step, step] and y.tolist() == [-step, -step]
    finally:
        prefetch.close()
    by_worker = {s for s, name in made if name.startswith("gradwise-batches")}
    assert {1, 2, 5} <= by_worker and 0 not in by_worker  # 1, 2 and 5 were ready before they were asked for
    assert 6 not in {s for s, _ in made}  # nothing past the last step


def test_async_steps_train_exactly_as_synchronous_ones_and_resume_exactly(tmp_path, corpus_file):
    """train.async_steps reads the numbers at log, eval and checkpoint steps only: the same run, the same log."""
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=20", "train.eval_every=10", "train.log_every=4", "data.check=false", "optim.name=adamw",
            "schedule.name=constant", "train.test_eval=false"]
    sync = train("default", overrides=[*over, "name=sync", "train.async_steps=false"], quiet=True).run_dir
    lazy = train("default", overrides=[*over, "name=async", "train.async_steps=true"], quiet=True).run_dir
    half = train("default", overrides=[*over, "name=half", "train.async_steps=true", "train.max_steps=10"],
                 quiet=True).run_dir
    train(resume=half, overrides=["train.max_steps=20"], quiet=True)
    keys = ("step", "train_loss", "grad_norm", "train_loss_max", "grad_norm_max", "lr", "update_ratio", "val_loss")
    logs = [[{k: r.get(k) for k in keys} for r in read_metrics(run / "metrics.jsonl") if r["kind"] in ("train", "eval")]
            for run in (sync, lazy, half)]
    assert len(logs[0]) == 5 + 3  # train lines at 4, 8, 12, 16, 20; evaluations at 0, 10, 20
    assert logs[1] == logs[0]
    # The stopped run logged at its step 10, so its line at 12 covers two steps; from 16 on the lines agree.
    later = [[r for r in log if r["step"] >= 16 or r["val_loss"] is not None] for log in (logs[0], logs[2])]
    assert len(later[0]) == 5 and later[1] == later[0]


def test_an_async_run_that_diverges_stops_with_the_synchronous_runs_record(tmp_path, corpus_file):
    """A streak of non-finite steps is noticed at the next log line, but the stop record names the step the
    streak reached its limit, as the synchronous run's does, with the same message and exit."""
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", "data.tokenizer=char", f"out_dir={tmp_path}",
            "train.max_steps=40", "train.eval_every=40", "train.log_every=10", "data.check=false",
            "optim.name=adamw", "optim.lr=1e12", "train.grad_clip=0", "train.max_nonfinite=3",
            "schedule.name=constant", "train.test_eval=false"]
    stops = []
    for name, lazy in (("sync", "false"), ("async", "true")):
        with pytest.raises(TrainingStopped, match="3 non-finite steps in a row"):
            train("default", overrides=[*over, f"name={name}", f"train.async_steps={lazy}"], quiet=True)
        stops.append([(r["step"], r["reason"].split(" (")[0]) for r in read_metrics(tmp_path / name / "metrics.jsonl")
                      if r["kind"] == "stop"])
    assert len(stops[0]) == 1 and stops[1] == stops[0], stops
    assert stops[0][0][0] < 10  # before the first log line, where the asynchronous run read it


def test_async_steps_refused_where_the_optimizer_cannot_skip_on_the_device(tmp_path):
    with pytest.raises(GradwiseError, match="train.async_steps needs an optimizer that can skip"):
        train("default", overrides=[*TINY, "train.async_steps=true", "optim.name=muon", f"out_dir={tmp_path}",
                                    "data.check=false"], quiet=True)
