"""Test setup: 8 virtual CPU devices (set before JAX is imported), wandb offline, shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import jax
import pytest

from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

assert jax.device_count() == 8, "tests need XLA_FLAGS set before jax is imported"


def tiny_config(**overrides) -> Config:
    """A model small enough to compile in about a second; dotted overrides as in `Config.replace`."""
    cfg = Config(
        model=ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=16),
        data=DataConfig(seq_len=16),
        optim=OptimConfig(learning_rate=1e-2, warmup_steps=2),
        train=TrainConfig(batch_size=8, steps=5),
    )
    return cfg.replace(**overrides)


@pytest.fixture(scope="session")
def cpu_devices():
    return jax.devices()
