"""A 2-layer model that learns in-context retrieval on the generated recall task (about 45 s).

Batch 16, not 32: at these widths a step of 32 rows took 2.5x one of 16 on a 2-core Xeon (57 vs 23
ms, 2026-12-04; the whole run 86 s vs 34 s), and 1,500 steps of 16 still learn the task (8-shot
accuracy 0.52-0.63 over seeds 0-2, benchmarks/results/recipes.json).

lmx data icl-task data/icl
lmx train configs/icl_tiny.py
lmx eval runs/icl_tiny --task data/icl/task.jsonl --shots 0 2 8
"""

from lmx.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    EvalConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        name="icl_tiny",
        model=ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=256, max_seq_len=64),
        data=DataConfig(seq_len=64, corpus="text:data/icl/corpus/*.txt", validation_fraction=0.05),
        optim=OptimConfig(learning_rate=5e-3, warmup_steps=30, schedule="cosine"),
        train=TrainConfig(steps=1500, batch_size=16),
        eval=EvalConfig(every_steps=0, final_batches=8),
        checkpoint=CheckpointConfig(every_steps=500),
        log=LogConfig(every_steps=100),
    )
