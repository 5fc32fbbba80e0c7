"""Fit diagnosis and the learning-rate finder.

The rules are checked on hand-made curves (each threshold on both sides) and on real tiny runs built to
over-fit (a large model on 5 KB of text, no regularization), to under-fit (an 8-wide model held down by a
strong L2 penalty), to stop too early, and to diverge (SGD at lr 50 without clipping).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradwise.core.errors import ConfigError, TrainingStopped
from gradwise.tools.lr_find import centred_average, lr_find
from gradwise.training.diagnose import diagnose, diagnose_run
from gradwise.training.run import train

CONFIG = {"optim": {"lr": 1e-3, "weight_decay": 0.0}, "model": {"dropout": 0.0, "n_embd": 64, "n_layer": 2},
          "train": {"max_steps": 1000, "eval_every": 100}}


def curves(val: list[float], train: list[float], every: int = 100, log_every: int = 50,
           maxima: dict[int, float] | None = None) -> list[dict]:
    """metrics.jsonl records: evaluations at 0, every, 2*every...; train windows every log_every steps."""
    records = [{"kind": "eval", "step": i * every, "val_loss": v} for i, v in enumerate(val)]
    for i, v in enumerate(train):
        step = (i + 1) * log_every
        records.append({"kind": "train", "step": step, "train_loss": v, "grad_norm": 1.0, "grad_norm_max": 1.2,
                        "train_loss_max": (maxima or {}).get(step, v * 1.05)})
    return sorted(records, key=lambda r: r["step"])


def summary(steps: int = 1000, stopped: str = "max_steps") -> dict:
    return {"steps": steps, "stopped_because": stopped}


def linear(a: float, b: float, n: int) -> list[float]:
    return [a + (b - a) * i / (n - 1) for i in range(n)]


# ------------------------------------------------------------------ rules on hand-made curves

def test_overfitting_is_read_from_a_rising_validation_curve_while_training_falls():
    val = [4.0, 2.5, 2.2, 2.0, 1.9, 1.85, 1.87, 1.9, 1.93, 1.96, 2.0]  # minimum at step 500
    d = diagnose(curves(val, linear(3.0, 1.0, 20)), summary(), CONFIG)
    assert "overfitting" in d.kinds and "still_improving" not in d.kinds
    v = d.verdicts[d.kinds.index("overfitting")]
    assert "rose 8.1% from its minimum 1.8500 at step 500" in v.evidence
    assert any("step 500" in a for a in v.actions) and any("model.dropout=0.1" in a for a in v.actions)
    assert d.facts["best_step"] == 500


def test_a_rise_below_the_threshold_is_not_overfitting():
    val = [4.0, 2.5, 2.2, 2.0, 1.9, 1.85, 1.852, 1.855, 1.857, 1.86, 1.865]  # +0.8% from the minimum
    d = diagnose(curves(val, linear(3.0, 1.8, 20)), summary(), CONFIG)
    assert "overfitting" not in d.kinds and "converged" in d.kinds


def test_still_improving_when_the_minimum_is_the_last_evaluation():
    val = linear(4.0, 2.0, 11)
    d = diagnose(curves(val, linear(3.9, 1.95, 20)), summary(), CONFIG)
    assert d.kinds == ["still_improving"]
    assert any("train.max_steps=2000" in a for a in d.verdicts[0].actions)


def test_a_plateau_with_no_gap_is_converged_and_capacity_limited():
    val = [4.0, 3.0, 2.6, 2.5, 2.45, 2.44, 2.44, 2.44, 2.439, 2.44, 2.44]
    d = diagnose(curves(val, [3.0] * 4 + [2.43] * 16), summary(), CONFIG)
    assert d.kinds == ["underfitting", "converged"]
    assert "capacity-limited" in d.verdicts[0].title and "n_embd=128" in " ".join(d.verdicts[0].actions)


def test_a_plateau_with_a_wide_gap_is_converged_but_not_underfitting():
    val = [4.0, 3.0, 2.6, 2.5, 2.45, 2.44, 2.44, 2.44, 2.439, 2.44, 2.44]
    d = diagnose(curves(val, [3.0] * 4 + [2.2] * 16), summary(), CONFIG)  # validation 11% above training
    assert d.kinds == ["converged"]


def test_barely_learning_is_underfitting_even_while_still_falling():
    val = linear(4.0, 3.8, 11)  # 5% below the untrained loss after 1,000 steps
    d = diagnose(curves(val, linear(4.0, 3.8, 20)), summary(), CONFIG)
    assert "underfitting" in d.kinds and "barely learned" in d.verdicts[d.kinds.index("underfitting")].title


def test_a_non_finite_stop_is_diverged_and_names_the_best_checkpoint():
    records = curves([4.0, 3.0, 2.8], [3.5, 3.0, 2.9, 2.9, 40.0]) + [
        {"kind": "stop", "step": 250, "reason": "10 non-finite steps in a row (loss nan, grad norm nan); lower"}]
    d = diagnose(records, summary(250, "diverged"), CONFIG)
    assert d.kinds == ["diverged"]
    assert "stopped at step 250: 10 non-finite steps in a row" in d.verdicts[0].evidence
    assert any("optim.lr=0.0001" in a for a in d.verdicts[0].actions)
    assert any("step 200, val 2.8000" in a for a in d.verdicts[0].actions)


def test_ending_no_better_than_untrained_is_diverged():
    val = [4.0, 3.0, 2.5, 3.5, 4.5, 6.0]
    d = diagnose(curves(val, linear(3.5, 6.0, 10)), summary(500), CONFIG)
    assert d.kinds[0] == "diverged" and "no better than the untrained model's 4.0000" in d.verdicts[0].evidence


def test_a_loss_spike_the_run_recovers_from_is_unstable():
    val = [4.0, 3.0, 2.6, 2.5, 2.45, 2.44, 2.44, 2.44, 2.439, 2.44, 2.44]
    train = [3.0] * 4 + [2.43] * 16
    d = diagnose(curves(val, train, maxima={600: 4.5}), summary(), CONFIG)
    assert d.kinds[0] == "unstable" and "largest 4.5000 at step 600" in d.verdicts[0].evidence
    calm = diagnose(curves(val, train, maxima={600: 3.0}), summary(), CONFIG)  # 1.23x the median: not a spike
    assert "unstable" not in calm.kinds


def test_a_validation_loss_of_zero_is_read_not_divided_by():
    """A separable classifier reaches a validation loss of exactly 0; that is a solved task, not a crash and not
    'underfitting' because training loss (with dropout) sits above it."""
    val = [1.1, 0.001, 0.0, 0.0, 0.0, 0.0]
    d = diagnose(curves(val, [0.9, 0.4, 0.2, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15]), summary(500), CONFIG)
    assert d.kinds == ["converged"] and d.facts["best_val_loss"] == 0.0


def test_too_early_to_tell_with_two_evaluations_and_no_summary():
    d = diagnose(curves([4.0, 3.0], [3.5, 3.1]), None, CONFIG)
    assert d.kinds == ["too_early"] and d.facts["stopped_because"] == "running"


def test_centred_average_does_not_shift_a_curve():
    values = [float(i) for i in range(10)]
    assert centred_average(values, 2)[2:8] == values[2:8]


# ------------------------------------------------------------------ real runs

def _text(n: int) -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))[:n]


TINY = ["data.tokenizer=char", "data.check=false", "data.split_chunks=1", "train.log_every=10",
        "schedule.name=constant", "schedule.warmup_steps=10", "optim.name=adamw", "train.test_eval=false"]
OVERFIT = ["data.split=[0.6,0.2,0.2]", "model.n_layer=2", "model.n_head=4", "model.n_embd=128", "model.block_size=64",
           "train.batch_size=16", "optim.lr=3e-3", "optim.weight_decay=0", "train.eval_every=20",
           "train.eval_batches=8"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fit") / "docs.txt"
    path.write_text(_text(8000), encoding="utf-8")
    return path


def _train(corpus: Path, out: Path, name: str, extra: list[str]) -> dict:
    result = train("default", overrides=[f"data.path={corpus}", f"out_dir={out}", f"name={name}", *TINY, *extra],
                   quiet=True)
    return result.summary


@pytest.mark.slow
def test_a_big_model_on_5kb_of_text_overfits_and_a_short_run_is_still_improving(corpus, tmp_path):
    s = _train(corpus, tmp_path, "overfit", [*OVERFIT, "train.max_steps=240"])
    kinds = [v["kind"] for v in s["diagnosis"]]
    assert "overfitting" in kinds, s["diagnosis"]
    d = diagnose_run(tmp_path / "overfit")
    assert d.facts["rise_from_best"] > 0.01 and d.facts["train_fall_since_best"] > 0.1
    assert d.facts["best_step"] == s["best_step"]
    short = _train(corpus, tmp_path, "short", [*OVERFIT, "train.max_steps=60"])
    assert [v["kind"] for v in short["diagnosis"]] == ["still_improving"], short["diagnosis"]


@pytest.mark.slow
def test_a_tiny_model_under_a_strong_l2_penalty_underfits(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(_text(20000), encoding="utf-8")
    s = _train(path, tmp_path, "underfit", [
        "model.n_layer=1", "model.n_head=1", "model.n_embd=8", "model.block_size=32", "train.batch_size=16",
        "optim.lr=3e-2", "regularization.l2=1e-1", "train.max_steps=200", "train.eval_every=20",
        "train.eval_batches=8"])
    kinds = [v["kind"] for v in s["diagnosis"]]
    assert kinds == ["underfitting", "converged"], s["diagnosis"]
    assert "regularization.l2=0" in " ".join(s["diagnosis"][0]["actions"])


@pytest.mark.slow
def test_a_diverging_run_keeps_its_record_and_the_cli_says_diverged(corpus, tmp_path):
    cmd = [sys.executable, "-m", "gradwise", "train", "--data", str(corpus), "--name", "boom",
           "--set", f"out_dir={tmp_path}", *[x for o in TINY for x in ("--set", o)],
           *[x for o in ["optim.name=sgd", "optim.lr=50", "train.grad_clip=0", "schedule.warmup_steps=0",
                         "model.n_layer=2", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
                         "train.batch_size=8", "train.max_steps=200", "train.eval_every=20", "train.eval_batches=5",
                         "train.max_nonfinite=3"] for x in ("--set", o)], "--no-bar"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == TrainingStopped.exit_code, proc.stderr
    assert "non-finite steps in a row" in proc.stderr and "Traceback" not in proc.stderr
    assert "fit      diverged: training stopped at step" in proc.stdout
    s = json.loads((tmp_path / "boom" / "summary.json").read_text())
    assert s["stopped_because"] == "diverged" and s["diagnosis"][0]["kind"] == "diverged"
    records = [json.loads(x) for x in (tmp_path / "boom" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "stop" and any(r["kind"] == "train" for r in records)
    out = subprocess.run([sys.executable, "-m", "gradwise", "diagnose", str(tmp_path / "boom")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "fit      diverged" in out.stdout and "-> lower the learning rate" in out.stdout


def test_diagnose_on_a_directory_that_is_not_a_run_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gradwise", "diagnose", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is not a gradwise run directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ learning-rate finder

LR_CONFIG = ["data.tokenizer=char", "data.check=false", "model.n_layer=2", "model.n_head=2", "model.n_embd=64",
             "model.block_size=64", "train.batch_size=16", "optim.name=adamw", "schedule.warmup_steps=20",
             "schedule.min_lr=0", "train.max_steps=150", "train.eval_every=50", "train.eval_batches=10",
             "train.test_eval=false"]


@pytest.mark.slow
def test_the_suggested_lr_trains_better_than_ten_times_more_or_less(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(_text(60000), encoding="utf-8")
    base = [f"data.path={path}", f"out_dir={tmp_path}", *LR_CONFIG]
    res = lr_find("default", overrides=base, out_dir=tmp_path / "lrf")
    assert res.suggested_lr is not None and 1e-5 < res.suggested_lr < 1.0
    assert (tmp_path / "lrf" / "lr_find.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "lrf" / "lr_find.json").read_text())
    assert saved["suggested_lr"] == res.suggested_lr and len(saved["lrs"]) == len(saved["losses"])
    final = {}
    for factor in (0.1, 1.0, 10.0):
        lr = res.suggested_lr * factor
        s = train("default", overrides=[*base, f"optim.lr={lr}", f"name=lr-{factor}"], quiet=True).summary
        final[factor] = s["last_val_loss"]
    assert final[1.0] < final[0.1] and final[1.0] < final[10.0], final


def test_lr_find_refuses_a_range_that_does_not_grow():
    with pytest.raises(ConfigError, match="the range must grow"):
        lr_find("default", start_lr=1.0, end_lr=1e-3, save=False)
