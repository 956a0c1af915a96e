"""A small model: d_model 512, 8 layers, sequence 512 (about 25M non-embedding parameters)."""

from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="small",
        # Layers unrolled: on XLA's CPU backend the step takes 13% less time than with them scanned
        # (6.3 vs 7.2 s, BENCHMARKS.md).
        model=ModelConfig(
            vocab_size=8192,
            d_model=512,
            n_layers=8,
            n_heads=8,
            n_kv_heads=8,
            d_ff=1408,
            max_seq_len=512,
            scan_layers=False,
        ),
        data=DataConfig(seq_len=512),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=200, schedule="cosine"),
        train=TrainConfig(steps=5000, batch_size=16),
    )
