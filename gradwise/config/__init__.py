"""The run's config: a typed tree (``schema``), read from YAML/TOML with dotted overrides (``load``), checked
in one line per problem (``validate``), its dotted keys read and written in one place (``keys``)."""

from gradwise.config.keys import MISSING, flatten, get_key, set_key
from gradwise.config.load import (
    PRESETS_DIR,
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    read_config_file,
    resolve_config_path,
    save_config,
)
from gradwise.config.resolve import derive
from gradwise.config.schema import (
    Config,
    DataConfig,
    LoraSettings,
    ModelConfig,
    ObjectiveConfig,
    ObjectiveTerm,
    OptimConfig,
    RegularizationConfig,
    ScheduleConfig,
    TrainConfig,
    freeze,
    is_frozen,
)
from gradwise.config.validate import default_optimizer, objective_terms, parse_duration, validate

__all__ = ["MISSING", "PRESETS_DIR", "flatten", "get_key", "set_key", "Config", "DataConfig", "LoraSettings", "ModelConfig", "ObjectiveConfig", "ObjectiveTerm",
           "OptimConfig", "RegularizationConfig", "ScheduleConfig", "TrainConfig", "apply_overrides", "build_config", "derive", "freeze", "is_frozen",
           "default_optimizer", "load_config", "objective_terms", "parse_duration", "parse_override",
           "read_config_file", "resolve_config_path", "save_config", "validate"]
