"""A tiny model that trains on 2 CPU cores in a few minutes (the README's main job)."""

from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="tiny",
        model=ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=256),
        data=DataConfig(seq_len=256),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=50, schedule="cosine"),
        train=TrainConfig(steps=600, batch_size=16),
    )
