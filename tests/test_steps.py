"""The pmap-style pretraining step: identical numbers on every mesh, real sharding, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from lmx.config import Config
from lmx.errors import ConfigError
from lmx.objectives.losses import cross_entropy_sums
from lmx.train.optim import make_schedule, weight_decay_mask
from lmx.train.setup import default_loss, setup_training, synthetic_batch
from lmx.train.steps import sharded_gradients

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
N_STEPS = 5


def mesh_config(cfg: Config, shape) -> Config:
    return cfg.replace(**{"mesh.data": shape[0], "mesh.fsdp": shape[1], "mesh.tensor": shape[2]})


def batches(cfg: Config, n: int):
    rng = np.random.default_rng(123)
    return [synthetic_batch(rng, cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size) for _ in range(n)]


def run_steps(cfg: Config, devices, n: int = N_STEPS):
    setup = setup_training(cfg, devices)
    step = setup.make_step()
    state, losses = setup.state, []
    for batch in batches(cfg, n):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses, metrics


@pytest.fixture(scope="module")
def reference(cpu_devices):
    """Five AdamW steps on a 1-device mesh."""
    return run_steps(mesh_config(tiny_config(), (1, 1, 1)), cpu_devices[:1])


@pytest.fixture(scope="module")
def results(cpu_devices):
    return {shape: run_steps(mesh_config(tiny_config(), shape), cpu_devices) for shape in MESHES}


def assert_trees_close(a, b, atol, rtol=0.0):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", MESHES)
def test_five_steps_match_one_device(reference, results, shape):
    ref_state, ref_losses, _ = reference
    state, losses, _ = results[shape]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert losses[-1] < losses[0]  # it is learning, not standing still
    assert_trees_close(state.params, ref_state.params, atol=1e-5)
    assert int(state.step) == N_STEPS


def test_parameters_and_optimizer_state_really_are_sharded(results):
    state = results[(2, 2, 2)][0]
    # up-projection [layers, embed, mlp]: embed over fsdp (2), mlp over tensor (2).
    up = state.params["layers"]["mlp"]["up"]["kernel"]
    assert up.shape == (2, 32, 64)
    assert {s.data.shape for s in up.addressable_shards} == {(2, 16, 32)}
    # query [layers, embed, heads, head_dim]: embed over fsdp, heads over tensor.
    query = state.params["layers"]["attn"]["query"]["kernel"]
    assert {s.data.shape for s in query.addressable_shards} == {(2, 16, 2, 8)}
    # The embedding [vocab, embed]: vocab over tensor, embed over fsdp.
    embedding = state.params["embed"]["embedding"]
    assert {s.data.shape for s in embedding.addressable_shards} == {(32, 16)}
    # Adam's moments are laid out like the parameters, not replicated.
    mu = state.opt_state[1][0].mu["layers"]["mlp"]["up"]["kernel"]
    assert mu.sharding.spec == up.sharding.spec
    assert {s.data.shape for s in mu.addressable_shards} == {(2, 16, 32)}


def test_gradients_on_a_mesh_equal_one_device_gradients(cpu_devices):
    """With plain gradients (no Adam to normalise scale), a doubled or halved collective shows."""
    grads = {}
    for shape, devices in [((1, 1, 1), cpu_devices[:1]), ((2, 2, 2), cpu_devices), ((8, 1, 1), cpu_devices)]:
        cfg = mesh_config(tiny_config(), shape)
        setup = setup_training(cfg, devices)
        fn = jax.jit(sharded_gradients(default_loss(setup), setup.mesh, cfg.mesh.rules))
        with jax.set_mesh(setup.mesh):
            grads[shape] = fn(setup.state.params, batches(cfg, 1)[0])
    for shape in [(2, 2, 2), (8, 1, 1)]:  # (gradient sums, loss sum, stats sums): compare relatively
        assert_trees_close(grads[shape], grads[(1, 1, 1)], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape, micro", [((1, 1, 1), 4), ((2, 2, 2), 2)])
def test_micro_batch_accumulation_equals_the_whole_batch(reference, cpu_devices, shape, micro):
    devices = cpu_devices[: int(np.prod(shape))]
    cfg = mesh_config(tiny_config(**{"train.micro_batches": micro}), shape)
    _, losses, _ = run_steps(cfg, devices, n=2)
    ref_losses = reference[1][:2]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)


def test_batch_must_split_over_data_shards_and_micro_batches(cpu_devices):
    cfg = mesh_config(tiny_config(**{"train.batch_size": 12, "train.micro_batches": 2}), (4, 2, 1))
    with pytest.raises(ConfigError, match="train.batch_size=12"):
        setup_training(cfg, cpu_devices)


def test_metrics_report_loss_grad_norm_lr_and_tokens(reference):
    _, losses, metrics = reference
    cfg = tiny_config()
    assert set(metrics) >= {"loss", "grad_norm", "lr", "tokens", "ce", "z_loss"}
    assert float(metrics["tokens"]) == cfg.train.batch_size * cfg.data.seq_len
    schedule = make_schedule(cfg.optim, cfg.train.steps)
    assert float(metrics["lr"]) == pytest.approx(float(schedule(N_STEPS - 1)))
    assert float(metrics["grad_norm"]) > 0
    assert float(metrics["loss"]) == pytest.approx(losses[-1])


def test_z_loss_and_masked_cross_entropy_match_their_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 5))
    weights = (rng.random((2, 5)) > 0.3).astype(np.float32)
    loss, stats = cross_entropy_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), z_loss=1e-2)
    log_z = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    assert float(stats["ce"]) == pytest.approx(np.sum(nll * weights), rel=1e-5)
    assert float(stats["z_loss"]) == pytest.approx(np.sum(log_z**2 * weights), rel=1e-5)
    assert float(loss) == pytest.approx(np.sum(nll * weights) + 1e-2 * np.sum(log_z**2 * weights), rel=1e-5)
    assert float(stats["weight"]) == weights.sum()


def test_schedules():
    cfg = tiny_config(**{"optim.warmup_steps": 10, "optim.min_lr_ratio": 0.1, "optim.learning_rate": 1.0})
    cosine = make_schedule(cfg.optim, 110)
    assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(60)) == pytest.approx(0.55, abs=1e-6)  # halfway down the cosine
    assert float(cosine(110)) == pytest.approx(0.1)
    wsd = make_schedule(cfg.replace(**{"optim.schedule": "wsd", "optim.decay_fraction": 0.2}).optim, 110)
    assert float(wsd(5)) == pytest.approx(0.5)
    assert float(wsd(10)) == float(wsd(50)) == float(wsd(88)) == pytest.approx(1.0)  # stable until step 88
    assert float(wsd(99)) == pytest.approx(0.55)
    assert float(wsd(110)) == pytest.approx(0.1)


def test_weight_decay_skips_norm_scales(reference):
    params = reference[0].params
    mask = weight_decay_mask(params)
    assert mask["layers"]["mlp"]["up"]["kernel"] and mask["embed"]["embedding"]
    assert not mask["layers"]["attn_norm"]["scale"] and not mask["final_norm"]["scale"]
    # With zero gradients, AdamW moves only decayed parameters.
    opt = optax.adamw(1.0, weight_decay=0.5, mask=weight_decay_mask)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    assert np.all(np.asarray(updates["layers"]["attn_norm"]["scale"]) == 0)
    assert np.any(np.asarray(updates["layers"]["mlp"]["up"]["kernel"]) != 0)


@pytest.mark.slow
def test_tiny_model_overfits_one_batch(cpu_devices):
    cfg = tiny_config(
        **{
            "train.steps": 300,
            "optim.learning_rate": 3e-3,
            "optim.warmup_steps": 20,
            "optim.weight_decay": 0.0,
            "mesh.data": 1,
        }
    )
    setup = setup_training(cfg, cpu_devices[:1])
    step = setup.make_step()
    batch = batches(cfg, 1)[0]
    state = setup.state
    for _ in range(cfg.train.steps):
        state, metrics = step(state, batch)
    assert float(metrics["loss"]) < 0.1
