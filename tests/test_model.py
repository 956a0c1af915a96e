import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.config import ModelConfig
from lmx.model import Transformer, unstack_layers
from lmx.model.layers import Attention, rope

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=16)
B, L = 2, 12


def init(cfg: ModelConfig, seed: int = 0):
    return nn.unbox(Transformer(cfg).init(jax.random.key(seed), jnp.zeros((1, L), jnp.int32)))["params"]


@pytest.fixture(scope="module")
def params():
    return init(CFG)


@pytest.fixture(scope="module")
def forward():
    return jax.jit(Transformer(CFG).apply)


def tokens(seed: int = 0, shape=(B, L)):
    return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, shape), jnp.int32)


def test_changing_a_later_token_leaves_earlier_logits_unchanged(params, forward):
    x = tokens()
    base = forward({"params": params}, x)
    for t in (0, 5, L - 2):
        changed = x.at[:, t + 1].set((x[:, t + 1] + 1) % CFG.vocab_size)
        out = forward({"params": params}, changed)
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_packed_documents_equal_each_document_alone(params, forward):
    lengths = [5, 4, 3]  # fills L = 12 exactly
    docs = [tokens(seed=i, shape=(1, n)) for i, n in enumerate(lengths)]
    packed = jnp.concatenate(docs, axis=1)
    segment_ids = jnp.concatenate([jnp.full((1, n), i + 1) for i, n in enumerate(lengths)], axis=1)
    positions = jnp.concatenate([jnp.arange(n)[None] for n in lengths], axis=1)
    out = forward({"params": params}, packed, segment_ids, positions)
    start = 0
    for doc, n in zip(docs, lengths, strict=True):
        alone = Transformer(CFG).apply({"params": params}, doc)
        np.testing.assert_allclose(out[:, start : start + n], alone, atol=2e-5, rtol=1e-5)
        start += n


def test_padding_segment_does_not_change_real_tokens(params, forward):
    x = tokens()
    segment_ids = jnp.ones((B, L), jnp.int32).at[:, 8:].set(0)
    padded = forward({"params": params}, x, segment_ids)
    trimmed = Transformer(CFG).apply({"params": params}, x[:, :8])
    np.testing.assert_allclose(padded[:, :8], trimmed, atol=2e-5, rtol=1e-5)
    assert np.all(np.isfinite(padded))  # padding rows see no keys: zeros, never NaN


def reference_mha(p, x_BxLxD, cfg: ModelConfig):
    """Plain multi-head causal attention in NumPy, written independently of lmx.model.layers."""
    x = np.asarray(x_BxLxD, np.float64)
    wq, wk, wv = (np.asarray(p[n]["kernel"], np.float64) for n in ("query", "key", "value"))
    wo = np.asarray(p["out"]["kernel"], np.float64)
    q, k, v = (np.einsum("bld,dhe->bhle", x, w) for w in (wq, wk, wv))
    pos = np.arange(x.shape[1])
    half = cfg.head_dim // 2
    freq = cfg.rope_theta ** (-np.arange(half) / half)
    ang = pos[:, None] * freq[None, :]

    def rot(t):
        t1, t2 = t[..., :half], t[..., half:]
        return np.concatenate([t1 * np.cos(ang) - t2 * np.sin(ang), t2 * np.cos(ang) + t1 * np.sin(ang)], -1)

    q, k = rot(q), rot(k)
    s = np.einsum("bhle,bhme->bhlm", q, k) / np.sqrt(cfg.head_dim)
    s = np.where(pos[:, None] >= pos[None, :], s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhlm,bhme->blhe", w, v)
    return np.einsum("blhe,hed->bld", o, wo)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_equals_plain_multi_head_attention(n_kv_heads):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=n_kv_heads, d_ff=64)
    x = jax.random.normal(jax.random.key(1), (B, L, cfg.d_model))
    seg = jnp.ones((B, L), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(L), (B, L))
    attn = Attention(cfg)
    p = nn.unbox(attn.init(jax.random.key(2), x, seg, pos))["params"]
    out, _ = attn.apply({"params": p}, x, seg, pos)
    if n_kv_heads < cfg.n_heads:  # GQA: each kv head serves n_heads // n_kv_heads query heads
        rep = cfg.n_heads // n_kv_heads
        p = dict(
            p,
            key={"kernel": jnp.repeat(p["key"]["kernel"], rep, axis=1)},
            value={"kernel": jnp.repeat(p["value"]["kernel"], rep, axis=1)},
        )
    np.testing.assert_allclose(out, reference_mha(p, x, cfg), atol=1e-5, rtol=1e-4)


def test_rope_preserves_norms_and_encodes_relative_position():
    x = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    y = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    inv_freq = 10_000.0 ** (-jnp.arange(4) / 4)

    def dot(pq, pk):
        return jnp.sum(rope(x, jnp.array([[pq]]), inv_freq) * rope(y, jnp.array([[pk]]), inv_freq))

    assert np.isclose(jnp.linalg.norm(rope(x, jnp.array([[7]]), inv_freq)), jnp.linalg.norm(x), rtol=1e-5)
    assert np.isclose(dot(3, 1), dot(12, 10), rtol=1e-4)


@pytest.mark.parametrize("remat", ["none", "full", "save_dots"])
def test_scanned_and_unrolled_layers_agree(params, forward, remat):
    x = tokens()
    unrolled_cfg = dataclasses.replace(CFG, scan_layers=False, remat=remat)
    unrolled = Transformer(unrolled_cfg)
    p_unrolled = unstack_layers(params, CFG.n_layers)
    assert jax.tree.structure(p_unrolled) == jax.tree.structure(init(unrolled_cfg))
    np.testing.assert_allclose(
        unrolled.apply({"params": p_unrolled}, x), forward({"params": params}, x), atol=2e-5, rtol=1e-5
    )

    def loss(p, model):
        return jnp.mean(model.apply({"params": p}, x) ** 2)

    g_scan = jax.grad(loss)(params, Transformer(CFG))
    g_unrolled = jax.grad(loss)(p_unrolled, unrolled)
    for a, b in zip(jax.tree.leaves(unstack_layers(g_scan, CFG.n_layers)), jax.tree.leaves(g_unrolled), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_every_parameter_has_logical_axis_names():
    for cfg in (CFG, dataclasses.replace(CFG, scan_layers=False, qk_norm=True, tie_embeddings=False)):
        boxed = Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, L), jnp.int32))["params"]
        leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
        for leaf in leaves:
            assert len(leaf.names) == leaf.value.ndim and all(leaf.names)
        if cfg.scan_layers:
            assert any(leaf.names[0] == "layers" for leaf in leaves)


def test_compute_dtype_and_param_dtype():
    cfg = dataclasses.replace(CFG, dtype="bfloat16")
    p = init(cfg)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p))
    logits = Transformer(cfg).apply({"params": p}, tokens())
    assert logits.dtype == jnp.float32  # logits leave the model in float32 for the loss
    np.testing.assert_allclose(logits, Transformer(CFG).apply({"params": p}, tokens()), atol=0.05)
