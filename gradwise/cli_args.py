"""Argument handling the sub-commands share: the config and overrides that --data/--task/--set stand for."""

from __future__ import annotations

import argparse
import json


def config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(config, overrides) from ``config``, ``--set``, ``--data`` and ``--task``; classify without a config file
    means the 'classify-lstm' preset, as for ``train``."""
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={json.dumps(args.data)}")
    config = args.config
    if getattr(args, "task", None):
        overrides.append(f"task={args.task}")
        if args.task == "classify" and config is None:
            config = "classify-lstm"
    return config, overrides
