"""Shared fixtures: an isolated token cache, small corpora, and overrides for tiny fast runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Under pytest-xdist each worker (and every process a test starts) computes on one thread, so the workers
# share the cores instead of fighting over them; a test compares runs made alike, never against a thread count.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# A tiny GPT that trains in a few seconds on 2 CPU cores.
TINY = [
    "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
    "train.batch_size=8", "train.max_steps=40", "train.eval_every=20", "train.eval_batches=4",
    "train.log_every=10", "schedule.warmup_steps=5", "data.split_chunks=1",
]


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test shares one token cache in a temp dir, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("gradwise-cache")
    os.environ["GRADWISE_CACHE"] = str(path)
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    """A small English text (the first topics of the embedded corpus) as a plain file."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics)[:12])
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m gradwise ...` as a user would, capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "gradwise", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not present")
    return path
