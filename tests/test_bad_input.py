"""Bad input gets one line that names the problem and the fix, exit 2, no traceback (issue 21): files that
are not text, sampling parameters outside their domain, search counts that make no sense."""

from __future__ import annotations

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
