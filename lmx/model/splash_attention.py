"""TPU's splash attention, the Pallas kernel JAX ships (`jax.experimental.pallas.ops.tpu`), behind
lmx's attention interface: causal grouped-query attention with packed segments.

The kernel takes one example at a time (``q [H, L, E]``, ``k, v [K, L, E]``, ``H`` a multiple of
``K``): it is mapped over the batch. Its blocks must be whole multiples of 128 (a TPU vector
register's lanes), so ``model.attention_block`` is rounded up to one, and rows are padded to whole
blocks with segment 0, which no real query attends to. Its masks are static (built when traced), so
it cannot read a KV cache whose causal order comes from runtime slots: decoding falls back to the
reference (`lmx.model.attention.resolve_attention`, with a warning).

On TPU it runs compiled by Mosaic. Elsewhere it runs in Pallas' interpret mode (the same kernel
body as ordinary XLA operations): exact but slow, which is how the tests check it on CPU. It has not
been measured on a TPU (none was available); ``auto`` stays ``chunked`` there until it is.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
from jax.sharding import PartitionSpec

from lmx.parallel.rules import active_placement, axis_names

Array = jax.Array

LANES = 128  # the kernel's blocks are whole multiples of this


def splash_block(block: int, length: int) -> int:
    """The kernel's block for ``model.attention_block=block`` and `length` rows: a multiple of 128,
    no larger than the padded length needs."""
    rounded = -(-block // LANES) * LANES
    return min(rounded, -(-length // LANES) * LANES)


def _kernel(heads: int, length: int, block: int, interpret: bool) -> splash.SplashAttentionKernel:
    """The causal kernel of `heads` query heads over `length` rows. Built anew in every trace: it
    holds its block tables as arrays, and a kernel cached across traces leaked their tracers."""
    mask = masks.MultiHeadMask([masks.CausalMask((length, length)) for _ in range(heads)])
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return splash.make_splash_mha_single_device(mask, block_sizes=sizes, interpret=interpret)


def splash_attention(
    q_BxLxHxE: Array,
    k_BxLxKxE: Array,
    v_BxLxKxE: Array,
    segments_BxL: Array,
    block: int,
    platform: str | None = None,
) -> Array:
    """Causal grouped-query attention of L queries over the same L keys (a training or prefill step
    without a cache): a query sees the keys of its own segment up to its own index; padding queries
    (segment 0) output zeros, as the reference's do."""
    platform = platform or jax.default_backend()
    interpret = platform != "tpu"
    if interpret:
        warnings.warn(
            f"model.attention=splash: TPU's Pallas kernel runs in interpret mode on {platform} (exact, slow)",
            stacklevel=3,
        )
    length, e = q_BxLxHxE.shape[1], q_BxLxHxE.shape[3]
    size = splash_block(block, length)
    padded = -(-length // size) * size

    def pad(x: Array) -> Array:
        return jnp.pad(x, [(0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 2))

    # The kernel does not scale the logits: the queries are scaled first, as the reference's logits are.
    q_BxHxPxE = pad(q_BxLxHxE * jnp.asarray(e**-0.5, q_BxLxHxE.dtype)).swapaxes(1, 2)
    k_BxKxPxE, v_BxKxPxE = (pad(x).swapaxes(1, 2) for x in (k_BxLxKxE, v_BxLxKxE))
    segments_BxP = pad(segments_BxL)
    out_BxHxPxE = _per_shard(q_BxHxPxE, k_BxKxPxE, v_BxKxPxE, segments_BxP, size, interpret)
    out_BxLxHxE = out_BxHxPxE.swapaxes(1, 2)[:, :length]
    return jnp.where((segments_BxL != 0)[:, :, None, None], out_BxLxHxE, 0).astype(q_BxLxHxE.dtype)


def _per_shard(q_BxHxPxE: Array, k_BxKxPxE: Array, v_BxKxPxE: Array, segments_BxP: Array, size: int, interpret: bool):
    """The kernel over the batch, under a step's mesh one shard at a time: XLA cannot partition a
    Mosaic kernel itself, so rows (by the "batch" rule) and heads (by "heads" and "kv_heads") are
    split by a `shard_map` over the mesh's automatic axes. Heads are split only when query and kv
    heads split alike, so that each shard's query heads keep their own kv heads."""

    def kernel(q_BxHxPxE, k_BxKxPxE, v_BxKxPxE, segments_BxP):
        run = _kernel(q_BxHxPxE.shape[1], q_BxHxPxE.shape[2], size, interpret)
        segment_ids = splash.SegmentIds(q=segments_BxP, kv=segments_BxP)
        return jax.vmap(run)(q_BxHxPxE, k_BxKxPxE, v_BxKxPxE, segment_ids=segment_ids)

    arrays = (q_BxHxPxE, k_BxKxPxE, v_BxKxPxE, segments_BxP)
    names = [("batch", "heads"), ("batch", "kv_heads"), ("batch", "kv_heads"), ("batch",)]
    specs = active_placement(names, [x.shape[: len(n)] for x, n in zip(arrays, names, strict=True)])
    if specs is None:  # no mesh in context: one device, or the caller's own map
        return kernel(*arrays)
    q_spec, kv_spec, _, rows_spec = (tuple(spec) + (None,) * (2 - len(spec)) for spec in specs)
    rows = rows_spec[0]
    heads = q_spec[1] if q_spec[1] == kv_spec[1] else None
    if heads is not None and rows is not None and set(axis_names(heads)) & set(axis_names(rows)):
        heads = None
    if rows is None and heads is None:
        return kernel(*arrays)
    axes = {*axis_names(rows), *axis_names(heads)}
    qkv = PartitionSpec(rows, heads)
    return jax.shard_map(
        kernel,
        in_specs=(qkv, qkv, qkv, PartitionSpec(rows)),
        out_specs=qkv,
        axis_names=axes,
        check_vma=False,
    )(*arrays)
