"""Parametrizations (``model.parametrization``): how initialisation, forward multipliers and each
parameter's optimizer settings scale with the model's width and depth.

- ``sp``: the standard parametrization, lmx's behaviour before the others existed.
- ``mup``: the maximal-update parametrization for Adam (Yang et al. 2022, Tensor Programs V, Table 8,
  in the form of Microsoft's `mup` package): matrix-like ("hidden") weights start with variance
  proportional to 1/fan_in and train with learning rate / m; the logits are multiplied by 1/m
  (optionally from a zero-initialised output layer); attention logits scale as 1/head_dim, not
  1/sqrt(head_dim); embeddings, norm scales and the output layer keep their init and learning rate.
- ``completep``: CompleteP (Dey et al. 2025, "Don't be lazy"), mup plus depth: each residual branch
  is multiplied by m_L^-alpha; matrix-like weights train with learning rate m_L^(alpha - 1) / m, the
  norm scales inside blocks with m_L^(alpha - 1); AdamW's epsilon is epsilon / (m m_L^alpha) inside
  the blocks and epsilon / m outside (embedding, final norm, output layer), as the authors'
  nanoGPT-mup has it since its fix after arXiv 2512.22382 (LLM Foundry's version scales every
  parameter's epsilon by the depth too). The output projections' depth-scaled initialisation
  (GPT-2's std / sqrt(2 n_layers)) is taken at the base depth: the branch multiplier does that job.

Here m = d_model / base_d_model and m_L = n_layers / base_n_layers. The base model is this one with
every width divided by m: d_model, d_ff and n_heads x head_dim, so each matrix's fan-in multiplier is
m. Widths that do not grow together (a d_ff held fixed while d_model grows) would get rules for a
fan-in that did not change; keep them proportional, as a `LadderRule` ladder does (ModelConfig
checks that the base widths are whole numbers). At the base shape every multiplier is 1 and ``mup``
and ``completep`` compute what ``sp`` computes.

A parameter's class comes from its logical axes, not from its name, so a new layer gets the right
rule from its annotations: two or more width axes make it matrix-like (the `mup` package's "two
infinite dimensions"), fewer make it vector-like. A parameter lies in a residual block when it sits
under the layer stack (``layers``, or ``layer_N`` when unrolled).

Weight decay: lmx's AdamW decays by learning rate x weight_decay x parameter each step (optax.adamw,
like torch's AdamW). Matrix-like weights get weight_decay x m under both ``mup`` and ``completep``, so
their per-step decay stays that of the base width: `mup`'s MuAdamW (``decoupled_wd=False``) and
CompleteP's table do the same.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import ModelConfig

WIDTH_AXES = frozenset({"embed", "mlp", "heads", "kv_heads", "head_dim"})
_BLOCK = re.compile(r"layers|layer_\d+")  # the layer stack, scanned or unrolled


def width_multiplier(cfg: ModelConfig) -> float:
    return cfg.d_model / (cfg.base_d_model or cfg.d_model)


def depth_multiplier(cfg: ModelConfig) -> float:
    return cfg.n_layers / (cfg.base_n_layers or cfg.n_layers)


def is_matrix_like(axes: Sequence[str | None]) -> bool:
    return sum(axis in WIDTH_AXES for axis in axes) >= 2


@dataclasses.dataclass(frozen=True)
class ForwardMultipliers:
    """What the model's forward pass and initialisation take from the parametrization."""

    query: float  # queries are multiplied by this: attention logits scale sqrt(base_head_dim) / head_dim
    readout: float  # logits are multiplied by this
    residual: float  # each residual branch is multiplied by this
    hidden_init: float  # std multiplier of matrix-like weights (variance 1 / fan_in)
    out_init_layers: int  # the depth in the output projections' std / sqrt(2 n_layers)


def forward_multipliers(cfg: ModelConfig) -> ForwardMultipliers:
    if cfg.parametrization == "sp":
        return ForwardMultipliers(1.0, 1.0, 1.0, 1.0, cfg.n_layers)
    m = width_multiplier(cfg)
    completep = cfg.parametrization == "completep"
    return ForwardMultipliers(
        query=math.sqrt((cfg.base_head_dim or cfg.head_dim) / cfg.head_dim),
        readout=1 / m,
        residual=depth_multiplier(cfg) ** -cfg.depth_alpha if completep else 1.0,
        hidden_init=1 / math.sqrt(m),
        out_init_layers=(cfg.base_n_layers or cfg.n_layers) if completep else cfg.n_layers,
    )


def weight_init(cfg: ModelConfig, axes: tuple[str, ...], std: float) -> nn.initializers.Initializer:
    """A normal initialiser with logical `axes`; matrix-like weights get the parametrization's std."""
    if is_matrix_like(axes):
        std *= forward_multipliers(cfg).hidden_init
    return nn.with_logical_partitioning(nn.initializers.normal(stddev=std), axes)


def scaled(x: jax.Array, factor: float) -> jax.Array:
    """`x * factor`, skipped when the factor is 1 so that the base shape computes exactly as ``sp``."""
    return x if factor == 1.0 else x * jnp.asarray(factor, x.dtype)


@dataclasses.dataclass(frozen=True)
class OptimizerFactors:
    """Multipliers of the optimizer's learning rate, weight decay and epsilon for one parameter."""

    learning_rate: float = 1.0
    weight_decay: float = 1.0
    eps: float = 1.0


def optimizer_factors(cfg: ModelConfig, axes: Sequence[str | None], in_block: bool) -> OptimizerFactors:
    """The rule for one parameter with logical `axes`, inside a residual block or not."""
    if cfg.parametrization == "sp":
        return OptimizerFactors()
    m = width_multiplier(cfg)
    matrix = is_matrix_like(axes)
    if cfg.parametrization == "mup":
        return OptimizerFactors(1 / m, m) if matrix else OptimizerFactors()
    m_depth, alpha = depth_multiplier(cfg), cfg.depth_alpha
    if matrix:
        return OptimizerFactors(m_depth ** (alpha - 1) / m, m, 1 / (m * m_depth**alpha))
    if in_block:
        return OptimizerFactors(m_depth ** (alpha - 1), 1.0, 1 / (m * m_depth**alpha))
    return OptimizerFactors(1.0, 1.0, 1 / m)


def path_key(path: Sequence[Any]) -> str:
    """``"layers/attn/query/kernel"``: a parameter's place, the same for boxed and plain trees."""
    return "/".join(str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey))


def logical_axes(model: nn.Module) -> dict[str, tuple[str | None, ...]]:
    """Each parameter's logical axes by `path_key`, from the model's annotations (nothing is
    initialised)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens)["params"])
    leaves = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    return {path_key(path): tuple(leaf.names) if isinstance(leaf, nn.Partitioned) else () for path, leaf in leaves}


def parameter_factors(cfg: ModelConfig, model: nn.Module) -> dict[str, OptimizerFactors] | None:
    """Every parameter's `OptimizerFactors` by `path_key`; None under ``sp`` (one plain optimizer)."""
    if cfg.parametrization == "sp":
        return None
    return {
        key: optimizer_factors(cfg, axes, in_block=any(_BLOCK.fullmatch(part) for part in key.split("/")))
        for key, axes in logical_axes(model).items()
    }


def factor_groups(factors: Mapping[str, OptimizerFactors]) -> dict[OptimizerFactors, str]:
    """A label per distinct set of factors (the optimizer's parameter groups)."""
    return {f: f"group_{i}" for i, f in enumerate(sorted(set(factors.values()), key=dataclasses.astuple))}
