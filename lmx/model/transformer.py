"""The decoder-only transformer: embedding, pre-norm blocks (attention + MLP), final norm, logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import ModelConfig
from lmx.model.layers import Attention, Embedding, KVCache, LayerCache, Mlp, RMSNorm, dense_init
from lmx.model.matmul import dense_dot_general
from lmx.model.parametrization import forward_multipliers, scaled
from lmx.parallel.rules import constrain

Array = jax.Array

# Which intermediate values a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "full": None,  # keep nothing: recompute the whole block
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # keep weight matmuls
}


class Block(nn.Module):
    """One pre-norm residual block. Returns ``(x, new (k, v) or None)`` so that it can be scanned
    over layers (the layer's cache slice is scanned in and its update scanned out)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self,
        x_BxLxD: Array,
        segment_ids_BxL: Array,
        positions_BxL: Array,
        kv: tuple[Array, Array] | None = None,
        kv_segments_BxS: Array | None = None,
        index: Array | None = None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        cache: LayerCache | None = None if kv is None else (*kv, kv_segments_BxS, index)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="attn_norm")(x_BxLxD)
        attn_BxLxD, new_kv = Attention(cfg, name="attn")(h, segment_ids_BxL, positions_BxL, cache)
        residual = forward_multipliers(cfg).residual  # CompleteP's depth multiplier; 1 otherwise
        x_BxLxD = x_BxLxD + scaled(attn_BxLxD, residual)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="mlp_norm")(x_BxLxD)
        x_BxLxD = x_BxLxD + scaled(Mlp(cfg, name="mlp")(h), residual)
        return x_BxLxD, new_kv


def unstack_layers(params: dict, n_layers: int) -> dict:
    """Parameters of a scanned stack (layers stacked on axis 0 under ``layers``) in the unrolled
    layout ``layer_0``, ``layer_1``, ... of the same model with ``scan_layers=False``."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(n_layers):
        out[f"layer_{i}"] = jax.tree.map(lambda a, i=i: a[i], params["layers"])
    return out


def _block_class(cfg: ModelConfig) -> type[nn.Module]:
    if cfg.remat == "none":
        return Block
    # prevent_cse is only needed outside scan (scan already stops CSE across iterations).
    return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
    """Maps tokens ``[B, L]`` to float32 logits ``[B, L, V]``.

    ``segment_ids`` (0 = padding) keep packed documents from attending to each other and
    ``positions`` restart RoPE at each document; by default the whole row is one document.
    """

    cfg: ModelConfig

    def setup(self) -> None:
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.embed = Embedding(cfg.vocab_size, cfg.d_model, cfg.init_std, dtype, pdtype, name="embed")
        block = _block_class(cfg)
        if cfg.scan_layers:
            self.layers = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                # segment ids, positions | this layer's (k, v) | slot segment ids, write index
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast),
                length=cfg.n_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
        else:
            self.blocks = [block(cfg, name=f"layer_{i}") for i in range(cfg.n_layers)]
        self.final_norm = RMSNorm(cfg.norm_eps, dtype, pdtype, name="final_norm")
        if not cfg.tie_embeddings:
            self.unembed = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                dtype=dtype,
                param_dtype=pdtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.zeros if cfg.zero_readout else dense_init(cfg.init_std), ("embed", "vocab")
                ),
                dot_general=dense_dot_general,
                name="unembed",
            )

    def hidden(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> Array:
        """The final-normed hidden states ``[B, L, D]`` (heads such as a reward head read these)."""
        if segment_ids_BxL is None:
            segment_ids_BxL = jnp.ones_like(tokens_BxL)
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
        h_BxLxD, _ = self._stack(self.embed(tokens_BxL), segment_ids_BxL, positions_BxL, None)
        return h_BxLxD

    def _stack(
        self, x_BxLxD: Array, segment_ids_BxL: Array, positions_BxL: Array, cache: KVCache | None
    ) -> tuple[Array, KVCache | None]:
        """The layers and the final norm; with a cache, also the cache holding the new tokens."""
        kv_segments_BxS = index = None
        if cache is not None:
            index, kv_segments_BxS = cache.index, cache.segment_ids
        if self.cfg.scan_layers:
            # The scan takes the layers' caches stacked [N, ...]: a copy per step, which is why
            # lmx.decode.generate decodes with the layers unrolled.
            kv = None if cache is None else (jnp.stack(cache.k), jnp.stack(cache.v))
            x_BxLxD, stacked = self.layers(x_BxLxD, segment_ids_BxL, positions_BxL, kv, kv_segments_BxS, index)
            new_k, new_v = (None, None) if cache is None else (tuple(stacked[0]), tuple(stacked[1]))
        else:
            per_layer = []
            for i, block in enumerate(self.blocks):
                layer_kv = None if cache is None else (cache.k[i], cache.v[i])
                x_BxLxD, out = block(x_BxLxD, segment_ids_BxL, positions_BxL, layer_kv, kv_segments_BxS, index)
                per_layer.append(out)
            new_k, new_v = (None, None) if cache is None else tuple(zip(*per_layer, strict=True))
        h_BxLxD = self.final_norm(x_BxLxD)
        if cache is None:
            return h_BxLxD, None
        # Each layer's new keys and values [B, K, L, E] go to slots [index, index + L) of its buffer.
        at = (0, 0, index, 0)

        def write(buffers: tuple[Array, ...], new: tuple[Array, ...]) -> tuple[Array, ...]:
            return tuple(
                constrain(jax.lax.dynamic_update_slice(buf, x, at), KVCache.AXES)
                for buf, x in zip(buffers, new, strict=True)
            )

        new_cache = KVCache(
            k=write(cache.k, new_k),
            v=write(cache.v, new_v),
            segment_ids=jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids_BxL, (0, index)),
            index=index + x_BxLxD.shape[1],
        )
        return h_BxLxD, new_cache

    def decode(
        self, tokens_BxL: Array, segment_ids_BxL: Array, positions_BxL: Array, cache: KVCache
    ) -> tuple[Array, KVCache]:
        """Feeds L new tokens through the cache: float32 logits ``[B, V]`` of the last one, and the
        cache with their keys and values written at slots ``[cache.index, cache.index + L)``.

        Prefill is a call with the (left-padded) prompts; each decoding step a call with L = 1.
        """
        h_BxLxD, new_cache = self._stack(self.embed(tokens_BxL), segment_ids_BxL, positions_BxL, cache)
        return self.logits(h_BxLxD[:, -1:])[:, 0], new_cache

    def logits(self, h_BxLxD: Array) -> Array:
        logits_BxLxV = self.embed.attend(h_BxLxD) if self.cfg.tie_embeddings else self.unembed(h_BxLxD)
        return scaled(logits_BxLxV.astype(jnp.float32), forward_multipliers(self.cfg).readout)

    def __call__(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> Array:
        return self.logits(self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL))
