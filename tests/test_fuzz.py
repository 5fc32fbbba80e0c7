"""Property-based (Hypothesis) checks that every input is answered: a value of any type for any config key, any
text for any flag of the sub-commands, random bytes where a file goes. The property: a valid result or exit
code 2 with one short message (at most 3 lines, no traceback), and every file that existed before unchanged.

CI runs a few dozen cases per property (GRADWISE_FUZZ_EXAMPLES, default 40); ``bench/fuzz.py`` runs thousands
and records how many it tried in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradwise.cli.commands import main
from gradwise.config.keys import flatten, set_key
from gradwise.config.load import build_config, load_config
from gradwise.core.errors import GradwiseError

EXAMPLES = int(os.environ.get("GRADWISE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KEYS = sorted(flatten(load_config("default").to_dict()))
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1e-300, 1e300, -0.0, 2**63]),
    st.text(max_size=12), st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)
FLAG_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["nan", "-inf", "inf", "0", "-1", "1e400", "", "1e-9",
                                                             "9" * 40, "0x10", "1_000", " 3", "--", "-"]))


def _one_short_message(text: str) -> None:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) <= 3 and "Traceback" not in text, text


@FUZZ
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_for_any_config_key_is_a_config_or_one_line(key: str, value: object) -> None:
    data = load_config("default").to_dict()
    set_key(data, key, value)
    try:
        build_config(data)
    except GradwiseError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 600, message


@FUZZ
@given(key=st.sampled_from(KEYS), raw=st.text(max_size=24))
def test_any_text_after_set_is_a_config_or_one_line(key: str, raw: str) -> None:
    try:
        load_config("default", [f"{key}={raw}"])
    except GradwiseError as exc:
        assert "\n" not in str(exc), str(exc)


# Per sub-command: what comes before the fuzzed flag (a missing run, config or study keeps a valid value cheap:
# the command still ends in exit 2, after its flags were checked) and the flags to fuzz.
FLAG_CASES = {
    "generate": (["generate", "no-such-run"], ["--max-new-tokens", "--temperature", "--top-k", "--top-p",
                                               "--num-samples", "--seed", "--checkpoint"]),
    "predict": (["predict", "no-such-run", "--text", "x"], ["--checkpoint", "--device"]),
    "eval": (["eval", "no-such-run"], ["--split", "--checkpoint"]),
    "train": (["train", "no-such-config.yaml"], ["--set", "--task", "--data", "--resume"]),
    "tune": (["tune", "--space", "no-such-space.yaml"], ["--trials", "--timeout", "--workers", "--keep",
                                                         "--max-tokens", "--sampler", "--pruner"]),
    "lr-find": (["lr-find", "no-such-config.yaml"], ["--steps", "--start", "--end"]),
    "plan": (["plan", "no-such-config.yaml", "--no-calibrate"], ["--budget", "--set"]),
    "step": (["step", "--model", "no-such-run", "--text", "x"], ["--lr", "--repeat", "--grad-clip", "--tol",
                                                                  "--optimizer"]),
    "export": (["export", "no-such-run"], ["--format", "--checkpoint", "--out"]),
    "autofit": (["autofit", "no-such-config.yaml", "--budget", "1m"], ["--budget", "--seed", "--name", "--out-dir",
                                                                         "--storage", "--task"]),
}


@pytest.mark.parametrize("command", sorted(FLAG_CASES))
@FUZZ
@given(data=st.data(), value=FLAG_TEXT)
def test_any_text_for_a_flag_is_exit_2_in_one_line(command: str, data: st.DataObject, value: str, capsys,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    before, flags = FLAG_CASES[command]
    flag = data.draw(st.sampled_from(flags), label="flag")
    cwd = tmp_path_factory.mktemp("fuzz")
    with contextlib.chdir(cwd):  # nothing the command might write lands in the repository
        try:
            code = main([*before, f"{flag}={value}"])
        except SystemExit as exc:  # argparse: a value of the wrong type
            code = exc.code
    out, err = capsys.readouterr()
    _one_short_message(err)
    assert code == 2, (command, flag, value, out, err)
    assert not any(cwd.iterdir()), list(cwd.iterdir())  # refused before any work: nothing written


@FUZZ
@given(blob=st.binary(max_size=256))
def test_random_bytes_as_a_config_file_is_one_line_and_the_file_is_unchanged(blob: bytes,
                                                                           tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "my.yaml"
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    try:
        load_config(path)
    except GradwiseError as exc:
        assert "\n" not in str(exc)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@FUZZ
@given(blob=st.binary(max_size=512))
def test_random_bytes_as_a_labelled_file_is_one_line(blob: bytes, tmp_path_factory) -> None:
    from gradwise.data.labelled import read_labelled

    path = tmp_path_factory.mktemp("fuzz") / "texts.jsonl"
    path.write_bytes(blob)
    try:
        texts, labels = read_labelled(path)
    except GradwiseError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(texts) == len(labels) and all(isinstance(t, str) for t in texts)
    assert path.read_bytes() == blob


@FUZZ
@given(text=FLAG_TEXT)
def test_any_budget_is_a_positive_duration_or_one_line(text: str) -> None:
    from gradwise.plan.estimate import budget_seconds

    try:
        seconds = budget_seconds(text)
    except GradwiseError as exc:
        assert "\n" not in str(exc)
    else:
        assert math.isfinite(seconds) and seconds > 0, (text, seconds)


@FUZZ
@given(text=FLAG_TEXT)
def test_any_autofit_budget_is_a_positive_amount_or_one_line(text: str) -> None:
    from gradwise.autofit.budget import parse_budget

    try:
        budget = parse_budget(text)
    except GradwiseError as exc:
        assert "\n" not in str(exc)
    else:
        assert math.isfinite(budget.amount) and budget.amount > 0 and budget.unit in ("seconds", "tokens"), text
