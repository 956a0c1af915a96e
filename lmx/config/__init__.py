"""The typed config tree of an lmx run.

A config is a frozen dataclass tree (`Config` with one section per concern). A config file is a
Python module that defines `get_config() -> Config`; `load_config(path, overrides)` imports it and
applies dotted overrides such as ``model.d_model=512``, each converted to the field's declared type.
Every construction validates itself, so an invalid config cannot exist; errors are `ConfigError`s
that name the dotted key and the offending value.

Modules: `sections` (the sections), `objective` (the objective union and its registry), `tree`
(`Config`), `convert` (plain data <-> dataclasses, overrides), `files` (config and sweep files).
"""

from lmx.config.convert import apply_overrides, parse_overrides
from lmx.config.files import call_python_file, diff_keys, flatten_keys, load_config
from lmx.config.objective import ObjectiveConfig, PretrainConfig, objective_kinds
from lmx.config.sections import (
    DEFAULT_RULES,
    CheckpointConfig,
    DataConfig,
    Dtype,
    EvalConfig,
    LogConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    SweepConfig,
    TrainConfig,
    WandbConfig,
)
from lmx.config.tree import Config

__all__ = [
    "DEFAULT_RULES",
    "CheckpointConfig",
    "Config",
    "DataConfig",
    "Dtype",
    "EvalConfig",
    "LogConfig",
    "MeshConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "PretrainConfig",
    "SweepConfig",
    "TrainConfig",
    "WandbConfig",
    "apply_overrides",
    "call_python_file",
    "diff_keys",
    "flatten_keys",
    "load_config",
    "objective_kinds",
    "parse_overrides",
]
