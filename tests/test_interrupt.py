"""Ctrl-C is answered within a second: quick work is finished and saved, slow work is abandoned at once with
the last checkpoint as it was (written atomically), and the run resumes from it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from gradwise import train
from gradwise.core.checkpoint import read_state
from gradwise.models.gpt import GPT
from gradwise.training.loop import PROMPT_SECONDS
from tests.conftest import TINY


def test_ctrl_c_during_a_slow_step_stops_at_once_and_the_run_resumes(tmp_path: Path, corpus_file: Path,
                                                                     monkeypatch) -> None:
    forward, calls, sent = GPT.forward, {"train": 0}, {}

    def slow_after_20_steps(self, *args, **kwargs):
        if self.training:
            calls["train"] += 1
            if calls["train"] > 20:  # step 21 on: a step of 30 s, far beyond the prompt limit
                if not sent:
                    sent["at"] = time.perf_counter() + 0.3
                    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
                time.sleep(30)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GPT, "forward", slow_after_20_steps)
    overrides = [*TINY, f"data.path={corpus_file}", f"out_dir={tmp_path}", "name=slow", "train.max_steps=100",
                 "train.checkpoint_every=10", "train.eval_every=50", "data.dedupe=false"]
    result = train("default", overrides=overrides, quiet=True)
    waited = time.perf_counter() - sent["at"]
    assert waited < PROMPT_SECONDS, waited  # not the 30 s the step would have taken
    assert result.summary["stopped_because"] == "interrupted"
    assert read_state(tmp_path / "slow" / "checkpoints" / "last")["step"] == 20  # the checkpoint before, intact

    monkeypatch.setattr(GPT, "forward", forward)
    resumed = train(resume=tmp_path / "slow", quiet=True)
    assert resumed.summary["stopped_because"] == "max_steps" and resumed.summary["steps"] == 100
