"""The train state and its initialisation straight into its shardings."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from lmx.parallel.rules import Rules, shardings_from_boxed

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything a training run carries from step to step (and saves in a checkpoint)."""

    step: Array  # int32 scalar: updates applied so far
    params: Any
    opt_state: Any
    rng: Array  # uint32 key data (raw, so that checkpoints hold plain arrays); unused by pretraining
    skipped: Array  # int32 scalar: steps whose update was dropped for a non-finite loss or gradient


def _boxed_init_fn(model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int):
    def boxed_init(key_data: Array) -> TrainState:
        init_key, train_key = jax.random.split(jax.random.wrap_key_data(key_data))
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        params = model.init(init_key, tokens)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.key_data(train_key),
            skipped=jnp.zeros((), jnp.int32),
        )

    return boxed_init


def train_state_shapes(
    model: nn.Module, optimizer: optax.GradientTransformation, mesh: Mesh, rules: Rules, seq_len: int
) -> tuple[TrainState, TrainState]:
    """``(abstract, shardings)``: the state's `ShapeDtypeStruct`s (carrying their shardings) and the
    `NamedSharding`s themselves. Enough to restore a checkpoint without initialising anything."""
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    boxed = jax.eval_shape(_boxed_init_fn(model, optimizer, seq_len), key_data)
    shardings = shardings_from_boxed(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings)
    return abstract, shardings


def init_train_state(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    rules: Rules,
    seed: int,
    seq_len: int,
) -> tuple[TrainState, TrainState]:
    """Initialises parameters and optimizer state directly in their shardings.

    The shapes come from `jax.eval_shape` and the shardings from the parameters' logical axes, so
    the jitted initialiser writes every shard on its own device: no full copy on one device first.
    The optimizer state is initialised from the boxed parameters, so its moments inherit the
    parameters' logical axes (a plain `jit(optimizer.init)` would leave them replicated).
    Returns ``(state, shardings)``, the shardings being a TrainState of `NamedSharding`s.
    """
    _, shardings = train_state_shapes(model, optimizer, mesh, rules, seq_len)
    boxed_init = _boxed_init_fn(model, optimizer, seq_len)
    key_data = jax.random.key_data(jax.random.key(seed))
    state = jax.jit(lambda k: nn.unbox(boxed_init(k)), out_shardings=shardings)(key_data)
    return state, shardings


def count_params(params: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
