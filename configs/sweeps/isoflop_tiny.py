"""An IsoFLOP profile with a batch-size sub-sweep: every (budget, model, batch size) run trains
for the steps that make its FLOPs equal the budget, so halving the batch doubles the steps.

    lmx sweep configs/sweeps/isoflop_tiny.py --dry-run
    lmx sweep configs/sweeps/isoflop_tiny.py && lmx fit runs/sweeps/isoflop_tiny --approach 2 3
"""

from lmx.config import CheckpointConfig, Config, DataConfig, EvalConfig, LogConfig, ModelConfig, OptimConfig
from lmx.scaling.sweep import LadderRule, Sweep, cross, grid, isoflop

MODELS = LadderRule(head_dim=16, aspect_ratio=32).ladder([32, 64, 96, 128])


def get_sweep() -> Sweep:
    base = Config(
        model=ModelConfig(vocab_size=512, max_seq_len=128),
        data=DataConfig(seq_len=128),
        optim=OptimConfig(learning_rate=3e-3),
        eval=EvalConfig(final_batches=0, batch_size=64),
        checkpoint=CheckpointConfig(every_steps=200, max_to_keep=1),
        log=LogConfig(progress=False),
    )
    batches = grid({"train.batch_size": [16, 32]}, {"train.batch_size": "bs"})
    return Sweep(
        "isoflop_tiny",
        base,
        cross(isoflop([3e11, 1e12], MODELS), batches),
        flops="porian",
        warmup_fraction=0.05,
    )
