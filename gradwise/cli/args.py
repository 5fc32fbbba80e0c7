"""Argument handling the sub-commands share: the config and overrides that --data/--task/--set stand for."""

from __future__ import annotations

import argparse
import json


def config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(config, overrides) from ``config``, ``--set``, ``--data`` and ``--task``; classify without a config file
    (and not resuming a run, whose config is its own) means the 'classify-lstm' preset."""
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={json.dumps(args.data)}")
    config = args.config
    if getattr(args, "task", None):
        overrides.append(f"task={args.task}")
        if args.task == "classify" and config is None and getattr(args, "resume", None) is None:
            config = "classify-lstm"
    return config, overrides


def hf_model_overrides(model: str | None, lora: str | None) -> list[str]:
    """The overrides ``--model hf:DIR`` and ``--lora SPEC`` stand for."""
    from gradwise.core.errors import ConfigError
    from gradwise.hf import hf_path, is_hf_source
    from gradwise.hf.lora import parse_lora

    out = []
    if model is not None:
        if not is_hf_source(model) or not hf_path(model):
            raise ConfigError(f"--model {model}: give hf:DIR, a local Hugging Face model directory")
        out += ["model.arch=hf", f"model.hf_path={json.dumps(hf_path(model))}"]
    if lora is not None:
        out.append(f"model.lora={json.dumps(parse_lora(lora))}")
    return out
