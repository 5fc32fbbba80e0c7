"""The options the sub-commands share, each declared once here (config, --data, --task, --set, --device,
--json, --checkpoint), and what --data/--task/--set stand for."""

from __future__ import annotations

import argparse
import json

from gradwise.config.load import CLASSIFY_PRESET, SEQUENCE_CLASSIFY_PRESETS, classify_preset

CONFIG_HELP = "YAML/TOML config file or preset name (default: the 'default' preset)"
DATA_HELP = "corpus (shorthand for --set data.path=PATH)"
TASK_HELP = (f"lm (default) or classify; classify without a config file uses the '{CLASSIFY_PRESET}' preset "
             f"(--set model.arch=lstm or gpt: {' or '.join(repr(p) for p in SEQUENCE_CLASSIFY_PRESETS.values())})")
SET_HELP = "override any config key, e.g. --set optim.lr=3e-4 (repeatable)"


def add_config_options(p: argparse.ArgumentParser, *, config: str | None = CONFIG_HELP, data: str = DATA_HELP,
                       task: str | None = TASK_HELP, overrides: str = SET_HELP) -> None:
    """The positional config and --data, --task, --set: what a command trains, plans or checks (None leaves one
    out)."""
    if config is not None:
        p.add_argument("config", nargs="?", help=config)
    p.add_argument("--data", metavar="PATH", help=data)
    if task is not None:
        add_task(p, task)
    add_overrides(p, overrides)


def add_task(p: argparse.ArgumentParser, help: str = TASK_HELP) -> None:
    p.add_argument("--task", choices=["lm", "classify"], help=help)


def add_overrides(p: argparse.ArgumentParser, help: str = SET_HELP) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_device(p: argparse.ArgumentParser, help: str = "auto, cpu, cuda, cuda:N") -> None:
    p.add_argument("--device", default="auto", help=help)


def add_json(p: argparse.ArgumentParser, help: str = "print the result as JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint (default best)")


def config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(config, overrides) from ``config``, ``--set``, ``--data`` and ``--task``; classify without a config file
    (and not resuming a run, whose config is its own) means the classify preset for the arch the overrides name."""
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={json.dumps(args.data)}")
    config = args.config
    if getattr(args, "task", None):
        overrides.append(f"task={args.task}")
        if args.task == "classify" and config is None and not getattr(args, "resume", None):
            config = classify_preset(overrides)
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
