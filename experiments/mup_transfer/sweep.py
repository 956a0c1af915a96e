"""Learning-rate transfer across width: sp against mup on the built-in stdlib corpus.

Widths 32 to 256 at two layers (heads of 16, MLP 3 x width), seven learning rates a factor of two
apart, two seeds, each parametrization: 112 short runs. Under mup (base width 32, where it equals
sp) the best learning rate should stay put as the model widens; under sp it should fall.

Run with ``lmx data prepare experiments/mup_transfer/sweep.py``, ``lmx sweep
experiments/mup_transfer/sweep.py``, then ``python experiments/mup_transfer/analyse.py
runs/sweeps/mup_transfer``. See README.md in this folder.
"""

import itertools

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
from lmx.scaling.sweep import LadderRule, Point, Sweep

WIDTHS = (32, 64, 128, 256)
BASE_WIDTH = 32
LEARNING_RATES = tuple(2.0**k for k in range(-11, -4))  # 4.9e-4 .. 3.1e-2
SEEDS = (0, 1)
PARAMETRIZATIONS = ("sp", "mup")
STEPS = 200
SHAPES = {w: LadderRule(head_dim=16, mlp_ratio=3).shape(2, w) for w in WIDTHS}


def get_config() -> Config:
    return Config(
        name="mup_transfer",
        # The 512-token vocabulary of experiments/isoflop_stdlib; tied embeddings, lmx's default.
        model=ModelConfig(vocab_size=512, max_seq_len=128, base_d_model=BASE_WIDTH),
        data=DataConfig(seq_len=128),
        optim=OptimConfig(schedule="cosine", warmup_steps=20, min_lr_ratio=0.1),
        train=TrainConfig(batch_size=16, steps=STEPS),
        eval=EvalConfig(every_steps=0, final_batches=16, batch_size=64),
        checkpoint=CheckpointConfig(every_steps=0),
        log=LogConfig(every_steps=20, progress=False),
    )


def get_sweep() -> Sweep:
    points = []
    for p, w, lr, seed in itertools.product(PARAMETRIZATIONS, WIDTHS, LEARNING_RATES, SEEDS):
        shape = SHAPES[w]
        overrides = {
            "model.parametrization": p,
            "model.n_layers": shape.n_layers,
            "model.d_model": w,
            "model.n_heads": shape.n_heads,
            "model.n_kv_heads": shape.n_kv_heads,
            "model.d_ff": shape.d_ff,
            "optim.learning_rate": lr,
            "train.seed": seed,
        }
        coords = {"parametrization": p, "width": w, "learning_rate": lr, "seed": seed}
        points.append(Point(f"{p}-d{w}-lr{lr:.2e}-s{seed}", overrides, coords))
    return Sweep(name="mup_transfer", base=get_config(), points=points)
