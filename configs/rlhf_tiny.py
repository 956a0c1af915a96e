"""RLHF: PPO from the SFT model on the reward model's score (a few minutes on CPU).

lmx train configs/rm_tiny.py                    # runs/rm_tiny (see that file)
lmx train configs/rlhf_tiny.py                  # -> runs/rlhf_tiny
lmx eval runs/rlhf_tiny --rollouts data/judged/sft_heldout.jsonl --reward rm:runs/rm_tiny,exact_match

The prompts are those of the reward model's pairs (copy, reverse, sort), which the SFT model never
saw. Exact match rides along with weight 0: it is logged, not optimised, so the run shows what
optimising a learned reward does to the true one (docs/USER_GUIDE.md, Reinforcement learning).
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
from lmx.objectives.rl import RLConfig


def get_config() -> Config:
    base = load_config(Path(__file__).with_name("tiny.py"))  # the model of runs/tiny and runs/sft_tiny
    return dataclasses.replace(
        base,
        name="rlhf_tiny",
        data=DataConfig(seq_len=32),
        # 5e-4 diverged: the KL to the SFT model reached 13 nats per token and the score fell.
        optim=OptimConfig(learning_rate=5e-5, warmup_steps=10, schedule="constant", weight_decay=0.0),
        train=TrainConfig(steps=100, batch_size=64),  # 16 prompts x 4 samples per step
        eval=EvalConfig(every_steps=25, batches=4),
        checkpoint=CheckpointConfig(every_steps=50),
        log=LogConfig(every_steps=10),
        objective=RLConfig(
            algorithm="ppo",
            init_from="runs/sft_tiny",
            train_files="data/judged/sft_train.jsonl",
            eval_files="data/judged/sft_heldout.jsonl",
            rewards="rm:runs/rm_tiny,exact_match=0",
            samples=4,
            beta=0.2,  # InstructGPT's 0.02 let this policy drift 4 nats per token from SFT in 60 steps
            max_new_tokens=12,
        ),
    )
