"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus) sampling.

Pure functions of arrays. The sampling settings are traced values, not static arguments, so one
compiled decoding step serves every temperature, k and p.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lmx.errors import ConfigError

Array = jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sampling:
    """temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature}: must be >= 0")
        if self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p}: must be in (0, 1]")

    def arrays(self) -> dict[str, Array]:
        """The settings as the arrays `sample` takes."""
        return {
            "temperature": jnp.float32(self.temperature),
            "top_k": jnp.int32(self.top_k),
            "top_p": jnp.float32(self.top_p),
        }


GREEDY = Sampling(temperature=0.0)


def filter_logits(logits_BxV: Array, top_k: Array, top_p: Array) -> Array:
    """Sets every logit outside the top k and outside the nucleus to -inf.

    The nucleus (Holtzman et al. 2019) is the smallest set of most likely tokens whose probability
    reaches `top_p`: a token is kept when the tokens more likely than it hold less than `top_p`.
    Ties with the last kept logit are kept too.
    """
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    vocab = logits_BxV.shape[-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    keep_BxV = (jnp.arange(vocab) < k) & (mass_before_BxV < top_p)
    keep_BxV = keep_BxV.at[:, 0].set(True)  # the most likely token always survives
    # Kept entries are a prefix of the sorted row: the threshold is the last kept logit.
    threshold_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


def sample(logits_BxV: Array, key: Array, temperature: Array, top_k: Array, top_p: Array) -> Array:
    """Next tokens ``[B]`` (int32): the argmax where `temperature` is 0, else a draw from
    ``softmax(logits / temperature)`` restricted by `top_k` and `top_p`."""
    logits_BxV = logits_BxV.astype(jnp.float32)

    def greedy(logits_BxV: Array) -> Array:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

    def draw(logits_BxV: Array) -> Array:
        scaled_BxV = logits_BxV / temperature
        # The filters sort the vocabulary: skipped when neither is on.
        filtered_BxV = jax.lax.cond(
            (top_k > 0) | (top_p < 1), lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled_BxV
        )
        return jax.random.categorical(key, filtered_BxV, axis=-1).astype(jnp.int32)

    # A branch, not a select of both: greedy decoding never pays for sorting the vocabulary, which
    # costs about as much as a small model's decoding step on CPU.
    return jax.lax.cond(temperature > 0, draw, greedy, logits_BxV)
