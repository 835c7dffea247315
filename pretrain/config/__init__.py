"""Run configuration: typed dataclasses, YAML files that mirror them, ``section.key=value`` overrides.

``load_config(path, overrides)`` reads a YAML file (a shipped name like ``tiny_clm`` or a path),
applies the overrides and checks types. ``validate(config, world_size)`` then collects every
problem (batch arithmetic, missing files, bad ranges) and raises them all at once, before any
process group starts.
"""

from pretrain.config.loading import load_config, resolve_config_path
from pretrain.config.schema import (
    SHIPPED_CONFIGS,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from pretrain.config.validation import data_prefixes, split_fractions, validate

__all__ = ["SHIPPED_CONFIGS", "Config", "ConfigError", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig",
           "TrainConfig", "data_prefixes", "load_config", "resolve_config_path", "split_fractions", "validate"]
