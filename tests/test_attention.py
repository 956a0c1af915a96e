"""Attention implementations: each equals the reference (outputs and gradients, packing, GQA, MQA,
QK-norm, ragged lengths), decodes the same tokens, and chunked attention's memory grows linearly."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from lmx.config import DEFAULT_RULES, MeshConfig, ModelConfig
from lmx.decode.generate import Generator, greedy_without_cache
from lmx.errors import CheckpointError
from lmx.model import Transformer
from lmx.model.attention import attend, resolve_attention
from lmx.parallel import make_mesh
from lmx.train.run_dir import check_same_model
from lmx.train.setup import setup_training, synthetic_batch

# splash runs TPU's Pallas kernel in interpret mode here (and says so in a warning).
IMPLEMENTATIONS = [
    "dot_product",
    "chunked",
    pytest.param("splash", marks=pytest.mark.filterwarnings("ignore:model.attention=splash")),
]
BLOCK = 16
L = 37  # not a multiple of the block


def packed_segments(rows: int, length: int) -> np.ndarray:
    """Row 0: three documents and trailing padding; row 1: two documents; row 2: one, no padding."""
    seg = np.ones((rows, length), np.int32)
    seg[0, 10:] = 2
    seg[0, 23:] = 3
    seg[0, 31:] = 0
    seg[1, 20:] = 2
    return seg


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("heads", [(4, 2), (4, 1), (2, 2)], ids=["gqa", "mqa", "mha"])
def test_implementation_equals_the_reference_in_outputs_and_gradients(name, heads):
    h, kv = heads
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(3, L, n, 8)), jnp.float32) for n in (h, kv, kv))
    seg = jnp.asarray(packed_segments(3, L))
    index = jnp.broadcast_to(jnp.arange(L), (3, L))
    cotangent = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def outputs_and_grads(impl):
        def loss(q, k, v):
            out = attend(impl, q, k, v, seg, seg, index, index, BLOCK)
            return jnp.sum(out * cotangent), out

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    grads_ref, out_ref = outputs_and_grads("reference")
    grads, out = outputs_and_grads(name)
    np.testing.assert_allclose(out, out_ref, atol=2e-6)
    assert not np.any(out_ref[0, 31:])  # padding queries see nothing: zeros in both
    for g, g_ref in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(g, g_ref, atol=5e-6)


MODEL = ModelConfig(
    vocab_size=64,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_ff=64,
    max_seq_len=48,
    qk_norm=True,
    attention_block=BLOCK,
)


@pytest.fixture(scope="module")
def params():
    return nn.unbox(Transformer(MODEL).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_a_model_with_qk_norm_and_packing_has_the_reference_loss_and_gradients(params, name):
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 64, (3, L)), jnp.int32)
    seg = jnp.asarray(packed_segments(3, L))

    def loss_and_grads(impl):
        model = Transformer(dataclasses.replace(MODEL, attention=impl))

        def loss(p):
            logits = model.apply({"params": p}, tokens, seg)
            return jnp.sum(jax.nn.log_softmax(logits)[..., 0] * (seg != 0))

        return jax.jit(jax.value_and_grad(loss))(params)

    loss_ref, grads_ref = loss_and_grads("reference")
    loss, grads = loss_and_grads(name)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
        np.testing.assert_allclose(g, g_ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_greedy_decoding_with_the_cache_gives_the_same_tokens(params, name):
    params = jax.tree.map(lambda x: 8 * x, params)  # sharp logits: greedy choices far from ties
    prompts = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [3]]
    reference = greedy_without_cache(Transformer(MODEL), params, prompts, 10, MODEL.max_seq_len)
    model = Transformer(dataclasses.replace(MODEL, attention=name))
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    out = Generator(model, params, mesh, DEFAULT_RULES, batch_size=3, eos_id=-1).generate(prompts, 10)
    assert [g.tokens for g in out] == reference
    assert len({tuple(r) for r in reference}) == 3


def test_auto_resolves_by_platform_and_decodes_with_the_reference():
    assert [resolve_attention("auto", p) for p in ("cpu", "gpu", "tpu")] == ["reference", "dot_product", "chunked"]
    assert resolve_attention("auto", "gpu", decoding=True) == "reference"
    assert resolve_attention("chunked", "cpu", decoding=True) == "chunked"
    with pytest.warns(UserWarning, match="^model.attention=splash: decoding with a KV cache uses the reference"):
        assert resolve_attention("splash", "tpu", decoding=True) == "reference"
    assert resolve_attention("splash", "tpu") == "splash"


def test_splash_pads_rows_to_whole_128_blocks_and_warns_off_tpu():
    from lmx.model.splash_attention import splash_attention, splash_block

    assert [splash_block(b, n) for b, n in ((16, 37), (512, 37), (512, 300), (100, 1000), (512, 4096))] == [
        128,
        128,
        384,
        128,
        512,
    ]
    q = jnp.ones((1, 5, 2, 8))
    with pytest.warns(UserWarning, match="^model.attention=splash: TPU's Pallas kernel runs in interpret mode on cpu"):
        out = splash_attention(q, q[:, :, :1], q[:, :, :1], jnp.ones((1, 5), jnp.int32), 16)
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)  # equal values: every query averages ones


def train_step_temp_bytes(attention: str, length: int, cpu_devices) -> int:
    """XLA's temporary memory of the compiled one-device train step (forward, backward, AdamW)."""
    cfg = tiny_config(
        **{
            "model.max_seq_len": length,
            "model.n_layers": 1,
            "model.attention": attention,
            "model.attention_block": 256,
        },
        **{"data.seq_len": length, "train.batch_size": 1},
    )
    setup = setup_training(cfg, cpu_devices[:1])
    batch = synthetic_batch(np.random.default_rng(0), 1, length, cfg.model.vocab_size)
    return setup.make_step().lower(setup.state, batch).compile().memory_analysis().temp_size_in_bytes


