"""A ~1.3B-parameter model for one node of 8 NVIDIA GPUs: bfloat16, full remat, FSDP over the 8.

Planned with `lmx plan` on 2026-12-03 (8 x H100, 45% MFU, issue 20's target; the 8-GPU run not yet
measured on a GPU): 38.79 GiB per device, 1.33 s per step, 18.4 h for the run. Most of the memory is
one micro-batch's logits, which XLA keeps whole on every fsdp device on CPU meshes, where the
planner is checked (BENCHMARKS.md, memory planner).
Measured on one H200 on 2026-12-04 with the same work per device (32 rows, a mesh of one device;
BENCHMARKS.md): 1.55 s per step, 38.6% MFU, 27.44 GiB (XLA's total; the allocator's peak agrees).
With `--set model.remat=save_dots train.micro_batches=1`: 1.31 s, 45.4% MFU, 88.00 GiB, which fits
an H200 but not the 80 GB H100s this config is sized for.

Train on your own text (the built-in corpus is 2 MB, a smoke test at this size):

lmx plan configs/gpu/lm_1b3.py --mfu 0.45
lmx train configs/gpu/lm_1b3.py --set data.corpus=text:/path/to/corpus/*.txt

About 20 tokens per parameter (26B, Chinchilla's ratio) in batches of 256 x 2,048 tokens; learning
rate as GPT-3's table gives for this size. Everything else is configs/gpu/lm_125m.py's.
"""

from pathlib import Path

from lmx.config import Config, load_config


def get_config() -> Config:
    return load_config(Path(__file__).with_name("lm_125m.py")).replace(
        **{
            "name": "lm_1b3",
            "model.d_model": 2048,
            "model.n_layers": 24,
            "model.n_heads": 16,
            "model.n_kv_heads": 16,
            "model.d_ff": 5632,
            "optim.learning_rate": 2e-4,
            "train.steps": 50_000,
        }
    )
