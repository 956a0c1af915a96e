import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmx.config import ModelConfig
from lmx.model import Transformer
from lmx.model.flops import (
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


def test_detailed_flops_by_hand_for_a_gqa_gelu_untied_config():
    # d_model 48, 3 layers, 6 heads of 8 with 2 kv heads, GELU d_ff 96, vocab 80, sequence 20.
    cfg = ModelConfig(
        vocab_size=80, d_model=48, n_layers=3, n_heads=6, n_kv_heads=2, d_ff=96, mlp="gelu", tie_embeddings=False
    )
    L = 20
    embeddings = 2 * 20 * 80 * 48
    qkv = 2 * 20 * 48 * (48 + 2 * 16)  # queries 6 x 8 wide, keys and values 2 x 8 wide each
    logits = 2 * 20 * 20 * 48
    softmax = 3 * 6 * 20 * 20
    values = 2 * 20 * 20 * 48
    out = 2 * 20 * 48 * 48
    mlp = 2 * 20 * 2 * 48 * 96  # GELU: two matrices
    final = 2 * 20 * 48 * 80
    forward = embeddings + 3 * (qkv + logits + softmax + values + out + mlp) + final
    assert forward_flops(cfg, L).total == forward
    assert flops_per_token_detailed(cfg, L) == 3 * forward / L


def test_porian_counts_the_unembedding_and_training_flops_scale_with_steps():
    from lmx.config import Config, DataConfig, TrainConfig
    from lmx.model.flops import (
        flops_per_token,
        flops_per_token_porian,
        flops_table,
        model_flops_utilization,
        training_flops,
    )

    model = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_seq_len=32)
    counts = param_counts(model)
    assert counts.unembedding == 100 * 64
    assert flops_per_token_porian(model) == 6 * (counts.non_embedding + 100 * 64)
    assert counts.by_definition("6n") == counts.non_embedding
    assert counts.by_definition("porian") == counts.non_embedding + counts.unembedding
    cfg = Config(model=model, data=DataConfig(seq_len=32), train=TrainConfig(batch_size=4, steps=10))
    for definition in ("6n", "porian", "detailed"):
        per_token = flops_per_token(model, 32, definition)
        assert training_flops(cfg, definition) == per_token * 4 * 32 * 10
        assert training_flops(cfg, definition, steps=3) == per_token * 4 * 32 * 3
    with pytest.raises(ValueError, match="unknown FLOPs definition"):
        flops_per_token(model, 32, "7n")
    assert model_flops_utilization(1000.0, 2e6, 4e9) == 0.5
    assert model_flops_utilization(1000.0, 2e6, 0.0) is None
    table = dict(flops_table(cfg))
    assert table["parameters (total)"] == f"{counts.total:,}"
    assert table["  porian"].startswith(f"{flops_per_token_porian(model):.4g}")


def test_flops_cli_prints_the_table(tmp_path, capsys):
    from lmx.cli import main

    assert main(["flops", "configs/tiny.py", "--set", "train.steps=10"]) == 0
    out = capsys.readouterr().out
    assert "non-embedding" in out and "porian" in out and "attention_logits" in out
    assert "40,960" in out  # 10 steps x 32 sequences x 128 tokens
