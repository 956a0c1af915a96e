"""IsoFLOP study on the built-in stdlib corpus: 3 budgets x 5 model sizes, about 40 min on 2 CPU cores.

Run with ``lmx sweep experiments/isoflop_stdlib/sweep.py`` (``--dry-run`` prints the plan), then
``lmx fit runs/sweeps/isoflop_stdlib --approach 2``. See README.md in this folder.
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
from lmx.scaling.sweep import LadderRule, Sweep, isoflop

# Porian et al. 2024: C = 6 N D with N = non-embedding + unembedding parameters. The output
# projection is a large share of a tiny model's compute; Kaplan's 6N would leave it out.
FLOPS = "porian"
BUDGETS = (1e12, 3e12, 1e13)
# depth = width / 32 (at least 1), heads of 16, SwiGLU at 8/3 x width: 30k to 870k parameters.
# A 512-token vocabulary keeps the unembedding from dominating N, so that these budgets' optima
# (about 20 tokens per parameter, if Chinchilla's ratio held here) fall inside the ladder.
MODELS = LadderRule(head_dim=16, kv_group=1, mlp_ratio=8 / 3, aspect_ratio=32).ladder([32, 48, 64, 96, 128])


def get_config() -> Config:
    return Config(
        name="isoflop_stdlib",
        model=ModelConfig(vocab_size=512, max_seq_len=128),
        data=DataConfig(seq_len=128),
        optim=OptimConfig(learning_rate=3e-3, schedule="cosine", min_lr_ratio=0.1),
        train=TrainConfig(batch_size=16),
        # The whole validation split (176k tokens), the same for every run.
        eval=EvalConfig(every_steps=0, final_batches=0, batch_size=64),
        checkpoint=CheckpointConfig(every_steps=200, max_to_keep=1),
        log=LogConfig(every_steps=10, progress=False),
    )


def get_sweep() -> Sweep:
    return Sweep(
        name="isoflop_stdlib",
        base=get_config(),
        points=isoflop(BUDGETS, MODELS),
        flops=FLOPS,
        warmup_fraction=0.05,
    )
