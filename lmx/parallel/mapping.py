"""The pmap-style mapping every step uses, and how batches are split over the mesh.

A per-shard function sees its slice of the batch along the data-parallel mesh axis, computes
*sums* (losses, gradients, counts), and adds them across shards with an explicit `lax.psum`. It is
mapped with `jax.shard_map` with only the "data" axis manual: the model-parallel axes (fsdp, tensor)
stay automatic and follow the parameters' sharding annotations. Training (`lmx.train.steps`),
objective evaluation (`lmx.objectives`) and inference (`lmx.infer`) all map through here.

Why sums and psum rather than a pmean of per-shard means: with packing, padding or loss masks the
shards hold different numbers of target tokens, and a mean of means would weight them wrongly.
Summing over shards (and micro-batches), then dividing once, gives the exact global mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.config import Config
from lmx.errors import ClusterError, ConfigError
from lmx.parallel.rules import Rules, activation_rules, constrain, without_axes

Array = jax.Array
Batch = Mapping[str, Array]

DATA_AXIS = "data"


def sharded_sums(fn: Callable[..., Any], mesh: Mesh, rules: Rules) -> Callable[..., Any]:
    """Maps ``fn(params, batch_shard[, frozen]) -> sums`` over the mesh's data axis and psums its
    outputs. The result is called as ``(params, batch, frozen=None)``; `frozen` (e.g. a reference
    model's parameters), like `params`, is sharded by the automatic axes only and reaches `fn` as a
    third argument when it is not None.

    The pmap-style core of every step: each data shard runs `fn` on its rows, and the outputs (a
    pytree of sums) are added across shards. Trace the result under
    ``jax.sharding.use_abstract_mesh(mesh.abstract_mesh)`` (or ``jax.set_mesh`` outside jit) so
    that the model's sharding constraints see the mesh.
    """
    # Inside the map "data" is manual: constraints may only name the automatic axes.
    inner_rules = without_axes(rules, {DATA_AXIS})
    data_size = mesh.shape[DATA_AXIS]

    def per_shard(params: Any, batch: Batch, frozen: Any = None) -> Any:
        extra = () if frozen is None else (frozen,)
        with activation_rules(inner_rules):
            # Split this shard's rows over the automatic batch axes (fsdp) here, inside the map:
            # a batch that arrives already split over ("data", "fsdp") aborts XLA's Shardy
            # partitioner together with the optimizer update (jax 0.10.2, docs/ARCHITECTURE.md).
            batch = jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), batch)
            sums = fn(params, batch, *extra)
        # check_vma=False below: gradients of the replicated params are per-shard here, so the
        # collective is explicit (with check_vma=True JAX would already have summed them).
        return jax.lax.psum(sums, DATA_AXIS) if data_size > 1 else sums

    if data_size == 1:
        # One data shard: the map and its collective are identities. Skipping them also avoids an
        # XLA error on partially manual maps over a size-1 axis (jax 0.10.2, docs/ARCHITECTURE.md).
        return per_shard
    mapped = jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(),
        axis_names={DATA_AXIS},
        check_vma=False,
    )
    return lambda params, batch, frozen=None: mapped(params, batch, frozen)


def sharded_rows(fn: Callable[..., Any], mesh: Mesh, rules: Rules) -> Callable[..., Any]:
    """Maps ``fn(params, batch_shard[, frozen]) -> per-row outputs`` over the mesh's data axis, like
    `sharded_sums` but without the sum: each output keeps its leading batch axis, split over the
    data axis as the batch is (per-row log-probs of a forward without gradients, say)."""
    inner_rules = without_axes(rules, {DATA_AXIS})

    def per_shard(params: Any, batch: Batch, frozen: Any = None) -> Any:
        extra = () if frozen is None else (frozen,)
        with activation_rules(inner_rules):
            batch = jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), batch)
            return fn(params, batch, *extra)

    if mesh.shape[DATA_AXIS] == 1:
        return per_shard  # as in `sharded_sums`: no map over a size-1 axis
    mapped = jax.shard_map(
        per_shard,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(DATA_AXIS),
        axis_names={DATA_AXIS},
        check_vma=False,
    )
    return lambda params, batch, frozen=None: mapped(params, batch, frozen)


def step_batch_sharding(mesh: Mesh) -> NamedSharding:
    """How a step takes its batch: rows split over the data axis (the map splits them further)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def process_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a global batch that this process's devices hold under
    `sharding`: the only rows it reads (`jax.make_array_from_process_local_data` takes them).

    Several processes may hold the same rows (a batch replicated over fsdp hosts); one process
    holds all of them in a one-process run. Raises ClusterError when its rows are not one block.
    """
    blocks = sorted(
        {
            (i[0].start or 0, global_batch if i[0].stop is None else i[0].stop)
            for i in sharding.addressable_devices_indices_map((global_batch,)).values()
        }
    )
    start, stop = blocks[0][0], blocks[-1][1]
    if sum(b - a for a, b in blocks) != stop - start:  # a gap (or an overlap) between the blocks
        raise ClusterError(
            f"process {jax.process_index()} holds the batch rows {blocks} of {global_batch}, not one block; "
            "its devices are not contiguous along the mesh's data axis"
        )
    return start, stop


def means_from_sums(loss_sum: Array, stats: Mapping[str, Array]) -> dict[str, Array]:
    """Divides every stat sum by the total weight; keeps the weight itself as ``tokens``."""
    denom = jnp.maximum(stats["weight"], 1.0)
    metrics = {k: v / denom for k, v in stats.items() if k != "weight"}
    metrics["loss"] = loss_sum / denom
    metrics["tokens"] = stats["weight"]
    return metrics


def eval_batch_size(cfg: Config, mesh: Mesh) -> int:
    """The global evaluation batch (``eval.batch_size``, else ``train.batch_size``), checked to
    split evenly over the mesh's data axis."""
    size = cfg.eval.batch_size or cfg.train.batch_size
    if size % mesh.shape[DATA_AXIS]:
        raise ConfigError(f"eval.batch_size={size}: must be divisible by the mesh data size ({mesh.shape[DATA_AXIS]})")
    return size
