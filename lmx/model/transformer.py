"""The decoder-only transformer: embedding, pre-norm blocks (attention + MLP), final norm, logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import ModelConfig
from lmx.model.layers import Attention, Embedding, Mlp, RMSNorm, dense_init

Array = jax.Array

# Which intermediate values a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "full": None,  # keep nothing: recompute the whole block
    "save_dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # keep weight matmuls
}


class Block(nn.Module):
    """One pre-norm residual block. Returns ``(x, None)`` so that it can be scanned over layers."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxD: Array, segment_ids_BxL: Array, positions_BxL: Array) -> tuple[Array, None]:
        cfg = self.cfg
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="attn_norm")(x_BxLxD)
        x_BxLxD = x_BxLxD + Attention(cfg, name="attn")(h, segment_ids_BxL, positions_BxL)
        h = RMSNorm(cfg.norm_eps, dtype, pdtype, name="mlp_norm")(x_BxLxD)
        x_BxLxD = x_BxLxD + Mlp(cfg, name="mlp")(h)
        return x_BxLxD, None


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
                in_axes=(nn.broadcast, nn.broadcast),
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
                kernel_init=nn.with_logical_partitioning(dense_init(cfg.init_std), ("embed", "vocab")),
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
        x_BxLxD = self.embed(tokens_BxL)
        if self.cfg.scan_layers:
            x_BxLxD, _ = self.layers(x_BxLxD, segment_ids_BxL, positions_BxL)
        else:
            for block in self.blocks:
                x_BxLxD, _ = block(x_BxLxD, segment_ids_BxL, positions_BxL)
        return self.final_norm(x_BxLxD)

    def logits(self, h_BxLxD: Array) -> Array:
        logits_BxLxV = self.embed.attend(h_BxLxD) if self.cfg.tie_embeddings else self.unembed(h_BxLxD)
        return logits_BxLxV.astype(jnp.float32)

    def __call__(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> Array:
        return self.logits(self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL))