def test_chunked_attention_memory_grows_linearly_with_length(cpu_devices):
    """The reference's 4096/1024 ratio is about 16 (BENCHMARKS.md, benchmarks/attention.py)."""
    sizes = {n: train_step_temp_bytes("chunked", n, cpu_devices) for n in (1024, 2048, 4096)}
    print({n: f"{b / 2**20:.1f} MiB" for n, b in sizes.items()})
    assert sizes[2048] / sizes[1024] <= 2.5
    assert sizes[4096] / sizes[1024] <= 5


def test_a_checkpoint_restores_under_another_attention_or_dtype_but_not_another_shape(tmp_path):
    saved = tiny_config(**{"model.attention": "reference", "model.dtype": "float32"}).to_dict()
    del saved["model"]["attention_block"]  # a checkpoint from before the field existed
    meta = {"config": saved}
    check_same_model(tmp_path, meta, tiny_config(**{"model.attention": "chunked", "model.dtype": "bfloat16"}))
    with pytest.raises(CheckpointError, match=r"different model \(model.d_model: 32 -> 64\)"):
        check_same_model(tmp_path, meta, tiny_config(**{"model.d_model": 64}))


@pytest.mark.filterwarnings("ignore:model.attention=splash")
@pytest.mark.parametrize("heads", [(4, 2), (4, 1)], ids=["gqa", "mqa"])
def test_splash_on_a_2x2x2_mesh_trains_as_the_reference_on_one_device(cpu_devices, heads):
    """Under a step's mesh the kernel runs one shard at a time (a shard_map over fsdp and tensor, as
    a Mosaic kernel needs on TPU): the loss and the updated parameters are the reference's. With
    MQA the one kv head cannot split over tensor, so neither are the query heads."""
    h, kv = heads
    base = tiny_config(**{"model.n_heads": h, "model.n_kv_heads": kv, "train.batch_size": 8})
    batch = synthetic_batch(np.random.default_rng(0), 8, base.data.seq_len, base.model.vocab_size)
    batch["segment_ids"] = np.asarray(packed_segments(8, base.data.seq_len))

    def one_step(attention, mesh, devices):
        cfg = base.replace(**{"model.attention": attention, "mesh.data": mesh[0], "mesh.fsdp": mesh[1]})
        cfg = cfg.replace(**{"mesh.tensor": mesh[2]})
        setup = setup_training(cfg, devices)
        state, metrics = setup.make_step()(setup.state, batch)
        return float(metrics["loss"]), jax.device_get(state.params)

    loss_ref, params_ref = one_step("reference", (1, 1, 1), cpu_devices[:1])
    loss, params = one_step("splash", (2, 2, 2), cpu_devices)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(params_ref), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
