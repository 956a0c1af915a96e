"""Logical axis names -> mesh axes -> `NamedSharding`s, for parameters, optimizer state and batches.

The rules table (`MeshConfig.rules`) is the only place that names mesh axes for tensors; changing
how a model is laid out over the devices is a config change, not a code change.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

# (logical axis, mesh axes): mesh axes as a tuple, or Flax's forms (a single name, or None).
Rules = Sequence[tuple[str, Sequence[str] | str | None]]
log = logging.getLogger(__name__)


def axis_names(entry: Sequence[str] | str | None) -> tuple[str, ...]:
    """A rule's or a PartitionSpec entry's mesh axes as a tuple (None: none)."""
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def rules_table(rules: Rules) -> dict[str, tuple[str, ...]]:
    return {logical: axis_names(axes) for logical, axes in rules}


def without_axes(rules: Rules, drop: Collection[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The rules without the mesh axes in `drop` (the manual axes inside a shard_map)."""
    return tuple((logical, tuple(a for a in axis_names(entry) if a not in drop)) for logical, entry in rules)


# The rules that `constrain` applies while a step is traced. lmx keeps its own context rather than
# Flax's `nn.logical_axis_rules`: under that one, Linen re-boxes scanned parameters in `apply` and
# constrains them with the stacked rank (flax 0.12.8), which fails.
_ACTIVE_RULES: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("lmx_rules", default=None)


@contextlib.contextmanager
def activation_rules(rules: Rules) -> Iterator[None]:
    """Makes `constrain` place arrays by `rules` while tracing code inside this block."""
    token = _ACTIVE_RULES.set(tuple(rules))
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


def active_placement(
    names: Sequence[Sequence[str | None]], shapes: Sequence[Sequence[int]]
) -> list[PartitionSpec] | None:
    """PartitionSpecs of arrays with logical axis `names` and `shapes` under `activation_rules` and
    the abstract mesh in context (what `constrain` would place them by); None when either is unset."""
    rules = _ACTIVE_RULES.get()
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty:
        return None
    return [mesh_axes_for(n, shape, mesh, rules) for n, shape in zip(names, shapes, strict=True)]


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names, under `activation_rules` and the abstract mesh in
    context; a no-op when either is unset (plain single-device use)."""
    rules = _ACTIVE_RULES.get()
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, mesh_axes_for(names, x.shape, mesh, rules))


def mesh_axes_for(
    names: Sequence[str | None], shape: Sequence[int], mesh: Mesh | AbstractMesh, rules: Rules
) -> PartitionSpec:
    """The PartitionSpec for one array with logical axis `names` and `shape`.

    A mesh axis is used at most once per array (the first logical axis that claims it wins), and
    mesh axes that do not divide a dimension are dropped from it (that dimension is then replicated
    over them) with a log line: a 2-way tensor axis cannot split a single kv head.
    """
    table = rules_table(rules)
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape, strict=True):
        axes = (
            [a for a in table.get(name, ()) if a in mesh.shape and a not in used and mesh.shape[a] > 1] if name else []
        )
        while axes and size % math.prod(mesh.shape[a] for a in axes):
            dropped = axes.pop()
            log.info("logical axis %r (size %d) is not split over mesh axis %r: not divisible", name, size, dropped)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def shardings_from_boxed(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree whose leaves are `nn.Partitioned` boxes or plain arrays.

    Plain leaves (step counters, RNG keys) are replicated. The result matches `nn.unbox(tree)`.
    """

    def one(leaf: Any) -> NamedSharding:
        if isinstance(leaf, nn.Partitioned):
            spec = mesh_axes_for(leaf.names, leaf.value.shape, mesh, rules)
        else:
            spec = PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, abstract_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_axes(mesh: Mesh, rules: Rules) -> tuple[str, ...]:
    """The mesh axes that split the batch dimension (by the rule for logical axis "batch")."""
    return rules_table(rules).get("batch", ())


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Batches `[B, ...]`: the batch dimension split over the "batch" rule's mesh axes."""
    axes = batch_axes(mesh, rules)
    return NamedSharding(mesh, PartitionSpec(axes if axes else None))


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
    """How many ways the global batch is split: it must divide the batch size."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


def abstract_params(model: nn.Module, mesh: Mesh, rules: Rules, seq_len: int) -> Any:
    """A model's parameters as `jax.ShapeDtypeStruct`s carrying their shardings (targets for a
    checkpoint restore); nothing is initialised."""
    tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    boxed = jax.eval_shape(lambda t: model.init(jax.random.key(0), t)["params"], tokens)
    shardings = shardings_from_boxed(boxed, mesh, rules)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings)
