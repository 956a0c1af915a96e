"""Transformer building blocks. Each parameter carries logical axis names (see lmx.parallel.rules).

Tensor names carry their shapes: B batch, L query length, S key length, D model width, H query heads,
K kv heads, G = H // K query heads per kv head, E head dim, F MLP width, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from lmx.config import ModelConfig
from lmx.model.attention import attend, attention_mask, reference_attention, resolve_attention
from lmx.model.matmul import dense_dot_general, matmul
from lmx.model.parametrization import forward_multipliers, scaled, weight_init
from lmx.parallel.rules import constrain

Array = jax.Array


def dense_init(std: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=std)


def out_std(cfg: ModelConfig) -> float:
    """GPT-2's init of the projections that write to the residual stream: scaled down with depth."""
    return cfg.init_std / (2 * forward_multipliers(cfg).out_init_layers) ** 0.5


class Embedding(nn.Module):
    """Token embedding ``[V, D]``, also used (tied) to produce logits."""

    vocab_size: int
    features: int
    std: float
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self) -> None:
        init = nn.with_logical_partitioning(dense_init(self.std), ("vocab", "embed"))
        self.embedding = self.param("embedding", init, (self.vocab_size, self.features), self.param_dtype)

    def __call__(self, tokens_BxL: Array) -> Array:
        # The whole table on every device for the lookup, gathered in the compute dtype (FSDP's
        # all-gather, made explicit). Inside the step's partially manual shard_map, XLA's Shardy
        # partitioner aborts the process on a lookup from a table split along its features, and on
        # the gradient (a scatter-add) of one split along the vocabulary (jax 0.10.2;
        # docs/ARCHITECTURE.md).
        table_VxD = constrain(self.embedding.astype(self.dtype), (None, None))
        return jnp.take(table_VxD, tokens_BxL, axis=0)

    def attend(self, x_BxLxD: Array) -> Array:
        return matmul(x_BxLxD, self.embedding.astype(self.dtype).T)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


def rope_frequencies(cfg: ModelConfig) -> Array:
    """RoPE's angular frequencies ``[head_dim / 2]``: ``theta ** (-2i / head_dim)``, with Llama 3's
    scaling when ``model.rope_scaling == "llama3"`` (Meta's Llama 3.1 reference code, as
    transformers' `_compute_llama3_parameters` has it): wavelengths longer than
    original_max_len / low_freq_factor are stretched by the factor, shorter than
    original_max_len / high_freq_factor kept, and those between interpolated smoothly."""
    half = cfg.head_dim // 2
    inv_freq = cfg.rope_theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    if cfg.rope_scaling == "none":
        return inv_freq
    factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old_len = cfg.rope_original_max_len
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return jnp.where(medium, smoothed, scaled)


def rope(x_BxLxNxE: Array, positions_BxL: Array, inv_freq: Array) -> Array:
    """Rotary position embedding (Su et al. 2021), rotating the two halves of each head by
    ``position * inv_freq`` (`rope_frequencies`)."""
    angle_BxLx1xE2 = positions_BxL[:, :, None, None].astype(jnp.float32) * inv_freq
    sin, cos = jnp.sin(angle_BxLx1xE2), jnp.cos(angle_BxLx1xE2)
    x1, x2 = jnp.split(x_BxLxNxE.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxLxNxE.dtype)


