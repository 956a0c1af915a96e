import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lmx.config import ModelConfig
from lmx.model import Transformer
from lmx.model.flops import (
    FLOPS_DEFINITIONS,
    flops_per_token,
    flops_per_token_6n,
    flops_per_token_detailed,
    flops_per_token_executed,
    forward_flops,
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
    assert flops_per_token_executed(cfg, L) == 3 * (forward - embeddings - 2 * softmax) / L


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
    for definition in FLOPS_DEFINITIONS:
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


# Hoffmann et al. 2022, Table A4: (label, N from Table A9, layers, d_model, ffw_size, heads, k/q size,
# published FLOP ratio ours / 6ND). Vocabulary 32,000, sequence 2,048 (appendix F, Table A8).
TABLE_A4 = [
    ("73M", 74e6, 10, 640, 2560, 10, 64, 1.03),
    ("305M", 306e6, 20, 1024, 4096, 16, 64, 1.10),
    ("552M", 552e6, 24, 1280, 5120, 10, 128, 1.08),
    ("1.1B", 1143e6, 26, 1792, 7168, 14, 128, 1.04),
    ("1.6B", 1593e6, 28, 2048, 8192, 16, 128, 1.03),
    ("6.8B", 6796e6, 40, 3584, 14336, 28, 128, 0.99),
]


def _table_a4_model(layers, d_model, ffw, heads, kv_size):
    # The table's models: multi-head attention and a two-matrix MLP (not SwiGLU's three).
    return ModelConfig(
        vocab_size=32_000,
        d_model=d_model,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=heads,
        head_size=kv_size,
        d_ff=ffw,
        mlp="gelu",
        max_seq_len=2048,
    )


@pytest.mark.parametrize(("label", "n", "layers", "d_model", "ffw", "heads", "kv_size", "published"), TABLE_A4)
def test_chinchilla_flops_reproduce_table_a4(label, n, layers, d_model, ffw, heads, kv_size, published):
    cfg = _table_a4_model(layers, d_model, ffw, heads, kv_size)
    # N: Table A9's size of the same shape, to the million; Table A4's label is the same number rounded.
    scale = 1e9 if label.endswith("B") else 1e6
    assert abs(n / scale - float(label[:-1])) <= (0.05 if scale == 1e9 else 1)
    ratio = flops_per_token(cfg, 2048, "chinchilla") / (6 * n)  # per token: the 2,048 cancels
    assert ratio == pytest.approx(published, rel=0.01), label
    # Appendix F's text (lookup and final logits counted) and the executed count do not reproduce it.
    assert flops_per_token(cfg, 2048, "detailed") / (6 * n) > published * 1.02
    assert flops_per_token(cfg, 2048, "executed") / (6 * n) > published * 1.01


def test_chinchilla_is_appendix_f_per_layer_terms_by_hand():
    # Table A4's first row, term by term; seq 2,048, d_model 640, 10 heads of 64, ffw 2,560, 10 layers.
    cfg = _table_a4_model(10, 640, 2560, 10, 64)
    L = 2048
    qkv = 2 * 3 * L * 640 * 640
    logits = 2 * L * L * 640
    softmax = 3 * 10 * L * L
    values = 2 * L * L * 640
    out = 2 * L * 640 * 640
    dense = 2 * L * (640 * 2560 + 640 * 2560)
    assert flops_per_token(cfg, L, "chinchilla") == 3 * 10 * (qkv + logits + softmax + values + out + dense) / L


def test_6n_porian_and_executed_by_hand():
    # d_model 64, 2 layers, 4 query heads of 16 sharing 2 kv heads, SwiGLU d_ff 128, vocab 100 (tied),
    # sequence 32.
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
    L = 32
    attention_params = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64  # query, key, value, out
    mlp_params = 3 * 64 * 128
    non_embedding = 2 * (attention_params + mlp_params + 2 * 64) + 64  # two norms a layer, a final norm
    assert non_embedding == 74_048
    unembedding = 100 * 64
    assert flops_per_token(cfg, L, "6n") == 6 * 74_048
    assert flops_per_token(cfg, L, "porian") == 6 * (74_048 + 6_400)
    # Executed matmuls of one sequence's forward: projections, attention, MLP, logits; no lookup.
    qkv = 2 * L * 64 * (64 + 32 + 32)
    logits = 2 * L * L * 64  # every query head scores every key: 4 heads x 16
    values = 2 * L * L * 64
    out = 2 * L * 64 * 64
    mlp = 2 * L * 3 * 64 * 128
    final = 2 * L * 64 * 100
    forward = 2 * (qkv + logits + values + out + mlp) + final
    assert forward == 5_652_480
    assert flops_per_token(cfg, L, "executed") == 3 * forward / L == 529_920
    assert param_counts(cfg).by_definition("executed") == non_embedding + unembedding
    assert param_counts(cfg).by_definition("chinchilla") == non_embedding + unembedding  # tied: total


def test_sweeps_default_to_executed_and_record_the_definition():
    from lmx.config import Config, DataConfig, TrainConfig
    from lmx.model.flops import DEFAULT_FLOPS_DEFINITION, training_flops
    from lmx.scaling.sweep import Point, Sweep

    assert DEFAULT_FLOPS_DEFINITION == "executed"
    model = ModelConfig(vocab_size=128, max_seq_len=32)
    base = Config(model=model, data=DataConfig(seq_len=32), train=TrainConfig(batch_size=4))
    points = [Point("a", budget=1e12), Point("b", coords={"flops_definition": "6n"})]
    sweep = Sweep("s", base, points)
    assert sweep.flops == "executed"
    for run in sweep.runs():  # a point's own coordinate cannot misstate what the sweep used
        assert run.coords["flops_definition"] == "executed"
    run = sweep.runs()[0]
    assert abs(training_flops(run.config, "executed") - 1e12) <= training_flops(run.config, "executed", steps=1)
    assert training_flops(run.config) == training_flops(run.config, "executed")
    recorded = Sweep("old", base, points, flops="detailed").runs()
    assert {r.coords["flops_definition"] for r in recorded} == {"detailed"}
