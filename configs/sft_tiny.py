"""Supervised fine-tuning of the tiny pretrained model on the generated tasks (a few minutes on CPU).

lmx train configs/tiny.py                       # the pretrained model: runs/tiny
lmx data synth-tasks data/synth                 # copy / reverse / sort / add, train and held-out
lmx train configs/sft_tiny.py                   # -> runs/sft_tiny
lmx eval runs/sft_tiny --responses data/synth/sft_heldout.jsonl
"""

import dataclasses
from pathlib import Path

from lmx.config import (
    CheckpointConfig,
    Config,
    DataConfig,
    EvalConfig,
    LogConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from lmx.objectives.sft import SFTConfig


def get_config() -> Config:
    base = load_config(Path(__file__).with_name("tiny.py"))  # the run this one starts from
    return dataclasses.replace(
        base,
        name="sft_tiny",
        data=DataConfig(seq_len=32),  # prompt + answer fit in 32 tokens
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=20, schedule="cosine", weight_decay=0.0),
        train=TrainConfig(steps=1500, batch_size=32),
        eval=EvalConfig(every_steps=500, batches=4),
        checkpoint=CheckpointConfig(every_steps=500),
        log=LogConfig(every_steps=20),
        objective=SFTConfig(
            init_from="runs/tiny",
            train_files="data/synth/sft_train.jsonl",
            eval_files="data/synth/sft_heldout.jsonl",
        ),
    )
