"""`Config`: the whole run, one section per concern, with its JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from lmx.config.convert import apply_overrides, convert, to_plain
from lmx.config.objective import ObjectiveConfig, PretrainConfig
from lmx.config.sections import (
    DATACLASS,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LogConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    SweepConfig,
    TrainConfig,
    fail,
)
from lmx.errors import ConfigError


@dataclasses.dataclass(**DATACLASS)
class Config:
    """The whole run. Sections are passed explicitly to the code that needs them, never globally."""

    name: str = "run"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    # A tagged union: objective.kind selects the dataclass (lmx.config.objective, lmx.objectives).
    objective: ObjectiveConfig = dataclasses.field(default_factory=PretrainConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        if self.data.seq_len > self.model.max_seq_len:
            fail("data", "seq_len", self.data.seq_len, f"exceeds model.max_seq_len={self.model.max_seq_len}")
        if type(self.objective) is ObjectiveConfig:
            raise ConfigError("objective: give an objective's own section (e.g. lmx.config.PretrainConfig)")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        return convert(data, cls, "")

    @classmethod
    def from_json(cls, text: str) -> Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config JSON is malformed: {e}") from None
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> Config:
        """Copy with dotted-key overrides, e.g. ``cfg.replace(**{"model.d_model": 512})``."""
        return apply_overrides(self, overrides)
