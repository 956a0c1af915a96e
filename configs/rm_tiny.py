"""A reward model from the SFT model, trained on the generated pairs (a few minutes on CPU).

lmx train configs/sft_tiny.py                   # runs/sft_tiny (see that file)
lmx train configs/rm_tiny.py                    # -> runs/rm_tiny: the SFT layers + a scalar head
lmx eval runs/rm_tiny --pairs data/synth/preference_heldout.jsonl
"""

import dataclasses
from pathlib import Path

from lmx.config import (
    CheckpointConfig,
    Config,
    EvalConfig,
    LogConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)


def get_config() -> Config:
    base = load_config(Path(__file__).with_name("sft_tiny.py"))  # the run this one starts from
    return dataclasses.replace(
        base,
        name="rm_tiny",
        optim=OptimConfig(learning_rate=5e-4, warmup_steps=20, schedule="cosine", weight_decay=0.0),
        train=TrainConfig(steps=1500, batch_size=32),
        eval=EvalConfig(every_steps=500, batches=4),
        checkpoint=CheckpointConfig(every_steps=500),
        log=LogConfig(every_steps=20),
        objective=ObjectiveConfig(
            kind="reward_model",
            init_from="runs/sft_tiny",
            train_files="data/synth/preference_train.jsonl",
            eval_files="data/synth/preference_heldout.jsonl",
        ),
    )
