"""Reading a config: YAML/TOML files and presets, dotted ``--set`` overrides, typed conversion.

A config is data, never code: files are read with ``yaml.safe_load`` or ``tomllib``."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from gradwise.config.keys import set_key
from gradwise.config.resolve import derive
from gradwise.config.schema import Config
from gradwise.config.validate import validate
from gradwise.core.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
CLASSIFY_PRESET = "classify-ngram"  # what --task classify trains without a config file
SEQUENCE_CLASSIFY_PRESETS = {"lstm": "classify-lstm", "gpt": "classify-gpt"}  # ... when an override names one
HF_CLASSIFY_PRESET = "classify-hf"  # ... when it names a Hugging Face model (--model hf:DIR, model.arch=hf)


def classify_preset(overrides: list[str]) -> str:
    """The preset ``--task classify`` means without a config file. The n-gram bag was measured best
    (docs/benchmarks.md), but its tokenizer only fits its own arch, so ``--set model.arch=lstm`` (or gpt)
    takes that model's own preset, whose BPE tokenizer and recipe were searched for it: the other
    architectures stay one ``--set`` away."""
    arch = [value for key, value in map(parse_override, overrides) if key == "model.arch"]
    if arch and arch[-1] == "hf":
        return HF_CLASSIFY_PRESET
    return SEQUENCE_CLASSIFY_PRESETS.get(arch[-1], CLASSIFY_PRESET) if arch else CLASSIFY_PRESET


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file (or a preset name) into a plain dict."""
    p = resolve_config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); give a YAML or TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # parser messages are already precise
        raise ConfigError(f"cannot parse {p}: {str(exc).splitlines()[0]}; fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of config keys, not a {type(data).__name__}")
    return data


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESETS_DIR / f"{path}.yaml"
    if p.suffix == "" and preset.is_file():
        return preset
    names = ", ".join(sorted(x.stem for x in PRESETS_DIR.glob("*.yaml")))
    raise ConfigError(f"config file '{path}' not found; give a YAML/TOML path or a preset name ({names})")


def parse_override(text: str) -> tuple[str, Any]:
    """``optim.lr=3e-4`` -> ("optim.lr", 0.0003). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}' must look like KEY=VALUE, for example --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a raw config dict (validation happens afterwards, in :func:`build_config`)."""
    for item in overrides:
        set_key(data, *parse_override(item))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (default preset if None), apply ``--set`` overrides, validate."""
    data = read_config_file(path if path is not None else "default")
    apply_overrides(data, list(overrides or []))
    return build_config(data)


def build_config(data: dict[str, Any]) -> Config:
    cfg = _from_dict(Config, data, "")
    validate(cfg)
    derive(cfg)
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _convert(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _describe_type(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(c) for c in typing.get_args(tp))
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value if value is not None else {}, key + ".")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):  # None only where the type admits it
            return None
        if len(args) == 1:
            return _convert(args[0], value, key)
        for arg in args:  # e.g. int | Literal["auto"]: the first that takes the value
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {' or '.join(_describe_type(a) for a in args)}; got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, for example [0.9, 0.95]; got {value!r}")
        return [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be a whole number; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if tp is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{key} must be text; got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in gradwise, not user input


