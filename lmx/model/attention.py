"""Attention implementations, chosen by ``model.attention``; each takes segment ids and stream indices,
not a mask, so that a kernel can build its own block masks.

- ``reference``: einsums with a materialised ``[B, K, G, L, S]`` float32 softmax, lmx's attention
  before the others existed; its memory grows with L * S in the forward and the saved activations.
- ``dot_product``: `jax.nn.dot_product_attention`; cuDNN's flash attention on NVIDIA GPUs when the
  compute dtype is bfloat16 or float16, XLA's fused attention elsewhere. Packed rows (several
  documents) reach it as a dense ``[B, 1, L, S]`` mask, which cuDNN takes as a bias.
- ``chunked``: `lmx.model.chunked_attention`, an online softmax over key blocks with a hand-written
  backward: O(L * block) memory, forward and backward, on every backend, with packing.
- ``auto``: resolved once per trace by `resolve_attention`: dot_product on GPU, chunked on TPU,
  reference on CPU (unchanged from before: at configs/tiny.py's 128 tokens two benchmark runs
  ranked the three differently, within noise; past 2,048 tokens the others are faster, see
  BENCHMARKS.md, but switching the CPU default shifts every CPU figure and is left for a measured
  change of its own); decoding with a KV
  cache uses the reference on every backend (one query per step is already O(S) memory, and the
  reference reads the cache in place without concatenating).

- ``splash``: TPU's splash-attention Pallas kernel (`lmx.model.splash_attention`), with packing and
  GQA; compiled on TPU, in Pallas' interpret mode elsewhere (exact and slow: how the tests check it).
  Not yet measured on a TPU, so ``auto`` runs ``chunked`` there. Its masks are static, so decoding
  with a KV cache falls back to the reference, with a warning.

Tensor names carry their shapes: B batch, L queries, S keys, H query heads, K kv heads, G = H / K,
E head dim.
"""

from __future__ import annotations

import warnings
from typing import Literal

import jax
import jax.numpy as jnp

from lmx.model.chunked_attention import chunked_attention

Array = jax.Array

AttentionName = Literal["auto", "reference", "dot_product", "chunked", "splash"]
IMPLEMENTATIONS = ("reference", "dot_product", "chunked", "splash")
_AUTO = {"gpu": "dot_product", "tpu": "chunked"}  # every other platform: reference


def native_implementations(platform: str) -> tuple[str, ...]:
    """The implementations that run compiled on `platform`: splash only on TPU (elsewhere Pallas
    interprets it, too slowly to benchmark)."""
    return tuple(name for name in IMPLEMENTATIONS if name != "splash" or platform == "tpu")


def resolve_attention(name: str, platform: str, decoding: bool = False) -> str:
    """The implementation ``model.attention=name`` runs on ``platform`` ("cpu", "gpu", "tpu")."""
    if name == "splash" and decoding:
        warnings.warn(
            "model.attention=splash: decoding with a KV cache uses the reference (splash's masks are static)",
            stacklevel=2,
        )
        return "reference"
    if name != "auto":
        return name
    return "reference" if decoding else _AUTO.get(platform, "reference")


def attention_mask(q_segments_BxL: Array, kv_segments_BxS: Array, q_pos_BxL: Array, kv_pos_BxS: Array) -> Array:
    """True where query l may attend key s: same segment (0 = padding, never attended) and causal.

    Causality is by index, so a token attends only to earlier tokens of its own document, whatever
    the positions say; `q_pos`/`kv_pos` are indices into the stream (used by decoding with a cache).
    """
    same_BxLxS = q_segments_BxL[:, :, None] == kv_segments_BxS[:, None, :]
    real_BxS = kv_segments_BxS[:, None, :] != 0
    causal_BxLxS = q_pos_BxL[:, :, None] >= kv_pos_BxS[:, None, :]
    return same_BxLxS & real_BxS & causal_BxLxS


