"""The objective section: a tagged union of config dataclasses, one per objective kind.

``objective.kind`` selects which dataclass applies, and each holds only its own fields (an SFT run
has no ``beta``). The dataclasses live with their objectives (`lmx.objectives`); this module keeps
only what the config tree needs to parse them: the base class, the kind -> class table that
objectives register into, and pretraining's (empty) section, the default of every config.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from lmx.config.sections import DATACLASS
from lmx.errors import ConfigError


@dataclasses.dataclass(**DATACLASS)
class ObjectiveConfig:
    """Base of every objective's section. A subclass sets ``KIND`` and adds its own fields; it
    becomes parseable once registered (`lmx.objectives.register`)."""

    SECTION: ClassVar[str] = "objective"
    KIND: ClassVar[str] = ""

    @property
    def kind(self) -> str:
        return self.KIND

    def init_from_run(self) -> str:
        """The run (or checkpoint step directory) whose parameters a run of this objective starts
        from ("" for none): the ``init_from`` field of the objectives that have one."""
        return ""


@dataclasses.dataclass(**DATACLASS)
class PretrainConfig(ObjectiveConfig):
    """Next-token prediction on the prepared corpus (`data` section); no fields of its own."""

    KIND: ClassVar[str] = "pretrain"


# kind -> config class. Filled by `lmx.objectives.register` (importing `lmx.objectives` registers
# the built-in objectives); pretraining's section is the default of every config, so it is here
# from the start.
_CONFIG_CLASSES: dict[str, type[ObjectiveConfig]] = {PretrainConfig.KIND: PretrainConfig}


def register_objective_config(cls: type[ObjectiveConfig]) -> None:
    """Makes ``objective.kind = cls.KIND`` parse into `cls`; a kind belongs to one class."""
    if not cls.KIND:
        raise ValueError(f"{cls.__name__}: an objective config needs a KIND")
    known = _CONFIG_CLASSES.get(cls.KIND)
    # The same class again (its module imported anew, as a config file is on every load) replaces it.
    same = known is not None and (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
    if known is not None and not same:
        raise ValueError(f"objective kind {cls.KIND!r} is already registered by {known.__module__}.{known.__name__}")
    _CONFIG_CLASSES[cls.KIND] = cls


def objective_kinds() -> list[str]:
    return sorted(_CONFIG_CLASSES)


def objective_config_class(kind: str) -> type[ObjectiveConfig]:
    cls = _CONFIG_CLASSES.get(kind)
    if cls is None:
        raise ConfigError(
            f"objective.kind={kind!r}: not a registered objective (registered: {', '.join(objective_kinds())}). "
            "Importing lmx.objectives registers the built-in ones; a custom objective is registered by the "
            "module that defines it, which the config file imports"
        )
    return cls


def objective_fields(cls: type[ObjectiveConfig]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def objective_defaults(cls: type[ObjectiveConfig]) -> dict[str, object]:
    """The default of every field of `cls` (before validation: a required field's empty value)."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(cls)
        if f.init
    }


# The flat objective section every run wrote before objectives became a tagged union (2026-12): all
# kinds' fields side by side. Such a section still loads: the fields its kind does not have were
# unused by that kind, so they are dropped.
LEGACY_FLAT_KEYS = frozenset(
    {
        "kind",
        "init_from",
        "train_files",
        "eval_files",
        "truncation",
        "normalize",
        "loss",
        "beta",
        "label_smoothing",
        "gamma",
        "reference",
        "lm_loss_weight",
    }
)
