"""A ~125M-parameter model for one node of 8 NVIDIA GPUs: bfloat16, full remat, FSDP over the 8.

Planned with `lmx plan` on 2026-12-03 (8 x H100, 45% MFU, issue 20's target; the 8-GPU run not yet
measured on a GPU): 33.37 GiB per device, 131 ms per step, 10.5 min for the run. Most of the memory
is one micro-batch's logits, which XLA keeps whole on every fsdp device on CPU meshes, where the
planner is checked (BENCHMARKS.md, memory planner).
Measured on one H200 on 2026-12-04 with the same work per device (32 rows in 4 micro-batches, a mesh
of one device; BENCHMARKS.md): 215 ms per step, 27.3% MFU, 4.04 GiB (XLA's total).

Train on your own text (the built-in corpus is 2 MB, a smoke test at this size):

lmx plan configs/gpu/lm_125m.py --mfu 0.45
lmx train configs/gpu/lm_125m.py --set data.corpus=text:/path/to/corpus/*.txt

About 20 tokens per parameter (2.5B, Chinchilla's ratio) in batches of 256 x 2,048 tokens; learning
rate as GPT-3's table gives for this size.
"""

from lmx.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    EvalConfig,
    MeshConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        name="lm_125m",
        model=ModelConfig(
            vocab_size=32768,
            d_model=768,
            n_layers=12,
            n_heads=12,
            n_kv_heads=12,
            d_ff=2048,
            max_seq_len=2048,
            dtype="bfloat16",
            remat="full",
            attention="auto",  # cuDNN flash attention on NVIDIA GPUs (jax.nn.dot_product_attention)
        ),
        data=DataConfig(seq_len=2048, tokenizer_train_bytes=100_000_000),
        mesh=MeshConfig(data=1, fsdp=8, tensor=1),
        optim=OptimConfig(learning_rate=6e-4, warmup_steps=1000, schedule="cosine", weight_decay=0.1),
        train=TrainConfig(steps=4_800, batch_size=256, micro_batches=4),
        eval=EvalConfig(every_steps=1000, batches=16),
        checkpoint=CheckpointConfig(every_steps=1000),
    )
