"""Memory-efficient attention in plain JAX: an online softmax over blocks of keys.

The forward pass walks the keys in blocks of ``block`` (a `lax.scan`), keeping for each query the
running maximum ``m``, the running sum of exponentials ``l`` and the unnormalised output, so no
``[L, S]`` matrix is ever held: the largest temporary is one block's ``[B, K, G, L, block]`` logits
(Rabe & Staats 2021, "Self-attention does not need O(n^2) memory"; Dao et al. 2022, FlashAttention).

The backward pass is written by hand (a `jax.custom_vjp`) rather than left to autodiff, because
autodiff of the scan would save every block's carry, i.e. ``S / block`` copies of the ``[L, E]``
output: quadratic again. The forward saves only the output and each query's log-sum-exp; the
backward walks the key blocks again, recomputing each block's probabilities from them, and returns
the keys' and values' gradients block by block (FlashAttention-2's backward, Dao 2023, section 3.1.2):

    P = exp(S - lse),  dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),
    dQ = dS K * scale,  dK = dS^T Q * scale.

Masks come from segment ids and stream indices (`lmx.model.attention.attention_mask`), built one
block at a time. Rows that see no key (padding) output zeros, as the reference does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

# Keys per block. 512 keeps a block's logits small (B*H*L*512 floats) while the matmuls stay large.
DEFAULT_BLOCK = 512


def _block_mask(q_seg_BxL: Array, kv_seg_BxC: Array, q_pos_BxL: Array, kv_pos_BxC: Array) -> Array:
    """``[B, 1, 1, L, C]``: same segment, a real key (segment != 0), causal by stream index."""
    mask_BxLxC = (
        (q_seg_BxL[:, :, None] == kv_seg_BxC[:, None, :])
        & (kv_seg_BxC[:, None, :] != 0)
        & (q_pos_BxL[:, :, None] >= kv_pos_BxC[:, None, :])
    )
    return mask_BxLxC[:, None, None]


def _blocks(x_BxSx: Array, block: int) -> Array:
    """``[B, S, ...]`` -> ``[S / block, B, block, ...]`` (S already a multiple of block)."""
    b, s = x_BxSx.shape[:2]
    return jnp.moveaxis(x_BxSx.reshape(b, s // block, block, *x_BxSx.shape[2:]), 1, 0)


def _unblocks(x_NxBxCx: Array) -> Array:
    n, b, c = x_NxBxCx.shape[:3]
    return jnp.moveaxis(x_NxBxCx, 0, 1).reshape(b, n * c, *x_NxBxCx.shape[3:])


def _pad_keys(k, v, kv_seg, kv_pos, block):
    """Pads S up to a multiple of the block with segment-0 keys, which no query sees."""
    pad = -k.shape[1] % block
    if not pad:
        return k, v, kv_seg, kv_pos
    widths = [(0, 0), (0, pad)]
    return (
        jnp.pad(k, widths + [(0, 0)] * 2),
        jnp.pad(v, widths + [(0, 0)] * 2),
        jnp.pad(kv_seg, widths),
        jnp.pad(kv_pos, widths),
    )


def _scores(q_BxLxKxGxE: Array, k_BxCxKxE: Array, scale: float) -> Array:
    return jnp.einsum("blkge,bcke->bkglc", q_BxLxKxGxE, k_BxCxKxE, preferred_element_type=jnp.float32) * scale


def _forward(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, q_seg_BxL, kv_seg_BxS, q_pos_BxL, kv_pos_BxS, block):
    b, length, h, e = q_BxLxHxE.shape
    kv_heads = k_BxSxKxE.shape[2]
    scale = e**-0.5
    q_BxLxKxGxE = q_BxLxHxE.reshape(b, length, kv_heads, h // kv_heads, e)
    k, v, kv_seg, kv_pos = _pad_keys(k_BxSxKxE, v_BxSxKxE, kv_seg_BxS, kv_pos_BxS, block)

    def step(carry, blk):
        m_BxKxGxL, l_BxKxGxL, acc_BxKxGxLxE = carry
        k_BxCxKxE, v_BxCxKxE, seg_BxC, pos_BxC = blk
        # Ties the block's mask to the queries: otherwise, inside a differentiated scan over
        # layers, JAX's partial evaluation computes every block's mask (it depends on integers
        # only) in a separate loop and stacks them, an [S / block, L, block] array: quadratic again.
        q_BxLxKxGxE_, seg_BxC, pos_BxC = jax.lax.optimization_barrier((q_BxLxKxGxE, seg_BxC, pos_BxC))
        mask = _block_mask(q_seg_BxL, seg_BxC, q_pos_BxL, pos_BxC)
        s_BxKxGxLxC = jnp.where(mask, _scores(q_BxLxKxGxE_, k_BxCxKxE, scale), -jnp.inf)
        m_new = jnp.maximum(m_BxKxGxL, s_BxKxGxLxC.max(axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with nothing seen yet
        p_BxKxGxLxC = jnp.exp(s_BxKxGxLxC - m_safe[..., None])
        correction = jnp.exp(m_BxKxGxL - m_safe)
        l_new = l_BxKxGxL * correction + p_BxKxGxLxC.sum(axis=-1)
        pv = jnp.einsum(
            "bkglc,bcke->bkgle", p_BxKxGxLxC.astype(v_BxCxKxE.dtype), v_BxCxKxE, preferred_element_type=jnp.float32
        )
        return (m_new, l_new, acc_BxKxGxLxE * correction[..., None] + pv), None

    g = h // kv_heads
    init = (
        jnp.full((b, kv_heads, g, length), -jnp.inf, jnp.float32),
        jnp.zeros((b, kv_heads, g, length), jnp.float32),
        jnp.zeros((b, kv_heads, g, length, e), jnp.float32),
    )
    xs = tuple(_blocks(x, block) for x in (k, v, kv_seg, kv_pos))
    (m, l_sum, acc), _ = jax.lax.scan(step, init, xs)
    seen = l_sum > 0
    out_BxKxGxLxE = acc / jnp.where(seen, l_sum, 1.0)[..., None]
    lse_BxKxGxL = jnp.where(seen, m + jnp.log(jnp.where(seen, l_sum, 1.0)), 0.0)
    out_BxLxHxE = jnp.moveaxis(out_BxKxGxLxE, 3, 1).reshape(b, length, h, e).astype(q_BxLxHxE.dtype)
    return out_BxLxHxE, lse_BxKxGxL


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def chunked_attention(
    q_BxLxHxE: Array,
    k_BxSxKxE: Array,
    v_BxSxKxE: Array,
    q_segments_BxL: Array,
    kv_segments_BxS: Array,
    q_index_BxL: Array,
    kv_index_BxS: Array,
    block: int = DEFAULT_BLOCK,
) -> Array:
    """Grouped-query attention of L queries over S keys in O(L * block) memory, forward and backward.

    Segment ids (0 = padding) and stream indices define the mask as in the reference; S need not be
    a multiple of ``block``. Matmuls run in the inputs' dtype with float32 accumulation; the softmax
    statistics are float32.
    """
    segments = (q_segments_BxL, kv_segments_BxS, q_index_BxL, kv_index_BxS)
    out_BxLxHxE, _ = _forward(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, *segments, block)
    return out_BxLxHxE


def _vjp_forward(q, k, v, q_seg, kv_seg, q_pos, kv_pos, block):
    out, lse = _forward(q, k, v, q_seg, kv_seg, q_pos, kv_pos, block)
    return out, (q, k, v, q_seg, kv_seg, q_pos, kv_pos, out, lse)


def _vjp_backward(block, residuals, d_out_BxLxHxE):
    q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, q_seg, kv_seg_BxS, q_pos, kv_pos_BxS, out_BxLxHxE, lse_BxKxGxL = residuals
    b, length, h, e = q_BxLxHxE.shape
    s_len, kv_heads = k_BxSxKxE.shape[1:3]
    g = h // kv_heads
    scale = e**-0.5
    q_BxLxKxGxE = q_BxLxHxE.reshape(b, length, kv_heads, g, e)
    d_out_BxLxKxGxE = d_out_BxLxHxE.reshape(b, length, kv_heads, g, e)
    # rowsum(dO * O): the softmax's Jacobian term, one number per query and head.
    delta_BxKxGxL = jnp.einsum(
        "blkge,blkge->bkgl",
        d_out_BxLxKxGxE.astype(jnp.float32),
        out_BxLxHxE.reshape(b, length, kv_heads, g, e).astype(jnp.float32),
    )
    k, v, kv_seg, kv_pos = _pad_keys(k_BxSxKxE, v_BxSxKxE, kv_seg_BxS, kv_pos_BxS, block)

    def step(dq_BxLxKxGxE, blk):
        k_BxCxKxE, v_BxCxKxE, seg_BxC, pos_BxC = blk
        mask = _block_mask(q_seg, seg_BxC, q_pos, pos_BxC)
        s_BxKxGxLxC = _scores(q_BxLxKxGxE, k_BxCxKxE, scale)
        p_BxKxGxLxC = jnp.where(mask, jnp.exp(s_BxKxGxLxC - lse_BxKxGxL[..., None]), 0.0)
        dv_BxCxKxE = jnp.einsum(
            "bkglc,blkge->bcke",
            p_BxKxGxLxC.astype(d_out_BxLxHxE.dtype),
            d_out_BxLxKxGxE,
            preferred_element_type=jnp.float32,
        )
        dp_BxKxGxLxC = jnp.einsum("blkge,bcke->bkglc", d_out_BxLxKxGxE, v_BxCxKxE, preferred_element_type=jnp.float32)
        ds_BxKxGxLxC = (p_BxKxGxLxC * (dp_BxKxGxLxC - delta_BxKxGxL[..., None]) * scale).astype(q_BxLxHxE.dtype)
        dq_BxLxKxGxE = dq_BxLxKxGxE + jnp.einsum(
            "bkglc,bcke->blkge", ds_BxKxGxLxC, k_BxCxKxE, preferred_element_type=jnp.float32
        )
        dk_BxCxKxE = jnp.einsum("bkglc,blkge->bcke", ds_BxKxGxLxC, q_BxLxKxGxE, preferred_element_type=jnp.float32)
        return dq_BxLxKxGxE, (dk_BxCxKxE.astype(k.dtype), dv_BxCxKxE.astype(v.dtype))

    xs = tuple(_blocks(x, block) for x in (k, v, kv_seg, kv_pos))
    dq, (dk_N, dv_N) = jax.lax.scan(step, jnp.zeros(q_BxLxKxGxE.shape, jnp.float32), xs)
    dq_BxLxHxE = dq.reshape(b, length, h, e).astype(q_BxLxHxE.dtype)
    dk_BxSxKxE = _unblocks(dk_N)[:, :s_len]
    dv_BxSxKxE = _unblocks(dv_N)[:, :s_len]
    return dq_BxLxHxE, dk_BxSxKxE, dv_BxSxKxE, None, None, None, None


chunked_attention.defvjp(_vjp_forward, _vjp_backward)
