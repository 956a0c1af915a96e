"""Parametrizations (sp, mup, completep): equal at the base shape, the papers' rules elsewhere."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import tiny_config

from lmx.errors import ConfigError
from lmx.model.parametrization import parameter_factors, path_key
from lmx.model.transformer import Transformer
from lmx.train.setup import setup_training, synthetic_batch

N_STEPS = 3


def run(cfg, devices, n=N_STEPS, initial=None):
    """`n` steps on fixed batches; `initial` (a list) receives a host copy of the initial parameters."""
    setup = setup_training(cfg, devices)
    step = setup.make_step()
    state, losses = setup.state, []
    if initial is not None:
        initial.append(jax.tree.map(np.asarray, state.params))
    rng = np.random.default_rng(7)
    for _ in range(n):
        batch = synthetic_batch(rng, cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.fixture(scope="module")
def sp_run(cpu_devices):
    return run(tiny_config(), cpu_devices[:1])


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.parametrization": "mup"},
        {"model.parametrization": "completep"},
        # The base given explicitly, and completep's alpha, which a base depth makes moot.
        {
            "model.parametrization": "completep",
            "model.base_d_model": 32,
            "model.base_n_layers": 2,
            "model.depth_alpha": 0.5,
        },
    ],
    ids=["mup", "completep", "completep-explicit-base"],
)
def test_base_shape_trains_exactly_as_sp(sp_run, cpu_devices, overrides):
    """At the base shape every multiplier is 1: the same losses and parameters, step for step."""
    sp_state, sp_losses = sp_run
    state, losses = run(tiny_config(**overrides), cpu_devices[:1])
    assert losses == sp_losses
    for a, b in zip(jax.tree.leaves(sp_state.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_off_base_shape_differs_from_sp(sp_run, cpu_devices):
    """A check that could fail: half the base width changes init and updates."""
    _, sp_losses = sp_run
    _, losses = run(tiny_config(**{"model.parametrization": "mup", "model.base_d_model": 16}), cpu_devices[:1])
    assert losses != sp_losses


# The rules written out by hand per parameter of tiny_config's model (independent of the library's
# classification by logical axes): m = width / base width, m_L = depth / base depth.
HIDDEN = {"attn/query/kernel", "attn/key/kernel", "attn/value/kernel", "attn/out/kernel"}
HIDDEN |= {"mlp/up/kernel", "mlp/gate/kernel", "mlp/down/kernel"}
BLOCK_NORMS = {"attn_norm/scale", "mlp_norm/scale"}


def expected_factors(parametrization, m, m_depth, alpha, key):
    """(learning rate, weight decay, epsilon) multipliers of one parameter, from the papers' tables."""
    inner = key.removeprefix("layers/")
    if parametrization == "mup":  # Tensor Programs V, Table 8; mup's MuAdamW(decoupled_wd=False)
        return (1 / m, m, 1.0) if inner in HIDDEN else (1.0, 1.0, 1.0)
    eps = 1 / (m * m_depth**alpha)  # CompleteP (Dey et al. 2025)
    if inner in HIDDEN:
        return (m_depth ** (alpha - 1) / m, m, eps)
    if inner in BLOCK_NORMS:
        return (m_depth ** (alpha - 1), 1.0, eps)
    assert key in ("embed/embedding", "final_norm/scale", "unembed/kernel"), key
    return (1.0, 1.0, 1 / m)  # outside the blocks epsilon follows the width only


SHAPES = [("mup", 64, 2, 1.0), ("mup", 128, 2, 1.0), ("completep", 64, 4, 0.5), ("completep", 128, 8, 0.5)]


