"""Autofit's final run: a language model continues from the winner's weights, and a config that stops early
trains the whole rest of the budget at its own evaluation cadence, so the final run's steps and checkpoint are
worth what they cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from gradwise.autofit import autofit  # noqa: E402
from gradwise.autofit.budget import EVALS_PER_RUN, RunCost  # noqa: E402
from gradwise.autofit.candidates import Candidate  # noqa: E402
from gradwise.autofit.final import (  # noqa: E402
    CLOCK_OVERSIZE,
    FINAL_EVALS,
    clock_schedule,
    final_eval_every,
    final_size,
    final_steps,
    horizon_lr,
    measured_cost,
    no_early_stop,
    warm_start,
)
from gradwise.config.load import load_config  # noqa: E402
from gradwise.core.rundir import read_metrics  # noqa: E402

SMALL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16", "train.batch_size=4",
         "data.split_chunks=1", "data.dedupe=false", "data.check=false"]


def _winner(run: Path | None) -> Candidate:
    return Candidate("2.promote.0", {"optim.lr": 0.01}, {}, 72, "1.expand.0", "promoted", "promote",
                     state="complete", score=2.0, run=str(run) if run else None)


def test_a_language_model_starts_from_the_winners_checkpoint_only_when_it_has_one(tmp_path: Path) -> None:
    lm = load_config("default")
    run = tmp_path / "2.promote.0"
    assert warm_start(lm, _winner(run)) == {}  # no run directory here (trained on another machine)
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("task: lm\n", encoding="utf-8")
    assert warm_start(lm, _winner(run)) == {"model.init_from": str(run)}
    assert warm_start(load_config("classify-ngram"), _winner(run)) == {}  # the bag loads no checkpoint


def test_a_config_that_stops_early_trains_its_budget_at_its_cadence_and_the_steps_pay_for_its_evaluations() -> None:
    bag = load_config("classify-ngram")  # patience 4, an evaluation every 50 steps
    lm = load_config("default")  # no early stopping: the rungs' four evaluations
    assert no_early_stop(bag) == {"train.patience": None} and no_early_stop(lm) == {}
    assert final_eval_every(bag, 4000) == bag.train.eval_every
    assert final_eval_every(bag, 120) == 120 // EVALS_PER_RUN  # finer than the config's: the rung's
    assert final_eval_every(bag, 50_000) == 50_000 // FINAL_EVALS  # a long run is read FINAL_EVALS times
    assert final_eval_every(lm, 4000) == lm.train.eval_every  # its own cadence too: its minimum is found
    assert final_eval_every(lm, 400) == 400 // EVALS_PER_RUN  # never fewer than the rungs' four
    cost = RunCost("seconds", fixed=2.0, per_step=0.01, per_eval=0.5)
    rare = final_steps(lm, cost, 100.0)  # an evaluation every 200 steps
    frequent = final_steps(bag, cost, 100.0)  # every 50
    assert frequent < rare < cost.steps_within(100.0)
    for cfg, steps in ((lm, rare), (bag, frequent)):
        evals = -(-steps // final_eval_every(cfg, steps)) + 1
        assert cost.of(steps, evals) <= 100.0  # its evaluations are paid for


def test_a_rate_raised_at_a_short_rung_is_scaled_down_for_the_long_run_never_below_the_start() -> None:
    lm = load_config("default")  # its measured Muon rate, 8e-3
    raised = Candidate("2.promote.0", {"optim.lr": 3.2e-2}, {}, 180, "1.expand.0", "promoted", "promote")
    # The default preset's benchmark: 180 steps of the winner, then 2,263 from its weights.
    assert horizon_lr(lm, raised, 2263, warm=True) == {"optim.lr": pytest.approx(3.2e-2 * (180 / 2443) ** 0.5,
                                                                                  rel=1e-2)}
    cold = horizon_lr(lm, raised, 2263, warm=False)["optim.lr"]  # from scratch: a horizon of 2,263 steps
    assert cold == pytest.approx(3.2e-2 * (180 / 2263) ** 0.5, rel=1e-2)
    short = Candidate("1.expand.0", {"optim.lr": 1e-2}, {}, 20, "0.start", "rule", "rule")
    assert horizon_lr(lm, short, 5000, warm=True) == {"optim.lr": 8e-3}  # the start's rate is the floor
    assert horizon_lr(lm, _winner(None), 5000, warm=True)["optim.lr"] < 0.01
    same = Candidate("1.promote.0", {}, {}, 180, "0.start", "promoted", "promote")
    lowered = Candidate("1.expand.1", {"optim.lr": 2.7e-3}, {}, 180, "0.start", "unstable", "diagnosis")
    assert horizon_lr(lm, same, 2263, warm=True) == {} and horizon_lr(lm, lowered, 2263, warm=True) == {}
    assert horizon_lr(load_config("classify-ngram"), raised, 2263, warm=False) == {}  # it stops early


def test_the_final_run_is_sized_by_the_winners_own_measured_speed(tmp_path: Path) -> None:
    run = tmp_path / "2.expand.0"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"steps": 100, "train_seconds": 12.0, "eval_seconds": 2.0}))
    best = Candidate("2.expand.0", {}, {}, 100, "1.promote.0", "tpe", "tpe", state="complete", cost=12.5,
                     run=str(run), facts={"evaluations": 5})
    cost = measured_cost("seconds", best)
    assert cost is not None and (cost.fixed, cost.per_step, cost.per_eval) == pytest.approx((0.5, 0.1, 0.4))
    evals = 2931 // 200 + 2  # an evaluation every 200 steps (the preset's), step 0 and the last included
    assert final_steps(load_config("default"), cost, 300.0) == int((300.0 - 0.5 - evals * 0.4) / 0.1) == 2931
    assert measured_cost("tokens", best) is None  # a token budget counts tokens, as the probe does
    gone = Candidate("2.expand.1", {}, {}, 100, "1.promote.0", "tpe", "tpe", cost=12.5, run=str(tmp_path / "x"))
    assert measured_cost("seconds", gone) is None  # trained elsewhere: the probe's estimate instead
    lm, probe = load_config("default"), RunCost("seconds", fixed=1.0, per_step=0.2, per_eval=0.5)
    # Under a wall clock: planned beyond the room, which the run's clock (its max_time) enforces as its cost
    steps, expected = final_size(lm, "seconds", best, probe, 1.3, 300.0)  # sized by the winner's own speed
    assert steps == final_steps(lm, cost, 300.0 * CLOCK_OVERSIZE) and expected == 300.0 < cost.of(steps)
    steps, expected = final_size(lm, "seconds", gone, probe, 1.3, 300.0)  # by the probe's, corrected
    assert steps == final_steps(lm, probe, 300.0 * CLOCK_OVERSIZE / 1.3) and expected == 300.0
    steps, expected = final_size(lm, "tokens", best, probe, 1.3, 300.0)  # tokens: no clock, the steps that fit
    assert steps == final_steps(lm, probe, 300.0 / 1.3) and expected == pytest.approx(1.3 * probe.of(steps))
    assert expected <= 300.0
    # nothing is held back for a slower final run: under a wall clock its schedule follows the clock
    assert clock_schedule("seconds") == {"schedule.horizon": "time"} and clock_schedule("tokens") == {}


def test_the_final_run_continues_from_the_winners_best_weights(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 300, encoding="utf-8")
    result = autofit("default", [*SMALL, f"data.path={corpus}"], budget="60000 tokens", out_dir=tmp_path, name="w")
    final_round = next(r for r in result.record["rounds"] if r["stage"] == "final")
    final = final_round["candidates"][0]
    parent = next(c for r in result.record["rounds"] for c in r["candidates"] if c["slot"] == final["parent"])
    assert final["warm_from"] == parent["slot"] and final["overrides"]["model.init_from"] == parent["run"]
    assert "from its weights" in final_round["why"]
    start_lr, won = result.record["base"]["optim"]["lr"], parent["overrides"].get("optim.lr")
    if won is not None and won > start_lr:  # a rate raised at a rung is scaled for the longer run
        assert start_lr <= final["overrides"]["optim.lr"] < won and final["changes"] == {"optim.lr": final[
            "overrides"]["optim.lr"]} and "scaled to" in final_round["why"]
    else:
        assert final["overrides"].get("optim.lr") == won and final["changes"] == {}
    # Its step-0 evaluation is the winner's best checkpoint on the same validation windows.
    first = next(r for r in read_metrics(Path(final["run"]) / "metrics.jsonl") if r.get("kind") == "eval")
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(parent["val"]["loss"], rel=1e-4)
    cfg = json.loads(json.dumps(load_config(str(Path(final["run"]) / "config.yaml")).to_dict()))
    assert cfg["model"]["init_from"] == parent["run"]
