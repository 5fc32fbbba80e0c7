"""The benchmarks run end to end (small CPU smoke runs): the GPU one works the day a GPU is lent, and the data
check one finds what it plants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
def test_gpu_throughput_smoke_run_prints_the_table_and_the_loss_match(tmp_path):
    rows = tmp_path / "rows.jsonl"
    proc = subprocess.run([sys.executable, "gpu_throughput.py", "--smoke", "--jsonl", str(rows)], cwd=BENCH,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| eager fp32 | 2 |" in proc.stdout and "| eager bf16 autocast | 2 |" in proc.stdout
    assert "| bf16 + fused AdamW + compile + chunked CE + fp8 | 2 |" in proc.stdout  # every lever's row runs
    assert "failed" not in proc.stdout
    assert "Loss match over 5 steps" in proc.stdout
    # rows written as they are measured merge back into the same table (a GPU session split over calls)
    merged = subprocess.run([sys.executable, "gpu_throughput.py", "--merge", str(rows)], cwd=BENCH,
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert [ln for ln in merged.stdout.splitlines() if ln.startswith("| ")] == table
    assert "Loss match over 5 steps" in merged.stdout


def test_gpu_throughput_without_a_gpu_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "gpu_throughput.py"], cwd=BENCH, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


@pytest.mark.slow
def test_data_check_bench_finds_its_planted_copies_on_a_small_corpus():
    proc = subprocess.run([sys.executable, "data_check.py", "--mb", "2"], cwd=BENCH, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| 2 MB generated |" in proc.stdout and "have a copy in train" in proc.stdout


def test_a_lever_that_fails_becomes_a_row_that_says_why(monkeypatch):
    """GPU time is scarce: one lever's failure (a compile mode this torch cannot do) costs only its own row."""
    import argparse

    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_throughput

    def broken(*_args, **_kwargs):
        raise RuntimeError("CUDA graphs: an output was overwritten\nsecond line of the story")

    monkeypatch.setattr(gpu_throughput, "measure", broken)
    row = gpu_throughput.measure_or_say_why("lever", [], 32, 50304, argparse.Namespace(), torch.device("cpu"), None)
    assert row.failed == "RuntimeError: CUDA graphs: an output was overwritten"
    assert "| lever | 32 | failed: RuntimeError: CUDA graphs: an output was overwritten |" in "\n".join(
        gpu_throughput.table([row]))
    assert gpu_throughput.parse_levers("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(SystemExit, match="no lever 99"):
        gpu_throughput.parse_levers("99")