@pytest.mark.parametrize("parametrization,width,depth,alpha", SHAPES)
def test_each_parameters_factors_follow_the_rule(parametrization, width, depth, alpha):
    overrides = {
        "model.parametrization": parametrization,
        "model.d_model": width,
        "model.n_heads": width // 8,
        "model.n_kv_heads": width // 16,
        "model.d_ff": 2 * width,
        "model.n_layers": depth,
        "model.base_d_model": 32,
        "model.base_n_layers": 2,
        "model.depth_alpha": alpha,
        "model.tie_embeddings": False,
    }
    cfg = tiny_config(**overrides).model
    factors = parameter_factors(cfg, Transformer(cfg))
    assert len(factors) == 12  # every parameter, tied or not, has its rule
    for key, f in factors.items():
        want = expected_factors(parametrization, width / 32, depth / 2, alpha, key)
        np.testing.assert_allclose((f.learning_rate, f.weight_decay, f.eps), want, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("width", [64, 128])
def test_one_adam_step_moves_each_parameter_by_its_learning_rate(cpu_devices, width):
    """Adam's first update is lr x g / (|g| + eps): with eps negligible, every entry with a nonzero
    gradient moves by exactly lr x its factor. Read off the optimizer, not the rules."""
    lr = 1e-3
    cfg = tiny_config(
        **{
            "model.parametrization": "mup",
            "model.d_model": width,
            "model.n_heads": width // 8,
            "model.n_kv_heads": width // 16,
            "model.d_ff": 2 * width,
            "model.base_d_model": 32,
            "optim.learning_rate": lr,
            "optim.schedule": "constant",
            "optim.warmup_steps": 0,
            "optim.weight_decay": 0.0,
            "optim.grad_clip": 0.0,
            "optim.eps": 1e-30,
        }
    )
    initial = []
    after, _ = run(cfg, cpu_devices[:1], n=1, initial=initial)
    m = width / 32
    leaves = jax.tree_util.tree_flatten_with_path(initial[0])[0]
    for (path, a), b in zip(leaves, jax.tree.leaves(after.params), strict=True):
        moved = np.abs(np.asarray(b, np.float64) - np.asarray(a, np.float64)) / lr
        moved = moved[moved > 0]
        assert moved.size, path_key(path)
        want = expected_factors("mup", m, 1.0, 1.0, path_key(path))[0]
        # float32 parameters near 0.02 resolve steps of about 1e-9: 1e-3 relative is ample.
        np.testing.assert_allclose(np.median(moved), want, rtol=1e-3, err_msg=path_key(path))


def test_hidden_init_variance_is_one_over_fan_in():
    """Hidden matrices' std falls as 1/sqrt(m); embeddings keep theirs."""

    def stds(width):
        model_cfg = tiny_config(
            **{
                "model.parametrization": "mup",
                "model.d_model": width,
                "model.n_heads": width // 8,
                "model.n_kv_heads": width // 16,
                "model.d_ff": 4 * width,
                "model.base_d_model": 64,
                "model.vocab_size": 512,
            }
        ).model
        params = Transformer(model_cfg).init(jax.random.key(0), np.zeros((1, 4), np.int32))["params"]
        params = nn.unbox(params)
        return float(np.std(params["layers"]["mlp"]["up"]["kernel"])), float(np.std(params["embed"]["embedding"]))

    (hidden_base, embed_base), (hidden_wide, embed_wide) = stds(64), stds(256)
    np.testing.assert_allclose(hidden_base, 0.02, rtol=0.02)
    np.testing.assert_allclose(hidden_wide / hidden_base, 0.5, rtol=0.02)
    np.testing.assert_allclose(embed_wide / embed_base, 1.0, rtol=0.02)


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"model.zero_readout": True}, "model.zero_readout"),
        ({"model.parametrization": "mup", "model.zero_readout": True}, "model.zero_readout"),
        ({"model.parametrization": "completep", "model.depth_alpha": 1.5}, "model.depth_alpha"),
        ({"model.base_d_model": -1}, "model.base_d_model"),
        # The base model divides every width by m = 32 / 3: a 48-wide MLP would be 4.5 wide.
        ({"model.parametrization": "mup", "model.base_d_model": 3, "model.d_ff": 48}, "model.d_ff"),
    ],
)
def test_bad_parametrization_settings_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny_config(**overrides)


