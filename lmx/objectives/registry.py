"""The objectives registry: ``objective.kind`` -> `Objective`.

`register` makes an objective trainable and its config section parseable (``objective.kind``,
``--set objective.FIELD=...``, config.json), from lmx or from a user's own module: nothing in lmx
lists the kinds. Importing `lmx.objectives` registers the built-in ones.
"""

from __future__ import annotations

from lmx.config import Config
from lmx.config.objective import objective_kinds, register_objective_config
from lmx.errors import ConfigError
from lmx.objectives.base import Objective

_OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Registers `objective` under its config class's KIND (re-registering the same one is a no-op)."""
    register_objective_config(objective.config_class)
    _OBJECTIVES[objective.kind] = objective
    return objective


def get_objective(kind: str) -> Objective:
    objective = _OBJECTIVES.get(kind)
    if objective is None:
        raise ConfigError(
            f"objective.kind={kind!r}: no objective registered under that name (registered: "
            f"{', '.join(sorted(_OBJECTIVES))}); a custom objective is registered by the module that defines it"
        )
    return objective


def objective_of(cfg: Config) -> Objective:
    """The objective that `cfg`'s objective section belongs to."""
    return get_objective(cfg.objective.kind)


__all__ = ["get_objective", "objective_kinds", "objective_of", "register"]
