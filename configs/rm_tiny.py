"""A reward model from the SFT model, trained on pairs it can learn to judge (about 4 minutes on CPU).

lmx train configs/sft_tiny.py                   # runs/sft_tiny (see that file)
lmx data synth-tasks data/judged --tasks copy reverse sort --train 6000 --heldout 600 --seed 1 \\
    --exclude 'data/synth/sft_*.jsonl'          # pairs whose prompts the SFT model never saw
lmx train configs/rm_tiny.py                    # -> runs/rm_tiny: the SFT layers + a scalar head
lmx eval runs/rm_tiny --pairs data/judged/preference_heldout.jsonl

The pairs leave out `add`: no reward model of this size that we trained judged sums better than
chance (docs/USER_GUIDE.md, Post-training, has the measurements).
"""

import dataclasses
from pathlib import Path

from lmx.config import (
    CheckpointConfig,
    Config,
    EvalConfig,
    LogConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from lmx.objectives.reward_model import RewardModelConfig


def get_config() -> Config:
    base = load_config(Path(__file__).with_name("sft_tiny.py"))  # the run this one starts from
    return dataclasses.replace(
        base,
        name="rm_tiny",
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=20, schedule="cosine", weight_decay=0.0),
        train=TrainConfig(steps=4000, batch_size=32),
        eval=EvalConfig(every_steps=1000, batches=4),
        checkpoint=CheckpointConfig(every_steps=1000),
        log=LogConfig(every_steps=20),
        objective=RewardModelConfig(
            init_from="runs/sft_tiny",
            train_files="data/judged/preference_train.jsonl",
            eval_files="data/judged/preference_heldout.jsonl",
        ),
    )
