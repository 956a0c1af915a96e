"""Direct preference optimisation of the SFT model on the generated pairs (about a minute on CPU).

lmx train configs/sft_tiny.py                   # runs/sft_tiny (see that file)
lmx data synth-tasks data/judged --tasks copy reverse sort --train 6000 --heldout 600 --seed 1 \\
    --exclude 'data/synth/sft_*.jsonl'          # pairs whose prompts the SFT model never saw
lmx train configs/dpo_tiny.py                   # -> runs/dpo_tiny; the SFT model is the reference
lmx eval runs/dpo_tiny --pairs data/judged/preference_heldout.jsonl
lmx eval runs/dpo_tiny --responses data/synth/sft_heldout.jsonl

The pairs leave out `add`, which the SFT model barely solves, so its sums give DPO nothing to
sharpen (docs/USER_GUIDE.md, Post-training). To train on all four tasks, --set
objective.train_files=data/synth/preference_train.jsonl (and eval_files).

Other losses: --set objective.loss=ipo|simpo|orpo (and objective.beta, objective.gamma,
objective.label_smoothing); --set objective.reference=precomputed runs the reference once.
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
from lmx.objectives.preference import PreferenceConfig


def get_config() -> Config:
    base = load_config(Path(__file__).with_name("sft_tiny.py"))  # the run this one starts from
    return dataclasses.replace(
        base,
        name="dpo_tiny",
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=20, schedule="cosine", weight_decay=0.0),
        train=TrainConfig(steps=400, batch_size=32),
        eval=EvalConfig(every_steps=100, batches=4),
        checkpoint=CheckpointConfig(every_steps=100),
        log=LogConfig(every_steps=20),
        objective=PreferenceConfig(
            loss="dpo",
            beta=0.1,
            init_from="runs/sft_tiny",
            train_files="data/judged/preference_train.jsonl",
            eval_files="data/judged/preference_heldout.jsonl",
        ),
    )
