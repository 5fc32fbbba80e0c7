"""train.ema: a moving average of the weights is what validation, the best checkpoint and so the test score
see, while training goes on with the raw weights; a resumed run continues the same average bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gradwise import train
from gradwise.config.load import load_config
from gradwise.core.checkpoint import read_trainer_tensors
from gradwise.core.errors import ConfigError
from gradwise.training.averaging import PREFIX, WeightAverage
from tests.test_classify import make_dataset

SMALL = ["train.batch_size=16", "train.max_steps=60", "train.eval_every=20", "train.log_every=10",
         "train.patience=null", "model.block_size=512", "schedule.name=constant", "schedule.warmup_steps=5",
         "train.ema=0.9"]


def test_the_average_follows_the_ema_rule_swaps_in_and_out_and_round_trips() -> None:
    model = nn.Linear(3, 2)
    avg = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    avg.update(model)  # the first update takes the weights as they are
    with torch.no_grad():
        model.weight.fill_(2.0)
    avg.update(model)
    expected = 0.9 * 1.0 + 0.1 * 2.0
    with avg.swapped_into(model):
        assert torch.allclose(model.weight, torch.full((2, 3), expected))
    assert torch.equal(model.weight, torch.full((2, 3), 2.0))  # the trained weights are back
    again = WeightAverage(nn.Linear(3, 2), 0.9)
    assert again.load_state_tensors(avg.state_tensors()) and not again.load_state_tensors({"other": torch.ones(1)})
    assert torch.equal(again.averaged.module.weight, avg.averaged.module.weight)
    assert int(again.averaged.n_averaged) == 2


def test_the_best_checkpoint_holds_the_average_and_resume_continues_it_exactly(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=240)
    base = [*SMALL, f"data.path={data}", f"out_dir={tmp_path}"]
    whole = train("classify-ngram", overrides=[*base, "name=whole"], quiet=True)
    s = whole.summary
    assert s["best_step"] == 60 and s["test_macro_f1"] >= 0.9  # it learned, and its last evaluation was its best
    ckpt = whole.run_dir / "checkpoints"
    best, raw = load_file(ckpt / "best" / "model.safetensors"), load_file(ckpt / "last" / "model.safetensors")
    average = {k[len(PREFIX + "module."):]: v for k, v in read_trainer_tensors(ckpt / "last").items()
               if k.startswith(PREFIX + "module.")}
    assert set(best) <= set(average) and all(torch.equal(best[k], average[k]) for k in best)  # evaluated: the average
    assert any(not torch.equal(best[k], raw[k]) for k in best)  # trained on: the raw weights

    half = train("classify-ngram", overrides=[*base, "name=half", "train.max_steps=30"], quiet=True)
    resumed = train(overrides=["train.max_steps=60"], resume=half.run_dir, quiet=True)
    assert resumed.summary["best_val_loss"] == s["best_val_loss"]
    for part in ("best", "last"):
        a = load_file(ckpt / part / "model.safetensors")
        b = load_file(half.run_dir / "checkpoints" / part / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), part  # bit for bit: the same average, the same raw weights


@pytest.mark.parametrize("overrides, fragment", [
    (["train.ema=1.5"], "train.ema is the decay of the weights' moving average, between 0 and 1"),
    (["train.ema=0.99", "train.parallel=fsdp"], "train.ema keeps a whole copy of the weights, which FSDP shards"),
])
def test_a_bad_ema_is_one_line(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config("default", overrides)
