"""Bad input gets one line that names the problem and the fix, exit 2, no traceback (issue 21): files that
are not text, sampling parameters outside their domain, search counts that make no sense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradwise.api import generate_text, tune
from gradwise.core.errors import ConfigError, GradwiseError
from tests.conftest import run_cli


def test_a_config_file_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x00\xff\xfe\x89PNG not text")
    proc = run_cli("train", str(binary), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"gradwise: error: config file {binary} is not UTF-8 text (byte 0xff at offset 1); give a YAML or TOML file"]
    assert not (tmp_path / "runs").exists()  # refused before any work


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"temperature": -1.0}, "--temperature must be a number >= 0"),
    ({"temperature": float("nan")}, "--temperature must be a number >= 0"),
    ({"top_k": 0}, "--top-k must be at least 1"),
    ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
    ({"max_new_tokens": 10**12}, "beyond one call's ceiling of 1,000,000 tokens"),
])
def test_sampling_parameters_outside_their_domain_are_refused_before_loading(kwargs: dict, message: str,
                                                                             tmp_path: Path) -> None:
    with pytest.raises(GradwiseError, match=message):
        generate_text(tmp_path / "no-run-needed", **kwargs)  # refused before the run is even looked for


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"trials": 0}, "--trials must be at least 1; got 0"),
    ({"trials": -3}, "--trials must be at least 1; got -3"),
    ({"max_tokens": 0}, "--max-tokens must be at least 1"),
    ({"timeout": 0.0, "trials": 2}, "--timeout must be a positive duration"),
])
def test_search_counts_that_make_no_sense_are_refused(kwargs: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        tune("default", {"optim.lr": [1e-3, 2e-3]}, sampler="random", out_dir=tmp_path / "studies", **kwargs)
    assert not (tmp_path / "studies").exists()


def _run_with_damaged_metrics(root: Path) -> Path:
    """A run directory whose metrics.jsonl has good records around a cut-short line, a number, and binary noise."""
    from gradwise.config.load import load_config, save_config

    run = root / "damaged"
    run.mkdir()
    save_config(load_config("default"), run / "config.yaml")
    good = [{"kind": "eval", "step": s, "val_loss": 3.0 - s / 100} for s in (0, 20, 40, 60)]
    lines = [json.dumps(good[0]).encode(), json.dumps(good[1]).encode(), b'{"kind": "train", "st', b"7",
             b"\x00\xff\xfe garbage", json.dumps(good[2]).encode(), b"", json.dumps(good[3]).encode()]
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return run


def test_a_damaged_metrics_log_is_read_with_the_skipped_lines_named(tmp_path: Path) -> None:
    run = _run_with_damaged_metrics(tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    diag = run_cli("diagnose", str(run))
    assert diag.returncode == 0 and "Traceback" not in diag.stderr, diag.stderr
    assert "skipped 3 damaged line(s) that are not JSON records (line 3, 4, 5)" in diag.stdout
    assert "4 evaluations" in diag.stdout  # the good records around them still count

    page = run_cli("report", str(run), "--out", str(tmp_path / "page.html"))
    assert page.returncode == 0 and "Traceback" not in page.stderr, page.stderr
    assert "skipped 3 damaged line(s)" in (tmp_path / "page.html").read_text()
    assert (run / "metrics.jsonl").read_bytes() == before  # reading never rewrites the log


def test_a_damaged_trials_file_is_one_line(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "s"
    study.mkdir(parents=True)
    (study / "trials.json").write_bytes(b'[{"number": 0, "state": "COMPL')
    proc = run_cli("tune-report", str(study))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trials.json is damaged" in lines[0] and "--resume" in lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--set", "out_dir=taken", "--set", "train.max_steps=2"], "lies under taken, which is a file"),
    (["lr-find", "--out", "taken"], "--out taken is a file"),
    (["tune", "--space", "space.yaml", "--out-dir", "taken", "--trials", "1"], "lies under taken, which is a file"),
    (["report", "run", "--out", "."], "--out . is a directory; give a file name"),
])
def test_an_output_path_that_is_taken_is_one_line_before_any_work(args: list[str], message: str,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("my notes\n")
    (tmp_path / "space.yaml").write_text("optim.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    if args[0] == "report":
        _run_with_damaged_metrics(tmp_path).rename(tmp_path / "run")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert (tmp_path / "taken").read_text() == "my notes\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "studies").exists()
