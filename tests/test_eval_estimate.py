"""Cheap, honest evaluation: each validation figure carries its standard error, `train.eval_batches: auto`
reads as few fixed windows as the target error allows (the same ones at every later evaluation), and the
evaluation's own seconds are logged apart from training's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gradwise.config.load import load_config
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import read_metrics
from gradwise.inference import evaluate_run
from gradwise.tasks.lm_eval import AUTO_MIN_BATCHES, AUTO_PILOT_BATCHES, auto_eval_batches, standard_error
from gradwise.training.run import train
from tests.conftest import TINY


def test_the_standard_error_is_the_spread_of_batch_means_over_their_number() -> None:
    assert standard_error([(10.0, 5), (10.0, 5), (10.0, 5)]) == 0.0  # the same mean everywhere
    assert math.isnan(standard_error([(3.0, 2)]))  # one batch says nothing of the spread
    # means 1 and 3 with equal weight: variance 1, two batches -> sqrt(1 / (2 - 1)) = 1
    assert standard_error([(4.0, 4), (12.0, 4)]) == pytest.approx(1.0)


def test_auto_reads_what_the_target_needs_and_everything_only_when_it_must() -> None:
    assert auto_eval_batches(0.01, 10, 1.0, 500) == AUTO_MIN_BATCHES  # a loose target: the fewest
    assert auto_eval_batches(0.01, 10, 1e-6, 500) == 500  # a target no subset meets: the whole split
    # s^2 = 0.01^2 x 10 = 1e-3 per batch; 1e-3 x 500 / (0.005^2 x 499 + 1e-3) = 37.1 -> 38
    assert auto_eval_batches(0.01, 10, 0.005, 500) == 38
    assert auto_eval_batches(math.nan, 10, 0.005, 6) == 6  # no error measured: the pilot, capped


def test_a_bad_eval_batches_is_one_line_naming_both_forms() -> None:
    with pytest.raises(ConfigError, match="train.eval_batches must be a whole number or 'auto'"):
        load_config("default", ["train.eval_batches=ten"])
    with pytest.raises(ConfigError, match="train.eval_batches must be a whole number or 'auto'"):
        load_config("default", ["train.eval_batches=null"])  # not a type that admits None
    with pytest.raises(ConfigError, match="train.eval_target_se"):
        load_config("default", ["train.eval_target_se=0"])
    assert load_config("default", ["train.eval_batches=auto"]).train.eval_batches == "auto"


def test_an_auto_run_fixes_its_windows_after_the_first_trained_evaluation(tmp_path: Path, corpus_file: Path) -> None:
    over = [*TINY, f"data.path={json.dumps(str(corpus_file))}", f"out_dir={tmp_path}", "name=auto",
            "train.max_steps=60", "train.eval_every=20", "train.eval_batches=auto", "train.eval_target_se=0.02",
            "train.batch_size=4", "data.check=false"]
    result = train("default", overrides=over, quiet=True)
    evals = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[0]["eval_windows"] == AUTO_PILOT_BATCHES * 4  # step 0: the pilot
    chosen = {r["eval_windows"] for r in evals[1:]}
    assert len(chosen) == 1 and chosen == {result.summary["eval_windows"]}  # then one count, kept
    assert all(math.isfinite(r["val_loss_se"]) and r["eval_s"] >= 0 for r in evals)
    assert math.isfinite(result.summary["test_loss_se"])
    # the subset's figure is within a few target errors of the whole split's, on the best checkpoint
    whole = evaluate_run(result.run_dir, "val").loss
    assert abs(result.summary["best_val_loss"] - whole) < 3 * 0.02
