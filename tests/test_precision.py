"""Mixed precision: ``model.dtype=bfloat16`` computes in bfloat16 with float32 parameters, optimizer
state, softmax, norms and losses, and trains as far as float32 does."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import loop_config

from lmx.train.loop import train
from lmx.train.setup import setup_training, synthetic_batch

ONE_DEVICE = {"mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1, "checkpoint.every_steps": 0}


def test_bfloat16_compute_keeps_float32_state_and_matmuls_in_bfloat16(loop_config_file, cpu_devices):
    cfg = loop_config(loop_config_file, **ONE_DEVICE, **{"model.dtype": "bfloat16"})
    setup = setup_training(cfg, cpu_devices[:1])
    leaves = jax.tree.leaves((setup.state.params, setup.state.opt_state))
    assert {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    hlo = setup.make_step().lower(setup.state, batch).as_text()
    # Activations [B, L, D] and the MLP's [.., L, F] are bfloat16; the logits meet the loss in float32.
    assert "tensor<16x64x64xbf16>" in hlo and "x64x128xbf16>" in hlo
    assert "tensor<16x64x512xf32>" in hlo


def test_bfloat16_training_ends_within_two_percent_of_float32(loop_config_file, tmp_path, cpu_devices):
    final = {}
    for dtype in ("float32", "bfloat16"):
        cfg = loop_config(loop_config_file, **ONE_DEVICE, **{"model.dtype": dtype})
        result = train(cfg, tmp_path / dtype, devices=cpu_devices[:1])
        final[dtype] = result.summary["final_eval"]["eval/loss"]
    print(final)
    assert final["float32"] < 5.5  # it learned: the unigram entropy of this corpus is about 5.9
    assert abs(final["bfloat16"] - final["float32"]) <= 0.02 * final["float32"]
