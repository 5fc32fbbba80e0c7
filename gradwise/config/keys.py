"""Dotted config keys (``optim.lr``), read, written, flattened and compared in one place: overrides, resume
checks, diagnosis advice, validation messages and run comparisons all go through these."""

from __future__ import annotations

import dataclasses
from typing import Any

from gradwise.core.errors import ConfigError

MISSING: Any = object()  # a key the tree does not have


def _tree(config: Any) -> Any:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config


def get_key(config: Any, dotted: str, default: Any = MISSING) -> Any:
    """The value at ``dotted`` in a Config or a plain dict; ``default`` (else KeyError) where it is absent."""
    node = config
    for part in dotted.split("."):
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            if not hasattr(node, part):
                node = MISSING
                break
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            node = MISSING
            break
    if node is MISSING:
        if default is MISSING:
            raise KeyError(dotted)
        return default
    return node


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` in a raw config dict, making the sections on the way (validation comes afterwards)."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.001}} -> {'optim.lr': 0.001}; lists stay values (a Config is read as its dict)."""
    tree = _tree(config)
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
