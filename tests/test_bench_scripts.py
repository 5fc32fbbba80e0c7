"""The benchmarks run end to end (small CPU smoke runs): the GPU one works the day a GPU is lent, and the data
check one finds what it plants."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.slow
def test_gpu_throughput_smoke_run_prints_the_table_and_the_loss_match():
    proc = subprocess.run([sys.executable, "gpu_throughput.py", "--smoke"], cwd=BENCH, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| eager fp32 | 2 |" in proc.stdout and "| eager bf16 autocast | 2 |" in proc.stdout
    assert "Loss match over 5 steps" in proc.stdout


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
