"""The config a ``train`` call runs with: a file, preset or Config plus overrides, or a run to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwise.config.load import (
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    read_config_file,
)
from gradwise.config.schema import Config
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import RunDir

# Keys that must not change when a run is resumed: they decide the data, the model and the state's shape.
FROZEN_ON_RESUME = ("task", "data", "model", "seed", "optim.name")

def resolve_train_config(config: Config | str | Path | None = None, overrides: list[str] | None = None,
                         resume: str | Path | None = None) -> tuple[Config, RunDir | None, str]:
    """The config a ``train`` call runs with, the run it resumes (if any) and a name stem for new runs."""
    overrides = list(overrides or [])
    if resume is None:
        if isinstance(config, Config):
            cfg, stem = (build_config(apply_overrides(config.to_dict(), overrides)) if overrides else config), "run"
        else:
            cfg, stem = load_config(config, overrides), Path(str(config)).stem if config is not None else "default"
        if cfg.model.arch == "hf":  # absolute model path, context fitted to the model (gradwise/hf/causal.py)
            from gradwise.hf.causal import fit_hf_model

            fit_hf_model(cfg, explicit_block_size=any(parse_override(o)[0] == "model.block_size" for o in overrides))
        return cfg, None, stem
    run = RunDir.existing(resume)
    saved = build_config(read_config_file(run.config))
    if config is None:
        cfg = build_config(apply_overrides(saved.to_dict(), overrides))
    elif isinstance(config, Config):
        cfg = build_config(apply_overrides(config.to_dict(), overrides))
    else:
        cfg = load_config(config, overrides)
    for key in FROZEN_ON_RESUME:
        a, b = _lookup(saved, key), _lookup(cfg, key)
        if a != b:
            raise ConfigError(f"{key} differs from the run being resumed ({_short(b)} vs the run's {_short(a)}); "
                              "resume with the run's own config (drop the config file) or start a new run")
    cfg.name, cfg.out_dir = run.path.name, str(run.path.parent)
    return cfg, run, run.path.name


def _lookup(cfg: Config, dotted: str) -> Any:
    node: Any = cfg.to_dict()
    for part in dotted.split("."):
        node = node[part]
    return node


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