@flax.struct.dataclass
class KVCache:
    """Keys and values of every layer for decoding, in slots along a fixed length S.

    One buffer per layer, so that a layer reads its keys and values where they lie and a step
    updates them in place (a stacked ``[N, ...]`` array would be sliced, i.e. copied, per layer).
    Kv heads come before slots, the layout the attention matmuls read without a transpose.
    A step writes its L new tokens at slots ``[index, index + L)`` of every row; ``segment_ids``
    marks written slots (0 = empty or padding, never attended). Slots are stream indices (causality
    is by slot), while RoPE uses each token's own position, so rows of different prompt lengths
    share one ``index``: prompts are left-padded.
    """

    k: tuple[Array, ...]  # per layer [B, K, S, E]
    v: tuple[Array, ...]  # per layer [B, K, S, E]
    segment_ids: Array  # [B, S] int32
    index: Array  # int32 scalar: the next slot to write

    AXES = ("batch", "kv_heads", "length", "head_dim")  # of each layer's k and v

    @classmethod
    def zeros(cls, cfg: ModelConfig, batch: int, length: int) -> KVCache:
        shape = (batch, cfg.n_kv_heads, length, cfg.head_dim)
        return cls(
            k=tuple(jnp.zeros(shape, cfg.dtype) for _ in range(cfg.n_layers)),
            v=tuple(jnp.zeros(shape, cfg.dtype) for _ in range(cfg.n_layers)),
            segment_ids=jnp.zeros((batch, length), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )


# One layer's view of the cache inside the layer stack: (k, v) [B, K, S, E], slot segment ids
# [B, S] (already including the new tokens) and the write index.
LayerCache = tuple[Array, Array, Array, Array]


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads, RoPE and optional QK-norm.

    Without a cache it attends within the L tokens given; with one (decoding) it attends over the
    cache's written slots and the new tokens, and returns the new tokens' (k, v) for the cache.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, x_BxLxD: Array, segment_ids_BxL: Array, positions_BxL: Array, cache: LayerCache | None = None
    ) -> tuple[Array, tuple[Array, Array] | None]:
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def proj(name: str, heads: int, axis: str) -> Array:
            return nn.DenseGeneral(
                (heads, cfg.head_dim),
                use_bias=False,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=weight_init(cfg, ("embed", axis, "head_dim"), cfg.init_std),
                name=name,
            )(x_BxLxD)

        q_BxLxHxE = proj("query", cfg.n_heads, "heads")
        k_BxLxKxE = proj("key", cfg.n_kv_heads, "kv_heads")
        v_BxLxKxE = proj("value", cfg.n_kv_heads, "kv_heads")
        if cfg.qk_norm:
            q_BxLxHxE = RMSNorm(cfg.norm_eps, dtype, pdtype, "head_dim", name="query_norm")(q_BxLxHxE)
            k_BxLxKxE = RMSNorm(cfg.norm_eps, dtype, pdtype, "head_dim", name="key_norm")(k_BxLxKxE)
        inv_freq = rope_frequencies(cfg)
        q_BxLxHxE = scaled(rope(q_BxLxHxE, positions_BxL, inv_freq), forward_multipliers(cfg).query)
        k_BxLxKxE = rope(k_BxLxKxE, positions_BxL, inv_freq)

        length = x_BxLxD.shape[1]
        impl = resolve_attention(cfg.attention, jax.default_backend(), decoding=cache is not None)
        index_BxL = jnp.broadcast_to(jnp.arange(length), segment_ids_BxL.shape)
        if cache is None:
            args = (segment_ids_BxL, segment_ids_BxL, index_BxL, index_BxL, cfg.attention_block)
            out_BxLxHxE = attend(impl, q_BxLxHxE, k_BxLxKxE, v_BxLxKxE, *args)
            new_kv = None
        else:
            # The cache is only read here; the stack writes the new keys and values into it
            # (in place, as the cache buffers are donated).
            k_BxKxSxE, v_BxKxSxE, kv_segments_BxS, index = cache
            q_slots_BxL = index + index_BxL
            kv_slots_BxS = jnp.broadcast_to(jnp.arange(kv_segments_BxS.shape[1]), kv_segments_BxS.shape)
            new_kv = tuple(x.swapaxes(1, 2).astype(k_BxKxSxE.dtype) for x in (k_BxLxKxE, v_BxLxKxE))
            if impl == "reference":  # reads the cache where it lies: no concatenation
                mask_BxLxS = attention_mask(segment_ids_BxL, kv_segments_BxS, q_slots_BxL, kv_slots_BxS)
                mask_BxLxL = attention_mask(segment_ids_BxL, segment_ids_BxL, index_BxL, index_BxL)
                out_BxLxHxE = reference_attention(
                    q_BxLxHxE,
                    (k_BxKxSxE, new_kv[0]),
                    (v_BxKxSxE, new_kv[1]),
                    (mask_BxLxS, mask_BxLxL),
                    kv_heads_first=True,
                )
            else:  # the cache's slots, then the new tokens at slots [index, index + L)
                k_all, v_all = (
                    jnp.concatenate([buf, new], axis=2).swapaxes(1, 2)
                    for buf, new in zip((k_BxKxSxE, v_BxKxSxE), new_kv, strict=True)
                )
                segments = jnp.concatenate([kv_segments_BxS, segment_ids_BxL], axis=1)
                slots = jnp.concatenate([kv_slots_BxS, q_slots_BxL], axis=1)
                args = (segment_ids_BxL, segments, q_slots_BxL, slots, cfg.attention_block)
                out_BxLxHxE = attend(impl, q_BxLxHxE, k_all, v_all, *args)

        out_BxLxD = nn.DenseGeneral(
            cfg.d_model,
            axis=(-2, -1),
            use_bias=False,
            dtype=dtype,
            param_dtype=pdtype,
            kernel_init=weight_init(cfg, ("heads", "head_dim", "embed"), out_std(cfg)),
            name="out",
        )(out_BxLxHxE)
        return out_BxLxD, new_kv


class Mlp(nn.Module):
    """SwiGLU (Shazeer 2020) or GELU feed-forward block."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array) -> Array:
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)

        def dense(name: str, features: int, axes: tuple[str, str], std: float) -> nn.Dense:
            return nn.Dense(
                features,
                use_bias=False,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=weight_init(cfg, axes, std),
                dot_general=dense_dot_general,
                name=name,
            )

        up_BxLxF = dense("up", cfg.d_ff, ("embed", "mlp"), cfg.init_std)(x_BxLxD)
        if cfg.mlp == "swiglu":
            gate_BxLxF = dense("gate", cfg.d_ff, ("embed", "mlp"), cfg.init_std)(x_BxLxD)
            h_BxLxF = nn.silu(gate_BxLxF) * up_BxLxF
        else:
            h_BxLxF = nn.gelu(up_BxLxF)
        return dense("down", cfg.d_model, ("mlp", "embed"), out_std(cfg))(h_BxLxF)
