"""Labelled data that cannot make an honest classifier is refused in one line, exit 2, before any run directory
is made: a record without its label, a text that is not a string, a class too rare for every split, and a
resume on data whose labels the run never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_classify import make_dataset


def _with_record(tmp_path: Path, record: dict) -> Path:
    path = make_dataset(tmp_path / "topics.jsonl", n=60)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize(("record", "message"), [
    ({"text": "no label on this one"}, "topics.jsonl:61 has no single label in field 'label'"),
    ({"text": 12345, "label": "cooking"}, "topics.jsonl:61 has no text in field 'text'"),
    ({"text": "a lonely kind of text", "label": "poetry"}, "class 'poetry' has 1 record: every class needs at least 3"),
], ids=["missing label", "text not a string", "a class of one"])
def test_labelled_data_that_cannot_be_trained_on_is_one_line(record: dict, message: str, tmp_path: Path) -> None:
    data = _with_record(tmp_path, record)
    proc = run_cli("train", "--task", "classify", "--data", str(data), "--set", f"out_dir={tmp_path / 'runs'}",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradwise: error: ") and message in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_a_resume_on_data_with_labels_the_run_never_saw_is_one_line(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "topics.jsonl", n=60)
    proc = run_cli("train", "--task", "classify", "--data", str(data), "--set", f"out_dir={tmp_path}", "--name", "r",
                   "--set", "train.max_steps=20", "--set", "train.eval_every=10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    last = (tmp_path / "r" / "checkpoints" / "last" / "model.safetensors").read_bytes()
    with data.open("a") as fh:  # the same file, now with a fourth class
        for i in range(5):
            fh.write(json.dumps({"text": f"verse and rhyme number {i}", "label": "poetry"}) + "\n")
    again = run_cli("train", "--resume", str(tmp_path / "r"), "--set", "train.max_steps=40", cwd=tmp_path)
    assert again.returncode == 2, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "poetry" in lines[0] and "were not in the run's training data" in lines[0], lines
    assert (tmp_path / "r" / "checkpoints" / "last" / "model.safetensors").read_bytes() == last  # untouched
