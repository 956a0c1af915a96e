import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmx.config import ModelConfig
from lmx.model import Transformer
from lmx.scaling.flops import (
    flops_per_token_6n,
    flops_per_token_detailed,
    forward_flops,
    matmul_flops_per_token,
    param_counts,
)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=4, d_ff=48),
        ModelConfig(
            vocab_size=96,
            d_model=32,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            d_ff=40,
            qk_norm=True,
            tie_embeddings=False,
            mlp="gelu",
            scan_layers=False,
        ),
    ],
)
def test_param_counts_equal_the_model(cfg):
    params = nn.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    counts = param_counts(cfg)
    assert counts.total == sum(x.size for x in jax.tree.leaves(params))
    embedding = params["embed"]["embedding"].size + (0 if cfg.tie_embeddings else params["unembed"]["kernel"].size)
    assert counts.embedding == embedding
    assert counts.non_embedding == counts.total - embedding


def test_detailed_flops_equal_appendix_f_by_hand():
    # d_model 64, 2 layers, 4 heads of 16, MHA, SwiGLU d_ff 128, vocab 100, sequence 32.
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128)
    L = 32
    embeddings = 2 * 32 * 100 * 64  # 2 x seq x vocab x d_model
    qkv = 2 * 3 * 32 * 64 * 64  # 2 x 3 x seq x d_model x (key_size x heads)
    logits = 2 * 32 * 32 * 64  # 2 x seq x seq x (key_size x heads)
    softmax = 3 * 4 * 32 * 32  # 3 x heads x seq x seq
    values = 2 * 32 * 32 * 64
    out = 2 * 32 * 64 * 64
    mlp = 2 * 32 * 3 * 64 * 128  # SwiGLU: three d_model x d_ff matrices
    final = 2 * 32 * 64 * 100
    forward = embeddings + 2 * (qkv + logits + softmax + values + out + mlp) + final
    assert forward_flops(cfg, L).total == forward
    assert flops_per_token_detailed(cfg, L) == 3 * forward / L  # backward = 2 x forward
    assert flops_per_token_6n(cfg) == 6 * param_counts(cfg).non_embedding
    assert matmul_flops_per_token(cfg, L) == 3 * (forward - embeddings - 2 * softmax) / L


def test_gqa_shrinks_only_key_and_value_projections():
    mha = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128)
    gqa = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=128)
    assert forward_flops(mha, 32).qkv - forward_flops(gqa, 32).qkv == 2 * 32 * 64 * (2 * 64 - 2 * 16)
    assert forward_flops(mha, 32).attention_logits == forward_flops(gqa, 32).attention_logits


def test_6n_and_detailed_agree_for_short_context_and_differ_for_long():
    wide = ModelConfig(vocab_size=256, d_model=1024, n_layers=4, n_heads=8, n_kv_heads=8, d_ff=4096)
    ratio_short = flops_per_token_detailed(wide, 128) / flops_per_token_6n(wide)
    ratio_long = flops_per_token_detailed(wide, 8192) / flops_per_token_6n(wide)
    assert 1.0 < ratio_short < 1.05
    assert ratio_long > 1.4  # attention over the context grows with L and 6N ignores it
