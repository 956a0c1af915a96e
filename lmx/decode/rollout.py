"""Rollouts for online RL: a batch of completions sampled in one compiled program.

`Generator.generate` streams: one host round trip per token, so that `lmx generate` can print as it
goes. RL needs no streaming but many samples, so here prefill and every decoding step run inside
one jitted function, a `lax.while_loop` that stops as soon as every row has ended (EOS) or after
`max_new_tokens`. Each row also records the log-probability of each token it sampled, under the
distribution it was sampled from (softmax of the logits over the temperature, before top-k/top-p
filtering; the plain softmax for greedy rows), which the RL update compares with its own forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmx.decode.generate import Generator, check_prompts, left_pad, prefill_width
from lmx.decode.sampling import Sampling, sample
from lmx.model import Transformer

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """Completions of one batch of prompts (rows beyond the prompts dropped)."""

    tokens: np.ndarray  # [N, max_new_tokens] int32: sampled tokens, EOS included, pad_id after the end
    logps: np.ndarray  # [N, max_new_tokens] float32: their log-probabilities (0 after the end)
    lengths: np.ndarray  # [N] int32: tokens per completion, EOS included
    ended: np.ndarray  # [N] bool: stopped by EOS (else truncated at max_new_tokens)
    steps: int  # decoding steps run (fewer than max_new_tokens when every row ended early)


def token_logps(logits_BxV: Array, tokens_B: Array, temperature: Array) -> Array:
    """Log-probabilities of `tokens_B` under softmax(logits / temperature), or softmax(logits) when
    the temperature is 0 (greedy)."""
    scale = jnp.where(temperature > 0, temperature, 1.0)
    logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32) / scale, axis=-1)
    return jnp.take_along_axis(logp_BxV, tokens_B[:, None], axis=-1)[:, 0]


class RolloutGenerator(Generator):
    """A `Generator` that also samples whole batches in one compiled call (`rollout`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rollouts: dict[int, object] = {}  # one compiled loop per max_new_tokens

    def _rollout_fn(self, params, cache, tokens, segment_ids, positions, lengths_B, seed, sampling, ids, max_new: int):
        eos_id, pad_id = ids  # traced: one program for any tokenizer

        def run():
            rows = tokens.shape[0]
            logits, cache1 = self.model.apply(
                {"params": params}, tokens, segment_ids, positions, cache, method=Transformer.decode
            )
            first = sample(logits, jax.random.fold_in(jax.random.key(seed), 0), **sampling)
            out_BxN = jnp.full((rows, max_new), pad_id, jnp.int32).at[:, 0].set(first)
            logp_BxN = (
                jnp.zeros((rows, max_new), jnp.float32)
                .at[:, 0]
                .set(token_logps(logits, first, sampling["temperature"]))
            )
            ended_B = first == eos_id

            def more(carry) -> Array:
                t, _, _, _, ended_B = carry
                return (t < max_new) & ~jnp.all(ended_B)

            def step(carry):
                t, cache, out_BxN, logp_BxN, ended_B = carry
                previous_B = out_BxN[:, t - 1]
                logits, cache = self.model.apply(
                    {"params": params},
                    previous_B[:, None],
                    jnp.ones_like(previous_B)[:, None],
                    (lengths_B + t - 1)[:, None],
                    cache,
                    method=Transformer.decode,
                )
                token_B = sample(logits, jax.random.fold_in(jax.random.key(seed), t), **sampling)
                token_B = jnp.where(ended_B, pad_id, token_B)
                logp_B = jnp.where(ended_B, 0.0, token_logps(logits, token_B, sampling["temperature"]))
                out_BxN = out_BxN.at[:, t].set(token_B)
                logp_BxN = logp_BxN.at[:, t].set(logp_B)
                return t + 1, cache, out_BxN, logp_BxN, ended_B | (token_B == eos_id)

            steps, _, out_BxN, logp_BxN, ended_B = jax.lax.while_loop(
                more, step, (jnp.int32(1), cache1, out_BxN, logp_BxN, ended_B)
            )
            return out_BxN, logp_BxN, ended_B, steps

        return self._traced("rollout", run)

    def _compiled(self, max_new: int):
        if max_new not in self._rollouts:
            self._rollouts[max_new] = jax.jit(lambda *args: self._rollout_fn(*args, max_new=max_new))
        return self._rollouts[max_new]

    def rollout(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling) -> Rollouts:
        """Samples one completion per prompt (at most `batch_size` prompts) in one compiled call.
        The same prompts, batch size and ``sampling.seed`` give the same completions."""
        if len(prompts) > self.batch_size:
            raise ValueError(f"{len(prompts)} prompts for a rollout batch of {self.batch_size}")
        check_prompts(prompts, max_new_tokens, self.max_len)
        width = prefill_width(max(len(p) for p in prompts), max_new_tokens, self.max_len)
        host = left_pad(prompts, self.batch_size, width, self.pad_id)
        batch = {k: jax.device_put(v, self._rows) for k, v in host.items()}
        lengths = [len(p) for p in prompts] + [1] * (self.batch_size - len(prompts))
        lengths_B = jax.device_put(np.asarray(lengths, np.int32), self._batch_rows)
        seed = jnp.int32((sampling.seed * 1_000_003) % 2**31)  # as `generate` seeds its first batch
        out, logps, ended, steps = self._compiled(max_new_tokens)(
            self.params,
            self._new_cache(),
            batch["tokens"],
            batch["segment_ids"],
            batch["positions"],
            lengths_B,
            seed,
            sampling.arrays(),
            (jnp.int32(self.eos_id), jnp.int32(self.pad_id)),
        )
        n = len(prompts)
        tokens, logps, ended = np.asarray(out)[:n], np.asarray(logps)[:n], np.asarray(ended)[:n]
        is_eos = tokens == self.eos_id
        completion = np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, max_new_tokens).astype(np.int32)
        return Rollouts(tokens, logps, completion, ended, int(steps))
