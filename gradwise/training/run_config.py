"""The config a ``train`` call runs with: a file, preset or Config plus overrides, or a run to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradwise.config.keys import get_key
from gradwise.config.load import (
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    read_config_file,
)
from gradwise.config.schema import Config, freeze
from gradwise.core.errors import ConfigError
from gradwise.core.rundir import RunDir
from gradwise.hf.causal import fit_hf_model
from gradwise.hf.classifier import meta_classifier
from gradwise.hf.model import fit_lora_targets
from gradwise.tasks.init_from import adopt_init_config

# Keys that must not change when a run is resumed: they decide the data, the model and the state's shape.
FROZEN_ON_RESUME = ("task", "data", "model", "seed", "optim.name")

def resolve_train_config(config: Config | str | Path | None = None, overrides: list[str] | None = None,
                         resume: str | Path | None = None) -> tuple[Config, RunDir | None, str]:
    """The config a ``train`` call runs with, the run it resumes (if any) and a name stem for new runs.

    Resolution happens once, here: the file or Config with its overrides is validated and its derived keys
    computed (gradwise.config), a Hugging Face model's path and context are fitted, an ``init_from`` source's
    shape and tokenizer keys are taken over, a resumed run keeps its name; then the config is frozen. Every
    later stage reads it, none rewrites it, and the run's config.yaml is this object. A Config passed in is
    copied, never changed."""
    overrides = list(overrides or [])
    if resume is None:
        if isinstance(config, Config):
            cfg, stem = build_config(apply_overrides(config.to_dict(), overrides)), "run"
        else:
            cfg, stem = load_config(config, overrides), Path(str(config)).stem if config is not None else "default"
        if cfg.model.arch == "hf":  # absolute model path, context fitted to the model (gradwise/hf/causal.py)
            fit_hf_model(cfg, explicit_block_size=any(parse_override(o)[0] == "model.block_size" for o in overrides))
            if cfg.task == "classify":  # an architecture without a classification head: refused before any work
                meta_classifier(cfg.model.hf_path)
            fit_lora_targets(cfg.model, classify=cfg.task == "classify")
        adopt_init_config(cfg)
        return freeze(cfg), None, stem
    run = RunDir.existing(resume)
    saved = build_config(read_config_file(run.config))
    if config is None:
        cfg = build_config(apply_overrides(saved.to_dict(), overrides))
    elif isinstance(config, Config):
        cfg = build_config(apply_overrides(config.to_dict(), overrides))
    else:
        cfg = load_config(config, overrides)
    for key in FROZEN_ON_RESUME:
        a, b = get_key(saved.to_dict(), key), get_key(cfg.to_dict(), key)
        if a != b:
            raise ConfigError(f"{key} differs from the run being resumed ({_short(b)} vs the run's {_short(a)}); "
                              "resume with the run's own config (drop the config file) or start a new run")
    cfg.name, cfg.out_dir = run.path.name, str(run.path.parent)
    return freeze(cfg), run, run.path.name


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
