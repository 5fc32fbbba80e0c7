"""Configs: typed loading, dotted overrides, and one-line errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradwise.config.load import apply_overrides, build_config, load_config, save_config
from gradwise.config.schema import Config
from gradwise.config.validate import parse_duration
from gradwise.core.errors import ConfigError
from tests.conftest import REPO, run_cli


def test_default_preset_loads_and_validates() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.data.path is None  # the embedded corpus
    assert cfg.model.n_embd % cfg.model.n_head == 0


def test_shakespeare_preset_is_the_classic_baseline() -> None:
    cfg = load_config(REPO / "configs" / "shakespeare-char-cpu.yaml")
    m, t, o, s = cfg.model, cfg.train, cfg.optim, cfg.schedule
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (t.batch_size, t.max_steps, t.eval_every) == (12, 2000, 250)
    assert (o.name, o.lr, o.betas[1], s.warmup_steps, s.name, s.min_lr) == ("adamw", 1e-3, 0.99, 100, "cosine", 1e-4)


def test_the_fast_shakespeare_preset_keeps_the_baselines_data_and_validation_characters() -> None:
    """Only the recipe may differ from shakespeare-char-cpu: the same corpus layout, tokenizer, split and model
    size, so the two are scored on the same characters (bench/cpu_time_to_quality.py)."""
    fast, cpu = load_config("shakespeare-char-fast"), load_config("shakespeare-char-cpu")
    assert fast.data == cpu.data and (fast.model.n_layer, fast.model.n_embd) == (cpu.model.n_layer, cpu.model.n_embd)
    assert (fast.model.pos, fast.model.qk_norm, fast.optim.name, fast.train.eval_batches) == ("rope", True, "muon",
                                                                                             "auto")


def test_dotted_overrides_parse_values_as_yaml() -> None:
    cfg = load_config("default", ["optim.lr=3e-4", "model.n_layer=6", "optim.betas=[0.9, 0.95]",
                                  "train.max_time=10m", "data.path=corpus.txt"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string: still a float here
    assert cfg.model.n_layer == 6
    assert cfg.optim.betas == [0.9, 0.95]
    assert parse_duration(cfg.train.max_time) == 600
    assert cfg.data.path == "corpus.txt"


@pytest.mark.parametrize("overrides, fragment", [
    (["model.n_layers=6"], "unknown config key 'model.n_layers'; did you mean 'model.n_layer'?"),
    (["optim.lr=-1"], "optim.lr must be a positive number"),
    (["optim.lr=fast"], "optim.lr must be a number"),
    (["model.n_embd=100", "model.n_head=3"], "model.n_embd (100) must be divisible by model.n_head (3)"),
    (["model.n_layer=two"], "model.n_layer must be a whole number"),
    (["train.compile=yes please"], "train.compile must be true or false"),
    (["train.compile_mode=fastest"], "train.compile_mode must be one of default, reduce-overhead, max-autotune"),
    (["optim.name=adamax"], "optim.name must be one of auto, adamw, adam, sgd"),
    (["data.split=[0.5, 0.5]"], "data.split must be three positive fractions"),
    (["train.max_time=soon"], "train.max_time must be a duration"),
    (["schedule.horizon=time"], "schedule.horizon=time follows the clock of train.max_time, which is not set"),
    (["schedule.horizon=tokens"], "schedule.horizon must be one of steps, time"),
    (["schedule.min_lr=1.0"], "schedule.min_lr (1.0) must not exceed optim.lr"),
    (["model.dropout=1.5"], "model.dropout must be in [0, 1)"),
    (["train.batch_size=0"], "train.batch_size must be at least 1"),
    (["name=../escape"], "name must use letters, digits"),
])
def test_bad_values_give_one_line_naming_the_key(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("default", overrides)
    message = str(exc.value)
    assert fragment in message
    assert "\n" not in message


def test_override_needs_key_value() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])


def test_missing_config_file_names_presets() -> None:
    with pytest.raises(ConfigError, match="not found.*shakespeare-char-cpu"):
        load_config("no-such-config.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config("shakespeare-char-cpu", ["optim.lr=5e-4"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_toml_configs_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nn_layer = 3\n[optim]\nlr = 5e-4\n')
    cfg = load_config(path)
    assert cfg.model.n_layer == 3 and cfg.optim.lr == 5e-4


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: {n_layer: 3\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(path)


def test_section_given_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="model must be a mapping"):
        build_config({"model": 3})


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback() -> None:
    proc = run_cli("train", "--set", "model.n_layers=6")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["gradwise: error: unknown config key 'model.n_layers'; did you mean 'model.n_layer'?"]


def test_cli_error_line_is_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun every rank writes its error to one stderr at once: a line in two writes (text, then the
    newline) lets two ranks' lines run together, so the line and its newline go out in one write."""
    from gradwise import cli

    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            writes.append("<flush>")

    monkeypatch.setattr("sys.stderr", Recorder())
    assert cli.main(["train", "--set", "model.n_layers=6"]) == 2
    assert writes == ["gradwise: error: unknown config key 'model.n_layers'; did you mean 'model.n_layer'?\n",
                      "<flush>"]


def test_a_resolved_config_is_frozen_and_the_callers_config_is_left_alone() -> None:
    """Issue 18: resolution computes every derived value once, then nothing rewrites the config."""
    import dataclasses

    from gradwise.config import Config, build_config, is_frozen
    from gradwise.training.run_config import resolve_train_config

    mine = build_config({"model": {"arch": "gpt"}, "train": {"tokens_per_step": 8192, "batch_size": 4},
                         "optim": {"name": "auto"}})
    assert (mine.optim.name, mine.train.grad_accum) == ("muon", 16)  # derived once, at build time
    cfg, _, _ = resolve_train_config(mine, ["optim.lr=0.01"])
    assert is_frozen(cfg) and not is_frozen(mine) and mine.optim.lr != 0.01  # a copy; the caller's is untouched
    with pytest.raises(dataclasses.FrozenInstanceError, match="resolved and frozen"):
        cfg.optim.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.objective.terms = []
    again = build_config(cfg.to_dict())  # a new config from a frozen one is an ordinary, open one
    again.optim.lr = 1.0
    assert isinstance(again, Config) and cfg.optim.lr == 0.01


def test_validation_is_pure() -> None:
    from gradwise.config import Config, validate

    cfg = Config()
    cfg.train.tokens_per_step, cfg.optim.name = 4 * cfg.train.batch_size * cfg.model.block_size, "auto"
    before = cfg.to_dict()
    validate(cfg)
    assert cfg.to_dict() == before