def reference_attention(
    q_BxLxHxE: Array,
    k_BxSxKxE: Array | tuple[Array, ...],
    v_BxSxKxE: Array | tuple[Array, ...],
    mask_BxLxS: Array | tuple[Array, ...],
    kv_heads_first: bool = False,
) -> Array:
    """Grouped-query attention with a float32 softmax. Rows with no visible key output zeros.

    Keys, values and masks may come as tuples of blocks along S (a cache and the new tokens): the
    softmax runs over all blocks together, without concatenating the keys and values. With
    `kv_heads_first`, keys and values are laid out ``[B, K, S, E]`` (the cache's layout).
    """
    ks, vs, masks = (x if isinstance(x, tuple) else (x,) for x in (k_BxSxKxE, v_BxSxKxE, mask_BxLxS))
    kv = "bkse" if kv_heads_first else "bske"
    b, length, h, e = q_BxLxHxE.shape
    k = ks[0].shape[1 if kv_heads_first else 2]
    q_BxLxKxGxE = q_BxLxHxE.reshape(b, length, k, h // k, e)
    logits, block_masks = [], []
    for k_block, mask_block in zip(ks, masks, strict=True):
        logits_BxKxGxLxS = jnp.einsum(f"blkge,{kv}->bkgls", q_BxLxKxGxE, k_block).astype(jnp.float32) * (e**-0.5)
        logits.append(logits_BxKxGxLxS)
        block_masks.append(mask_block[:, None, None])
    logits_BxKxGxLxS = jnp.concatenate(logits, axis=-1)
    mask_Bx1x1xLxS = jnp.concatenate(block_masks, axis=-1)
    logits_BxKxGxLxS = jnp.where(mask_Bx1x1xLxS, logits_BxKxGxLxS, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits_BxKxGxLxS, axis=-1)
    probs = jnp.where(mask_Bx1x1xLxS, probs, 0.0).astype(vs[0].dtype)
    out_BxLxKxGxE = 0
    start = 0
    for v_block in vs:
        size = v_block.shape[2 if kv_heads_first else 1]
        out_BxLxKxGxE = out_BxLxKxGxE + jnp.einsum(f"bkgls,{kv}->blkge", probs[..., start : start + size], v_block)
        start += size
    return out_BxLxKxGxE.reshape(b, length, h, e)


def fused_attention(
    q_BxLxHxE: Array, k_BxSxKxE: Array, v_BxSxKxE: Array, mask_BxLxS: Array, q_segments_BxL: Array
) -> Array:
    """`jax.nn.dot_product_attention` with cuDNN where it applies (an NVIDIA GPU, 16-bit inputs).

    Padding queries (segment 0) see no key; XLA's kernel would average every value for them, so
    their rows are zeroed as the reference's are.
    """
    implementation = None
    if jax.default_backend() == "gpu":
        if q_BxLxHxE.dtype in (jnp.bfloat16, jnp.float16):
            implementation = "cudnn"
        else:
            warnings.warn(
                f"model.attention=dot_product: cuDNN needs bfloat16 or float16, got {q_BxLxHxE.dtype}; using XLA's",
                stacklevel=2,
            )
    out_BxLxHxE = jax.nn.dot_product_attention(
        q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, mask=mask_BxLxS[:, None], implementation=implementation
    )
    return jnp.where((q_segments_BxL != 0)[:, :, None, None], out_BxLxHxE, 0).astype(q_BxLxHxE.dtype)


def attend(
    name: str,
    q_BxLxHxE: Array,
    k_BxSxKxE: Array,
    v_BxSxKxE: Array,
    q_segments_BxL: Array,
    kv_segments_BxS: Array,
    q_index_BxL: Array,
    kv_index_BxS: Array,
    block: int,
) -> Array:
    """Causal grouped-query attention of L queries over S keys by the implementation ``name``
    (already resolved): queries see keys of their own segment at stream indices up to their own."""
    if name == "splash":
        if q_BxLxHxE.shape[1] != k_BxSxKxE.shape[1]:
            raise ValueError("model.attention=splash attends L queries to the same L keys (no KV cache)")
        from lmx.model.splash_attention import splash_attention  # imports Pallas only when asked for

        return splash_attention(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, q_segments_BxL, block)
    if name == "chunked":
        args = (q_segments_BxL, kv_segments_BxS, q_index_BxL, kv_index_BxS)
        return chunked_attention(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, *args, block)
    mask_BxLxS = attention_mask(q_segments_BxL, kv_segments_BxS, q_index_BxL, kv_index_BxS)
    if name == "dot_product":
        return fused_attention(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, mask_BxLxS, q_segments_BxL)
    if name == "reference":
        return reference_attention(q_BxLxHxE, k_BxSxKxE, v_BxSxKxE, mask_BxLxS)
    raise ValueError(f"unknown attention implementation {name!r}; expected one of {IMPLEMENTATIONS}")
