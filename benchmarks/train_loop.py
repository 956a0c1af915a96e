"""Overhead of the full training loop against the bare compiled step.

    python benchmarks/train_loop.py [--config configs/small.py] [--steps 16] [--set KEY=VALUE ...] [--out DIR]
    python benchmarks/train_loop.py --smoke [--out DIR]   # seconds: a tiny model, 4 steps, a save at 2

1. Bare: the compiled step on one fixed batch, the state fed back, timed step by step.
2. Loop: `lmx.train.loop.Trainer` on the real data pipeline with metrics.jsonl, asynchronous
   checkpoints every `--checkpoint-every` steps, logging every step (so every step's time is
   visible; that is one host sync per step, more than the default), no periodic evaluation.

Reports the median tokens/s of each and their ratio (target >= 0.95), and how much longer the
step after each checkpoint save took than the median step (the save's stall; target <= 1 step),
and the extra time of all the steps from one save to the next, in median steps (the writes run in
the background and can slow a later step rather than the next one).
Writes benchmarks/results/train_loop.json (`--out DIR`: DIR/train_loop.json).

`--smoke`: the config shrunk to a tiny model and batch (common.smoke_overrides, recorded in
"overrides") on the standard library's email package (20 files, a fifth of them for validation),
its tokenizer and token files in DIR/data; 4 loop steps with a checkpoint save after step 2 (and
the final one), 4 bare steps. Results in `--out` or a new temporary directory, never
benchmarks/results/; the run directory is temporary as in a full run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from common import (
    SMOKE_CORPUS,
    SMOKE_VALIDATION_FRACTION,
    add_common_arguments,
    block,
    parse_args,
    smoke_overrides,
    write_results,
)

from lmx.config import load_config
from lmx.train.loop import Trainer
from lmx.train.metrics import read_jsonl
from lmx.train.setup import setup_training, synthetic_batch


def bare_step_times(cfg, steps: int) -> list[float]:
    setup = setup_training(cfg)
    step = setup.make_step()
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    compiled = step.lower(setup.state, batch).compile()
    state, _ = block(compiled(setup.state, batch))  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, _ = block(compiled(state, batch))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.py")
    parser.add_argument("--steps", type=int, default=16, help="loop steps (the first is not timed)")
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="config override")
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"steps": 4, "checkpoint_every": 2})
    if args.smoke:
        smoke_data = [
            f"data.corpus={SMOKE_CORPUS}",
            f"data.dir={args.out / 'data'}",
            f"data.validation_fraction={SMOKE_VALIDATION_FRACTION}",
        ]
        args.set = [*smoke_overrides(), *smoke_data, *args.set]
    overrides = [
        *args.set,
        f"train.steps={args.steps}",
        f"checkpoint.every_steps={args.checkpoint_every}",
        "log.every_steps=1",
        "log.progress=false",
        "eval.every_steps=0",
        "eval.final_batches=1",
    ]
    cfg = load_config(args.config, overrides)

    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(cfg, run_dir).run()
        rows = [r for r in read_jsonl(f"{run_dir}/metrics.jsonl") if "loss" in r]
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    loop_times = {r["step"]: tokens_per_step / r["tokens_per_s"] for r in rows if r["step"] > 1}
    after_save = [s + 1 for s in range(args.checkpoint_every, args.steps, args.checkpoint_every)]
    plain = [t for s, t in loop_times.items() if s not in after_save]
    loop_median = statistics.median(plain + [loop_times[s] for s in after_save if s in loop_times])
    plain_median = statistics.median(plain)
    stalls = [loop_times[s] / plain_median - 1.0 for s in after_save if s in loop_times]
    interval_extra = [
        sum(loop_times[k] / plain_median - 1.0 for k in range(s, s + args.checkpoint_every) if k in loop_times)
        for s in after_save
    ]

    bare = bare_step_times(cfg, min(8, args.steps))
    bare_median = statistics.median(bare)
    result = {
        "config": args.config,
        "overrides": args.set,
        "tokens_per_step": tokens_per_step,
        "bare_step_s": bare,
        "loop_step_s": loop_times,
        "bare_tokens_per_s": tokens_per_step / bare_median,
        "loop_tokens_per_s": tokens_per_step / loop_median,
        "loop_over_bare": bare_median / loop_median,
        "save_stall_steps": stalls,
        "save_interval_extra_steps": interval_extra,
    }
    print(
        f"{args.config}: bare step {bare_median:.3f} s ({result['bare_tokens_per_s']:,.0f} tokens/s), "
        f"loop step {loop_median:.3f} s ({result['loop_tokens_per_s']:,.0f} tokens/s): "
        f"ratio {result['loop_over_bare']:.3f}; step after an async save took "
        + ", ".join(f"{s:+.1%}" for s in stalls)
        + " vs the median step; the steps up to the next save took "
        + ", ".join(f"{x:+.2f}" for x in interval_extra)
        + " median steps extra"
    )
    print(f"wrote {write_results('train_loop', result, args.out, args.smoke)}")


if __name__ == "__main__":
    main()
