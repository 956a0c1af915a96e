"""Training steps, written pmap-style.

A per-shard function sees its slice of the batch along the data-parallel mesh axis, computes loss
and gradient *sums*, and combines them across shards with explicit `lax.psum` collectives. It is
mapped over the mesh with `jax.shard_map`, with only the "data" axis manual: the model-parallel axes
(fsdp, tensor) stay automatic and follow the parameters' sharding annotations.

Why sums and psum rather than a pmean of per-shard means: with packing, padding or loss masks the
shards hold different numbers of target tokens, and a mean of means would weight them wrongly.
Summing losses, gradients and weights over shards and micro-batches, then dividing once, gives the
exact global token mean, so a step on 1 device and on any mesh compute the same update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.parallel.partitioner import partitioned
from lmx.parallel.rules import Rules, activation_rules, constrain, without_axes
from lmx.train.losses import cross_entropy_sums
from lmx.train.state import TrainState

Array = jax.Array
Batch = Mapping[str, Array]
# (params, batch) -> (loss sum, stats sums). stats must hold "weight", the loss's denominator.
# Objectives with a frozen model (a preference reference) take (params, batch, frozen params).
LossFn = Callable[..., tuple[Array, dict[str, Array]]]

DATA_AXIS = "data"


def pretrain_loss(model: nn.Module, z_loss: float = 0.0) -> LossFn:
    """Next-token cross-entropy. Batches: inputs, targets, segment_ids, positions [, loss_mask]."""

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        weights = batch["loss_mask"] if "loss_mask" in batch else batch["segment_ids"] > 0
        return cross_entropy_sums(logits, batch["targets"], weights, z_loss)

    return loss_fn


def split_micro_batches(batch: Batch, k: int) -> Batch:
    """``[b, ...] -> [k, b // k, ...]``, micro-batch m taking rows m, m + k, m + 2k, ...

    Strided rather than contiguous so each micro-batch keeps the batch's split over the automatic
    (fsdp) axis: row blocks stay on their devices and the split needs no communication.
    """

    def split(x: Array) -> Array:
        return jnp.moveaxis(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 1, 0)

    return jax.tree.map(split, batch)


Sums = tuple[Any, Array, dict[str, Array]]  # (gradient sums, loss sum, stats sums)


def accumulate_gradients(loss_fn: LossFn, params: Any, batch: Batch, micro_batches: int, frozen: Any = None) -> Sums:
    """Gradient, loss and stats sums over `micro_batches` slices of `batch`, scanned to bound memory.

    `frozen` (parameters that take no gradient) is passed to the loss as a third argument when set.
    """
    extra = () if frozen is None else (frozen,)

    def sums(micro: Batch) -> Sums:
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, micro, *extra)
        return grads, loss, stats

    if micro_batches == 1:
        return sums(batch)
    micro = split_micro_batches(batch, micro_batches)
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(sums, jax.tree.map(lambda x: x[0], micro))
    )
    total, _ = jax.lax.scan(lambda carry, m: (jax.tree.map(jnp.add, carry, sums(m)), None), zeros, micro)
    return total


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


def sharded_gradients(
    loss_fn: LossFn, mesh: Mesh, rules: Rules, micro_batches: int = 1
) -> Callable[[Any, Batch], Sums]:
    """``(grad_sums, loss_sum, stat_sums)`` summed over every data shard and micro-batch."""
    return sharded_sums(
        lambda params, batch, *frozen: accumulate_gradients(loss_fn, params, batch, micro_batches, *frozen), mesh, rules
    )


def step_batch_sharding(mesh: Mesh) -> NamedSharding:
    """How a step takes its batch: rows split over the data axis (the map splits them further)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def means_from_sums(loss_sum: Array, stats: Mapping[str, Array]) -> dict[str, Array]:
    """Divides every stat sum by the total weight; keeps the weight itself as ``tokens``."""
    denom = jnp.maximum(stats["weight"], 1.0)
    metrics = {k: v / denom for k, v in stats.items() if k != "weight"}
    metrics["loss"] = loss_sum / denom
    metrics["tokens"] = stats["weight"]
    return metrics


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    rules: Rules,
    state_shardings: TrainState,
    micro_batches: int = 1,
    frozen_shardings: Any = None,
) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """The compiled step ``(state, batch) -> (state, metrics)``; the input state is donated.

    With `frozen_shardings` (the shardings of a frozen model's parameters, such as a preference
    reference) the step is ``(state, batch, frozen) -> (state, metrics)`` and the loss function
    takes the frozen parameters as its third argument; they get no gradient and no update.

    Metrics (device scalars): loss (the objective), the loss function's other stats as means,
    grad_norm (before clipping), lr (the rate this update used), tokens (the loss weight) and
    nonfinite (1 when the loss or a gradient was not finite: the update was then dropped, the
    step and data still advance, and ``state.skipped`` counts it).
    """
    grads_fn = sharded_gradients(loss_fn, mesh, rules, micro_batches)

    def step(state: TrainState, batch: Batch, frozen: Any = None) -> tuple[TrainState, dict[str, Array]]:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            grad_sums, loss_sum, stats = grads_fn(state.params, batch, frozen)
        # The total weight is a constant of the batch, so d(sum)/W = d(sum / W): the exact mean.
        denom = jnp.maximum(stats["weight"], 1.0)
        grads = jax.tree.map(lambda g: g / denom, grad_sums)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = means_from_sums(loss_sum, stats)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        # Never let a non-finite step into the state: keep the old params and moments instead.
        finite = jnp.isfinite(loss_sum) & jnp.isfinite(metrics["grad_norm"])
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), (params, opt_state), (state.params, state.opt_state)
        )
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            skipped=state.skipped + 1 - finite.astype(jnp.int32),
        )
        return new_state, metrics

    in_shardings = (state_shardings, step_batch_sharding(mesh))
    if frozen_shardings is not None:
        in_shardings += (frozen_shardings,)
    jitted = jax.jit(
        step,
        in_shardings=in_shardings,
        out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,),
    )
    return partitioned(jitted)
