"""Rollouts compiled as one program (lmx.decode.rollout): the streaming generator's tokens, log-probs
equal to a full forward pass's, an early exit once every row has ended, one compilation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_generate import CFG, NEW, PROMPTS  # the streaming generator's test shapes

from lmx.config import DEFAULT_RULES, MeshConfig
from lmx.decode.rollout import RolloutGenerator
from lmx.decode.sampling import GREEDY, Sampling
from lmx.model import Transformer
from lmx.parallel import make_mesh


@pytest.fixture(scope="module")
def model_and_params():
    model = Transformer(CFG)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    return model, jax.tree.map(lambda x: 4 * x, params)  # sharper than at initialisation


def generator(model_and_params, eos_id: int, shape=(1, 1, 1)) -> RolloutGenerator:
    model, params = model_and_params
    data, fsdp, tensor = shape
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[: data * fsdp * tensor])
    return RolloutGenerator(model, params, mesh, DEFAULT_RULES, batch_size=4, eos_id=eos_id)


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(temperature=0.8, top_p=0.9, seed=3)], ids=["greedy", "sampled"])
def test_rollouts_equal_the_streaming_generator_and_their_logps_a_full_forward(model_and_params, sampling):
    model, params = model_and_params
    gen = generator(model_and_params, eos_id=-1, shape=(2, 1, 2))
    rollouts = gen.rollout(PROMPTS, NEW, sampling)
    streamed = gen.generate(PROMPTS, NEW, sampling)
    assert rollouts.tokens.tolist() == [g.tokens for g in streamed]  # same draws: same seeds, same steps
    assert rollouts.steps == NEW and rollouts.lengths.tolist() == [NEW] * 4 and not rollouts.ended.any()
    # The recorded log-probs are those of the full forward over prompt + completion.
    temperature = sampling.temperature or 1.0
    forward = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
    for prompt, tokens, logps in zip(PROMPTS, rollouts.tokens, rollouts.logps, strict=True):
        padded = np.zeros((1, CFG.max_seq_len), np.int32)  # one shape: one compilation
        sequence = prompt + tokens.tolist()
        padded[0, : len(sequence)] = sequence
        logits = forward(padded)[0, len(prompt) - 1 : len(sequence) - 1] / temperature
        expected = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), jnp.asarray(tokens)[:, None], axis=-1)
        np.testing.assert_allclose(logps, np.asarray(expected)[:, 0], atol=2e-5)


def test_rows_stop_at_eos_and_the_loop_exits_when_all_have(model_and_params):
    """EOS is the token each row's greedy completion reaches first at some step: rows end there,
    pad after it, and the loop stops once every row has ended."""
    probe = generator(model_and_params, eos_id=-1).rollout(PROMPTS, NEW, GREEDY)
    eos = int(probe.tokens[0, 2])  # row 0 ends at its third token
    rollouts = generator(model_and_params, eos_id=eos).rollout(PROMPTS, NEW, GREEDY)
    for row, (tokens, full) in enumerate(zip(rollouts.tokens, probe.tokens, strict=True)):
        hits = np.flatnonzero(full == eos)
        n = int(hits[0]) + 1 if hits.size else NEW
        assert rollouts.lengths[row] == n and bool(rollouts.ended[row]) == bool(hits.size)
        assert tokens[:n].tolist() == full[:n].tolist() and np.all(tokens[n:] == 0)
        assert np.all(rollouts.logps[row, n:] == 0) and np.allclose(rollouts.logps[row, :n], probe.logps[row, :n])
    assert rollouts.steps == (max(rollouts.lengths) if rollouts.ended.all() else NEW)

    # Every row ends at once: one prefill, no decoding step.
    first = generator(model_and_params, eos_id=-1).rollout([PROMPTS[0]] * 4, NEW, GREEDY).tokens[0, 0]
    quick = generator(model_and_params, eos_id=int(first)).rollout([PROMPTS[0]] * 4, NEW, GREEDY)
    assert quick.steps == 1 and quick.lengths.tolist() == [1] * 4 and quick.ended.all()


def test_one_compilation_serves_every_batch_and_setting(model_and_params):
    gen = generator(model_and_params, eos_id=-1)
    a = gen.rollout(PROMPTS, NEW, Sampling(temperature=1.0, seed=1))
    b = gen.rollout(PROMPTS[::-1], NEW, Sampling(temperature=0.7, top_k=5, seed=2))
    again = gen.rollout(PROMPTS, NEW, Sampling(temperature=1.0, seed=1))
    assert gen.traces["rollout"] == 1
    assert np.array_equal(a.tokens, again.tokens) and not np.array_equal(a.tokens, b.tokens[::-1])
