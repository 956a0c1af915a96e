"""A tiny model that trains on 2 CPU cores in about 2-3 minutes (the README's main job)."""

from lmx.config import CheckpointConfig, Config, DataConfig, EvalConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="tiny",
        model=ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=128),
        data=DataConfig(seq_len=128),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=30, schedule="cosine"),
        train=TrainConfig(steps=360, batch_size=32),
        eval=EvalConfig(every_steps=120, batches=8),
        checkpoint=CheckpointConfig(every_steps=120),
    )