def test_completep_scales_residual_branches_and_mup_the_logits():
    """Read inside the forward pass: each block adds m_L^-alpha x (attention + MLP), and the logits
    are the readout's product divided by m."""
    cfg = tiny_config(
        **{
            "model.parametrization": "completep",
            "model.d_model": 64,
            "model.n_heads": 8,
            "model.d_ff": 128,
            "model.n_layers": 4,
            "model.base_d_model": 32,
            "model.base_n_layers": 1,
            "model.depth_alpha": 0.5,
            "model.scan_layers": False,
        }
    ).model
    model = Transformer(cfg)
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % cfg.vocab_size
    variables = model.init(jax.random.key(1), tokens)
    logits, state = model.apply(variables, tokens, capture_intermediates=True, mutable=["intermediates"])
    acts = state["intermediates"]
    x = np.asarray(acts["embed"]["__call__"][0])
    for i in range(cfg.n_layers):
        layer = acts[f"layer_{i}"]
        branches = np.asarray(layer["attn"]["__call__"][0][0]) + np.asarray(layer["mlp"]["__call__"][0])
        out = np.asarray(layer["__call__"][0][0])
        np.testing.assert_allclose(out - x, 4**-0.5 * branches, rtol=1e-4, atol=1e-7)
        x = out
    params = nn.unbox(variables["params"])
    h = np.asarray(model.apply({"params": params}, tokens, method=Transformer.hidden))
    np.testing.assert_allclose(logits, h @ np.asarray(params["embed"]["embedding"]).T / 2, rtol=1e-4, atol=1e-6)


def test_hugging_face_export_refuses_multipliers_it_cannot_express():
    from lmx.hf.convert import check_exportable

    check_exportable(tiny_config(**{"model.parametrization": "mup"}).model)  # base shape: plain Llama
    with pytest.raises(ConfigError, match="model.parametrization='mup'"):
        check_exportable(tiny_config(**{"model.parametrization": "mup", "model.base_d_model": 16}).model)


def test_mup_attention_scales_as_one_over_head_dim():
    """With a head width 4x its base, mup's attention equals sp's with the queries multiplied by
    sqrt(base_head_dim / head_dim) = 1/2: logits q.k * sqrt(base) / head_dim, not q.k / sqrt(head_dim)."""
    from lmx.model.layers import Attention

    common = {"model.d_model": 64, "model.n_heads": 2, "model.n_kv_heads": 1, "model.head_size": 32}
    mup = tiny_config(**common, **{"model.parametrization": "mup", "model.base_head_dim": 8}).model
    sp = tiny_config(**common).model
    x = jax.random.normal(jax.random.key(3), (2, 6, 64))
    segments, positions = np.ones((2, 6), np.int32), np.broadcast_to(np.arange(6), (2, 6))
    params = nn.unbox(Attention(mup).init(jax.random.key(4), x, segments, positions)["params"])
    # Queries and keys 30x their init, so that the softmax is far from uniform and its scale shows.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: 30 * p if path_key(path) in ("query/kernel", "key/kernel") else p, params
    )
    out_mup, _ = Attention(mup).apply({"params": params}, x, segments, positions)
    halved = jax.tree_util.tree_map_with_path(lambda path, p: p / 2 if path_key(path) == "query/kernel" else p, params)
    out_sp, _ = Attention(sp).apply({"params": halved}, x, segments, positions)
    np.testing.assert_allclose(out_mup, out_sp, rtol=1e-5, atol=1e-6)
    unscaled, _ = Attention(sp).apply({"params": params}, x, segments, positions)
    # The check can fail: without the multiplier the outputs differ by more than a tenth.
    assert np.abs(np.asarray(unscaled) - np.asarray(out_mup)).max() > 0.1 * np.abs(np.asarray(out_mup)).max()


def test_scalar_heads_are_output_layers_under_mup():
    """A reward or value head reads the hidden state divided by m, as the language model's logits do."""
    from lmx.model.reward import PolicyWithValue, RewardModel

    common = {"model.d_model": 64, "model.n_heads": 8, "model.d_ff": 128}
    mup = tiny_config(**common, **{"model.parametrization": "mup", "model.base_d_model": 16}).model
    sp = tiny_config(**common).model
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % sp.vocab_size
    for cls, head, method in ((RewardModel, "reward_head", None), (PolicyWithValue, "value_head", "logits_and_values")):
        params = nn.unbox(cls(mup).init(jax.random.key(5), tokens)["params"])
        quartered = {**params, head: {**params[head], "kernel": params[head]["kernel"] / 4}}
        kwargs = {"method": method} if method else {}
        out_mup = cls(mup).apply({"params": params}, tokens, **kwargs)
        out_sp = cls(sp).apply({"params": quartered}, tokens, **kwargs)
        np.testing.assert_allclose(
            out_mup if method is None else out_mup[1], out_sp if method is None else out_sp[1], rtol=1e-5, atol=1e-7
        )
