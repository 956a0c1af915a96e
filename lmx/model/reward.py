"""A reward model: the transformer's layers with a scalar head instead of next-token logits."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmx.config import ModelConfig
from lmx.model.layers import dense_init
from lmx.model.parametrization import forward_multipliers, scaled
from lmx.model.transformer import Transformer

Array = jax.Array


def _readout_input(h: Array, cfg: ModelConfig) -> Array:
    """A scalar head is an output layer: under mup and completep its input is divided by the width
    multiplier, as the `mup` package's MuReadout does (a no-op at the base shape and under sp)."""
    return scaled(h, forward_multipliers(cfg).readout)


class RewardModel(Transformer):
    """Maps right-padded sequences ``[B, L]`` to float32 scores ``[B]``.

    The score is a linear head on the final-normed hidden state of each row's last non-padding token
    (segment id > 0), which has attended to the whole prompt and response; the reward-model
    objective passes whole sequences, so that token is the response's EOS. The parameter tree is the
    language model's (embed, layers, final_norm) plus ``reward_head``, so a pretrained or fine-tuned
    run initialises everything but the head (`objective.init_from`).

    With ``lm_head`` the model also keeps the language model's output layer (the untied ``unembed``;
    tied embeddings need nothing extra) for the next-token logits of `logits`, used by an
    auxiliary language-modelling loss (``objective.lm_loss_weight``).
    """

    lm_head: bool = False

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        self.reward_head = nn.Dense(
            1,
            use_bias=False,  # Bradley-Terry compares score differences: a bias would never train
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nn.with_logical_partitioning(dense_init(cfg.init_std), ("embed", None)),
            name="reward_head",
        )

    def __call__(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> Array:
        h_BxLxD = self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL)
        if self.lm_head and self.is_initializing():
            self.logits(h_BxLxD[:, :1])  # creates the untied output layer's parameters
        return self._score(h_BxLxD, tokens_BxL, segment_ids_BxL)

    def scores_and_hidden(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> tuple[Array, Array]:
        """``(scores [B], final-normed hidden states [B, L, D])``: the states give next-token logits
        through ``apply(..., method="logits")``, for the rows that need them."""
        h_BxLxD = self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL)
        return self._score(h_BxLxD, tokens_BxL, segment_ids_BxL), h_BxLxD

    def _score(self, h_BxLxD: Array, tokens_BxL: Array, segment_ids_BxL: Array | None) -> Array:
        if segment_ids_BxL is None:
            segment_ids_BxL = jnp.ones_like(tokens_BxL)
        last_B = jnp.sum(segment_ids_BxL > 0, axis=1) - 1
        # A masked sum rather than a gather: it partitions cleanly when the batch is sharded.
        at_last_BxL = jnp.arange(tokens_BxL.shape[1])[None, :] == last_B[:, None]
        h_BxD = jnp.sum(jnp.where(at_last_BxL[..., None], h_BxLxD, 0.0), axis=1)
        return self.reward_head(_readout_input(h_BxD, self.cfg))[:, 0].astype(jnp.float32)


class PolicyWithValue(Transformer):
    """The language model plus a value head: a scalar per position from the final-normed hidden
    state, PPO's critic sharing the policy's layers (as in Ziegler et al. 2019's implementation).

    Called like the language model it returns next-token logits, so generation, the KV cache and
    every language-model evaluator apply unchanged; `logits_and_values` gives both from one pass.
    The parameter tree is the language model's plus ``value_head``, so an SFT run initialises all
    but the head (`objective.init_from`).
    """

    def setup(self) -> None:
        super().setup()
        cfg = self.cfg
        self.value_head = nn.Dense(
            1,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            kernel_init=nn.with_logical_partitioning(dense_init(cfg.init_std), ("embed", None)),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
            name="value_head",
        )

    def __call__(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> Array:
        h_BxLxD = self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL)
        if self.is_initializing():
            self.value_head(_readout_input(h_BxLxD[:, :1], self.cfg))  # creates the head's parameters
        return self.logits(h_BxLxD)

    def logits_and_values(
        self, tokens_BxL: Array, segment_ids_BxL: Array | None = None, positions_BxL: Array | None = None
    ) -> tuple[Array, Array]:
        """``(logits [B, L, V], values [B, L] float32)``: the value at position t is that of the
        state after reading tokens 0..t, before the token that position predicts."""
        h_BxLxD = self.hidden(tokens_BxL, segment_ids_BxL, positions_BxL)
        values_BxL = self.value_head(_readout_input(h_BxLxD, self.cfg))[..., 0]
        return self.logits(h_BxLxD), values_BxL.astype(jnp.float32)
