"""The training step: gradient sums over micro-batches, mapped pmap-style over the data axis
(`lmx.parallel.mapping`), then one optimizer update from the exact global mean.

Summing losses, gradients and weights over shards and micro-batches, then dividing once, gives the
exact global token mean, so a step on 1 device and on any mesh compute the same update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.objectives.base import LossFn, Prepare, check_loss_output
from lmx.parallel.mapping import Batch, means_from_sums, sharded_sums, step_batch_sharding
from lmx.parallel.rules import Rules
from lmx.train.state import TrainState

Array = jax.Array


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
    checked = lambda *args: check_loss_output(loss_fn(*args))  # a clear error, not a KeyError in the trace

    def sums(micro: Batch) -> Sums:
        (loss, stats), grads = jax.value_and_grad(checked, has_aux=True)(params, micro, *extra)
        return grads, loss, stats

    if micro_batches == 1:
        return sums(batch)
    micro = split_micro_batches(batch, micro_batches)
    zeros = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(sums, jax.tree.map(lambda x: x[0], micro))
    )
    total, _ = jax.lax.scan(lambda carry, m: (jax.tree.map(jnp.add, carry, sums(m)), None), zeros, micro)
    return total


def sharded_gradients(
    loss_fn: LossFn, mesh: Mesh, rules: Rules, micro_batches: int = 1
) -> Callable[[Any, Batch], Sums]:
    """``(grad_sums, loss_sum, stat_sums)`` summed over every data shard and micro-batch."""
    return sharded_sums(
        lambda params, batch, *frozen: accumulate_gradients(loss_fn, params, batch, micro_batches, *frozen), mesh, rules
    )


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    mesh: Mesh,
    rules: Rules,
    state_shardings: TrainState,
    micro_batches: int = 1,
    frozen_shardings: Any = None,
    prepare: Prepare | None = None,
    updates: int = 1,
) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """The compiled step ``(state, batch) -> (state, metrics)``; the input state is donated.

    With `frozen_shardings` (the shardings of a frozen model's parameters, such as a preference
    reference) the step is ``(state, batch, frozen) -> (state, metrics)`` and the loss function
    takes the frozen parameters as its third argument; they get no gradient and no update.

    Metrics (device scalars): loss (the objective), the loss function's other stats as means,
    grad_norm (before clipping), lr (the rate this update used), tokens (the loss weight) and
    nonfinite (1 when the loss or a gradient was not finite: the update was then dropped, the
    step and data still advance, and ``state.skipped`` counts it).

    Online RL adds two things. `prepare` runs once on the step's batch before any update, without
    gradients: ``(params, batch, frozen) -> (batch, metrics)`` (old and reference log-probs,
    advantages); the frozen parameters then go to `prepare` only, not to the loss. `updates`
    optimizer updates then follow on that batch (PPO's epochs, GRPO's mu), each over every
    micro-batch; ``state.step`` counts steps (batches), the optimizer its own updates, and the
    metrics are the means over the updates.
    """
    grads_fn = sharded_gradients(loss_fn, mesh, rules, micro_batches)

    def update(params: Any, opt_state: Any, batch: Batch, frozen: Any, step: Array):
        """One optimizer update from the exact global mean of the batch's gradient."""
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            grad_sums, loss_sum, stats = grads_fn(params, batch, frozen)
        # The total weight is a constant of the batch, so d(sum)/W = d(sum / W): the exact mean.
        denom = jnp.maximum(stats["weight"], 1.0)
        grads = jax.tree.map(lambda g: g / denom, grad_sums)
        updates_, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates_)
        metrics = means_from_sums(loss_sum, stats)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["lr"] = jnp.asarray(schedule(step), jnp.float32)
        # Never let a non-finite step into the state: keep the old params and moments instead.
        finite = jnp.isfinite(loss_sum) & jnp.isfinite(metrics["grad_norm"])
        new_params, new_opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), (new_params, new_opt_state), (params, opt_state)
        )
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        return new_params, new_opt_state, metrics

    def step(state: TrainState, batch: Batch, frozen: Any = None) -> tuple[TrainState, dict[str, Array]]:
        extra: dict[str, Array] = {}
        if prepare is not None:
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                batch, extra = prepare(state.params, batch, frozen)
            frozen = None  # the loss itself takes no frozen parameters
        if updates == 1:
            params, opt_state, metrics = update(state.params, state.opt_state, batch, frozen, state.step)
            dropped = metrics["nonfinite"]
        else:

            def body(carry, i):
                params, opt_state = carry
                params, opt_state, metrics = update(params, opt_state, batch, frozen, state.step * updates + i)
                return (params, opt_state), metrics

            (params, opt_state), stacked = jax.lax.scan(
                body, (state.params, state.opt_state), jnp.arange(updates, dtype=jnp.int32)
            )
            metrics = jax.tree.map(lambda x: jnp.mean(x, axis=0), stacked)
            metrics["nonfinite"] = jnp.max(stacked["nonfinite"])  # any update of the step dropped
            dropped = jnp.sum(stacked["nonfinite"])
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, skipped=state.skipped + dropped.astype(jnp.int32)
        )
        return new_state, {**metrics, **extra}

    in_shardings = (state_shardings, step_batch_sharding(mesh))
    if frozen_shardings is not None:
        in_shardings += (frozen_shardings,)
    return jax.jit(
        step,
        in_shardings=in_shardings,
        out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,),
    )
