"""A learning-rate grid at every size of a model ladder, each run a fixed 600 steps.

lmx sweep configs/sweeps/lr_ladder.py --dry-run
lmx sweep configs/sweeps/lr_ladder.py                 # runs/sweeps/lr_ladder/
lmx sweep configs/sweeps/lr_ladder.py --launcher slurm --sbatch-option=--gres=gpu:1
"""

from lmx.config import CheckpointConfig, Config, DataConfig, EvalConfig, LogConfig, ModelConfig, TrainConfig
from lmx.scaling.sweep import LadderRule, Sweep, cross, grid

# depth = width / 64, heads of 32 with 2 query heads per key/value head, SwiGLU at 8/3 x width.
MODELS = LadderRule(head_dim=32, kv_group=2, aspect_ratio=64).ladder([128, 256, 384])


def get_sweep() -> Sweep:
    base = Config(
        model=ModelConfig(vocab_size=4096, max_seq_len=128),
        data=DataConfig(seq_len=128),
        train=TrainConfig(steps=600, batch_size=32),
        eval=EvalConfig(final_batches=0),
        checkpoint=CheckpointConfig(every_steps=200, max_to_keep=1),
        log=LogConfig(progress=False),
    )
    learning_rates = grid({"optim.learning_rate": [1e-3, 3e-3, 1e-2]}, {"optim.learning_rate": "lr"})
    return Sweep("lr_ladder", base, cross([m.point() for m in MODELS], learning_rates), warmup_fraction=0.05)
