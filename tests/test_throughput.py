"""Model FLOP/s and MFU on the log lines: the formula, and what a real run records."""

from __future__ import annotations

import json

import pytest
import torch

from gradwise.config.load import load_config
from gradwise.models import build_model
from gradwise.models.cost import model_flops_per_token
from gradwise.training.meter import FlopsMeter, device_peak, measure_matmul_peak
from gradwise.training.run import train


@pytest.mark.parametrize("tie", [True, False])
def test_flops_per_token_is_6n_plus_attention(tie: bool):
    cfg = load_config("default", [f"model.tie_embeddings={str(tie).lower()}", "model.n_layer=3", "model.n_embd=64",
                                  "model.block_size=32"])
    model = build_model(cfg.model, 100)
    total = sum(p.numel() for p in model.parameters())
    n = total - model.wpe.weight.numel() - (0 if tie else model.wte.weight.numel())  # the head counts once
    assert model_flops_per_token(cfg, 100) == 6 * n + 12 * 3 * 64 * 32


def test_meter_and_peak_off_cuda(tmp_path):
    meter = FlopsMeter(1e9, 2e12)
    assert meter.fields(1000.0) == {"model_tflops": 1.0, "mfu": 0.5}
    assert FlopsMeter(1e9, None).fields(1000.0) == {"model_tflops": 1.0}
    assert device_peak(torch.device("cpu"), tmp_path) is None  # no MFU against a guessed CPU peak
    assert device_peak(torch.device("cpu"), tmp_path, 3.5) == 3.5e12
    assert measure_matmul_peak(torch.device("cpu"), n=64, dtype=torch.float32, seconds=0.05) > 0


def test_a_run_logs_model_tflops_and_mfu_against_a_given_peak(tmp_path):
    result = train("default", overrides=[f"out_dir={tmp_path}", "name=mfu", "train.peak_tflops=0.5",
                                         "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=32",
                                         "train.max_steps=20", "train.log_every=10", "train.eval_every=20",
                                         "train.eval_batches=2", "train.batch_size=4", "train.test_eval=false",
                                         "data.check=false"], quiet=True)
    cfg = load_config(result.run_dir / "config.yaml")
    per_token = model_flops_per_token(cfg, result.summary["vocab_size"])
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["kind"] == "train"]
    assert len(logged) == 2
    for r in logged:
        assert r["model_tflops"] == pytest.approx(r["tokens_per_s"] * per_token / 1e12, abs=1e-3)
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * per_token / 0.5e12, abs=1e-4)
