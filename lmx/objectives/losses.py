"""Token losses as pure functions of logits and targets, computed in float32: the training
objectives and the evaluators (`lmx.infer`) share them.

They return sums, not means: the step divides by the weight summed over every device and
micro-batch, which gives the exact global mean however the tokens are spread over shards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def target_logits(logits_BxLxV: Array, targets_BxL: Array) -> Array:
    """``logits[b, l, targets[b, l]]`` as a masked sum over the vocabulary.

    XLA fuses the compare-and-select, so this costs no more than a gather, and it works when the
    vocabulary is sharded; `take_along_axis` there aborts XLA's Shardy partitioner inside a partially
    manual shard_map (jax 0.10.2, docs/ARCHITECTURE.md).
    """
    vocab_V = jnp.arange(logits_BxLxV.shape[-1], dtype=targets_BxL.dtype)
    return jnp.sum(jnp.where(vocab_V == targets_BxL[..., None], logits_BxLxV, 0.0), axis=-1)


def cross_entropy_sums(
    logits_BxLxV: Array, targets_BxL: Array, weights_BxL: Array, z_loss: float = 0.0
) -> tuple[Array, dict[str, Array]]:
    """Weighted next-token cross-entropy plus optional z-loss ``z_loss * log(Z)^2`` (PaLM, 2022).

    Returns ``(loss_sum, stats)``; ``stats`` holds the sums ``ce``, ``z_loss`` and ``weight``.
    """
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    weights_BxL = weights_BxL.astype(jnp.float32)
    log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
    target_logit_BxL = target_logits(logits_BxLxV, targets_BxL)
    ce = jnp.sum((log_z_BxL - target_logit_BxL) * weights_BxL)
    z = jnp.sum(jnp.square(log_z_BxL) * weights_BxL)
    loss = ce + z_loss * z if z_loss else ce
    return loss, {"ce": ce, "z_loss": z, "weight": jnp.sum(weights_BxL)}


def response_logps(logits_BxLxV: Array, targets_BxL: Array, mask_BxL: Array) -> tuple[Array, Array]:
    """``(summed log-prob of the masked targets [B], their count [B])``, in float32."""
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    logp_BxL = target_logits(logits_BxLxV, targets_BxL) - jax.nn.logsumexp(logits_BxLxV, axis=-1)
    mask_BxL = mask_BxL.astype(jnp.float32)
    return jnp.sum(logp_BxL * mask_BxL, axis=1), jnp.sum(mask_BxL, axis=1)
