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

import functools
import warnings

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

Array = jax.Array

LANES = 128  # the kernel's blocks are whole multiples of this


def splash_block(block: int, length: int) -> int:
    """The kernel's block for ``model.attention_block=block`` and `length` rows: a multiple of 128,
    no larger than the padded length needs."""
    rounded = -(-block // LANES) * LANES
    return min(rounded, -(-length // LANES) * LANES)


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, length: int, block: int, interpret: bool) -> splash.SplashAttentionKernel:
    """The causal kernel of `heads` query heads over `length` rows (built once per shape: the mask's
    block tables are computed in NumPy)."""
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
    # Concrete block tables even when first built inside a trace: the cache outlives it.
    with jax.ensure_compile_time_eval():
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
    _, length, h, e = q_BxLxHxE.shape
    size = splash_block(block, length)
    padded = -(-length // size) * size

    def pad(x: Array) -> Array:
        return jnp.pad(x, [(0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 2))

    # The kernel does not scale the logits: the queries are scaled first, as the reference's logits are.
    q_BxHxPxE = pad(q_BxLxHxE * jnp.asarray(e**-0.5, q_BxLxHxE.dtype)).swapaxes(1, 2)
    k_BxKxPxE, v_BxKxPxE = (pad(x).swapaxes(1, 2) for x in (k_BxLxKxE, v_BxLxKxE))
    segments_BxP = pad(segments_BxL)
    kernel = _kernel(h, padded, size, interpret)
    segment_ids = splash.SegmentIds(q=segments_BxP, kv=segments_BxP)
    out_BxHxPxE = jax.vmap(kernel)(q_BxHxPxE, k_BxKxPxE, v_BxKxPxE, segment_ids=segment_ids)
    out_BxLxHxE = out_BxHxPxE.swapaxes(1, 2)[:, :length]
    return jnp.where((segments_BxL != 0)[:, :, None, None], out_BxLxHxE, 0).astype(q_BxLxHxE.dtype)
