"""Sweeps as data: a sweep file's ``get_sweep()`` returns a `Sweep`, a base config and its points.

A `Point` is one run before resolution: dotted-key overrides, the coordinates it sits at, and, for
IsoFLOP profiles, a compute budget from which its step count is derived once the rest of its config
is known (so batch-size sub-sweeps keep the budget). Helpers build points:

- `grid`: the Cartesian product of values of any config keys;
- `LadderRule` / `ModelShape`: model sizes that scale depth, width, heads and MLP together under a
  declared rule, named like ``L6-d384``;
- `isoflop`: every (budget, model) pair of an IsoFLOP profile (Hoffmann et al. 2022, approach 2);
- `cross`: sub-sweeps, e.g. a learning-rate grid at every IsoFLOP point.

Run names are deterministic from the points, so a relaunch finds the runs that already finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmx.config import Config, SweepConfig, call_python_file
from lmx.errors import ConfigError
from lmx.model.flops import (
    DEFAULT_FLOPS_DEFINITION,
    FLOPS_DEFINITIONS,
    FlopsDefinition,
    flops_per_token,
    param_counts,
    tokens_per_step,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep, unresolved. `budget` (training FLOPs) sets ``train.steps`` when given."""

    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    coords: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    budget: float | None = None


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One resolved run: its name and the complete config it trains with."""

    name: str
    config: Config

    @property
    def coords(self) -> dict[str, Any]:
        return dict(self.config.sweep.coords)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A base config and the points that vary it.

    `flops` is the FLOPs definition that budgets, the plan table and the runs' ``params`` coordinate
    use; every run records it as its ``flops_definition`` coordinate. The default, ``executed``, is
    the matmul FLOPs the step performs, the count MFU uses (`lmx.model.flops` says why; its
    ``detailed`` overstates small models and is kept only for sweeps recorded with it).
    `warmup_fraction`, when set, makes each run's warmup that fraction of its own steps (runs of an
    IsoFLOP profile differ in length by orders of magnitude).
    """

    name: str
    base: Config
    points: Sequence[Point]
    flops: FlopsDefinition = DEFAULT_FLOPS_DEFINITION
    warmup_fraction: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"sweep name {self.name!r}: use letters, digits and . _ + = - only")
        if self.flops not in FLOPS_DEFINITIONS:
            raise ConfigError(f"sweep {self.name}: flops={self.flops!r}, expected one of {sorted(FLOPS_DEFINITIONS)}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"sweep {self.name}: warmup_fraction={self.warmup_fraction} must lie in [0, 1)")
        if not self.points:
            raise ConfigError(f"sweep {self.name}: no points")
        seen: set[str] = set()
        for point in self.points:
            if not _NAME.match(point.name):
                raise ConfigError(f"sweep {self.name}: run name {point.name!r}: use letters, digits and . _ + = -")
            if point.name in seen:
                raise ConfigError(f"sweep {self.name}: two runs are named {point.name!r}")
            seen.add(point.name)

    def runs(self) -> list[SweepRun]:
        """Every point resolved into a validated config (errors name the run)."""
        return [self.resolve(point) for point in self.points]

    def resolve(self, point: Point) -> SweepRun:
        try:
            cfg = self.base.replace(**point.overrides)
        except ConfigError as e:
            raise ConfigError(f"sweep {self.name}, run {point.name}: {e}") from None
        coords = dict(point.coords)
        steps = cfg.train.steps
        if point.budget is not None:
            per_step = flops_per_token(cfg.model, cfg.data.seq_len, self.flops) * tokens_per_step(cfg)
            steps = round(point.budget / per_step)
            if steps < 1:
                raise ConfigError(
                    f"sweep {self.name}, run {point.name}: budget {point.budget:.3g} FLOPs is less than half "
                    f"a step ({per_step:.3g} FLOPs); drop this model from the budget or raise the budget"
                )
            coords["budget"] = point.budget
        coords.setdefault("params", param_counts(cfg.model).by_definition(self.flops))
        coords["flops_definition"] = self.flops  # what budgets and ``params`` used; points.py reads it back
        final = {"train.steps": steps, "name": point.name, "log.wandb.group": self.name}
        if self.warmup_fraction is not None:
            final["optim.warmup_steps"] = round(self.warmup_fraction * steps)
        cfg = dataclasses.replace(
            cfg.replace(**final), sweep=SweepConfig(name=self.name, coords=tuple(sorted(coords.items())))
        )
        return SweepRun(point.name, cfg)


# --------------------------------------------------------------------------------------------------
# Building points


def format_value(value: Any) -> str:
    """A value as it appears in a run name: 0.003 -> 3e-3, 1e13 -> 1e13, 64 -> 64."""
    if isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e4:
            return f"{value:g}"
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def grid(axes: Mapping[str, Sequence[Any]], short_names: Mapping[str, str] | None = None) -> list[Point]:
    """The Cartesian product of `axes` (dotted key -> values), one point per combination.

    A point's name joins ``<short><value>`` per key, the short name being the key's last part
    unless `short_names` gives one: ``grid({"optim.learning_rate": [1e-3]}, {"optim.learning_rate": "lr"})``
    names its point ``lr1e-3``.
    """
    short_names = dict(short_names or {})
    keys = list(axes)
    for key in keys:
        if not axes[key]:
            raise ConfigError(f"grid: key {key!r} has no values")
    points = []
    for values in itertools.product(*(axes[k] for k in keys)):
        pairs = list(zip(keys, values, strict=True))
        parts = [f"{short_names.get(k, k.rsplit('.', 1)[-1])}{format_value(v)}" for k, v in pairs]
        points.append(
            Point(
                name="-".join(parts),
                overrides=dict(zip(keys, values, strict=True)),
                coords={short_names.get(k, k): v for k, v in zip(keys, values, strict=True)},
            )
        )
    return points


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """One model size: the ``model.*`` keys a ladder rung sets."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int

    @property
    def name(self) -> str:
        return f"L{self.n_layers}-d{self.d_model}"

    @property
    def overrides(self) -> dict[str, int]:
        return {f"model.{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}

    def point(self) -> Point:
        return Point(
            self.name, self.overrides, {"model": self.name, "n_layers": self.n_layers, "d_model": self.d_model}
        )


@dataclasses.dataclass(frozen=True)
class LadderRule:
    """How depth, heads and MLP follow width.

    - heads of ``head_dim`` each, and ``n_heads // kv_group`` key/value heads (GQA; 1 = MHA);
    - ``d_ff = mlp_ratio * d_model`` rounded up to a multiple of ``multiple_of`` (8/3 keeps a SwiGLU
      MLP at the parameter count of a 4x GELU one);
    - for `ladder`: ``n_layers = d_model / aspect_ratio`` rounded, at least 1 (Kaplan et al. 2020
      found loss nearly flat in the aspect ratio over a wide range, so one fixed ratio is a fair
      one-parameter family).
    """

    head_dim: int = 32
    kv_group: int = 1
    mlp_ratio: float = 8 / 3
    multiple_of: int = 32
    aspect_ratio: float = 32.0

    def __post_init__(self) -> None:
        for name in ("head_dim", "kv_group", "mlp_ratio", "multiple_of", "aspect_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"LadderRule.{name}={getattr(self, name)!r}: must be positive")

    def shape(self, n_layers: int, d_model: int) -> ModelShape:
        if d_model % self.head_dim:
            raise ConfigError(f"ladder: d_model={d_model} is not a multiple of head_dim={self.head_dim}")
        n_heads = d_model // self.head_dim
        if n_heads % self.kv_group:
            raise ConfigError(
                f"ladder: d_model={d_model} gives {n_heads} heads, not divisible by kv_group={self.kv_group}"
            )
        d_ff = self.multiple_of * math.ceil(self.mlp_ratio * d_model / self.multiple_of)
        return ModelShape(n_layers, d_model, n_heads, n_heads // self.kv_group, d_ff)

    def ladder(self, widths: Iterable[int]) -> list[ModelShape]:
        """One rung per width, depth from the aspect ratio."""
        return [self.shape(max(1, round(d / self.aspect_ratio)), d) for d in widths]


def isoflop(budgets: Iterable[float], models: Iterable[ModelShape | Point]) -> list[Point]:
    """Every (budget, model) pair: a point whose steps make its training FLOPs equal the budget
    (derived when the sweep resolves it, under the sweep's FLOPs definition), named
    ``C<budget>-<model>``."""
    models = [m.point() if isinstance(m, ModelShape) else m for m in models]
    points = []
    for budget in budgets:
        if not budget > 0:
            raise ConfigError(f"isoflop: budget {budget!r} must be positive")
        for model in models:
            points.append(
                Point(f"C{format_value(float(budget))}-{model.name}", model.overrides, model.coords, float(budget))
            )
    return points


def cross(outer: Iterable[Point], inner: Iterable[Point]) -> list[Point]:
    """Every outer point combined with every inner one (a sub-sweep per point), named
    ``<outer>-<inner>``; the inner point's overrides and coordinates win where they overlap."""
    inner = list(inner)
    points = []
    for a in outer:
        for b in inner:
            if a.budget is not None and b.budget is not None:
                raise ConfigError(f"cross: both {a.name!r} and {b.name!r} set a budget")
            points.append(
                Point(
                    f"{a.name}-{b.name}",
                    {**a.overrides, **b.overrides},
                    {**a.coords, **b.coords},
                    a.budget if a.budget is not None else b.budget,
                )
            )
    return points


# --------------------------------------------------------------------------------------------------
# Sweep files


def load_sweep(path: str | Path) -> Sweep:
    """Imports a sweep file (a Python module defining ``get_sweep() -> Sweep``)."""
    sweep = call_python_file(path, "get_sweep", "sweep file")
    if not isinstance(sweep, Sweep):
        raise ConfigError(f"{path}: get_sweep() returned {type(sweep).__name__}, expected lmx.scaling.sweep.Sweep")
    return sweep
