"""Throughput of the compiled pretraining step against this machine's float32 matmul ceiling.

    python benchmarks/train_step.py [--configs configs/tiny.py configs/small.py] [--steps 3] [--out DIR]
    python benchmarks/train_step.py --smoke [--out DIR]   # seconds: both configs shrunk, 1 step each

Reports tokens/s, step time, compile time and achieved model FLOP/s for each config
(``model_flops_per_s`` under `lmx.model.flops`'s ``detailed``, appendix F's text, kept so recorded
results compare; ``matmul_flops_per_s`` under ``executed``, the count the training loop's MFU uses),
and its ratio to a plain jitted `jnp.dot` (model FLOP/s utilisation against the machine's practical
ceiling, measured before and after the configs, the higher kept).
Writes benchmarks/results/train_step.json (`--out DIR`: DIR/train_step.json).

`--smoke`: every config shrunk to a tiny model and batch (common.smoke_overrides, recorded in
"overrides"), one timed step each, the ceiling measured on a 256 x 256 matmul (best of 2); results
in `--out` or a new temporary directory, never benchmarks/results/.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import (
    add_common_arguments,
    best_time,
    block,
    matmul_ceiling,
    parse_args,
    smoke_overrides,
    write_results,
)

from lmx.config import load_config
from lmx.model.flops import flops_per_token_detailed, flops_per_token_executed, param_counts
from lmx.train.setup import setup_training, synthetic_batch


def bench_config(path: str, steps: int, overrides: list[str]) -> dict:
    cfg = load_config(path, overrides)
    setup = setup_training(cfg)
    step = setup.make_step()
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    start = time.perf_counter()
    compiled = step.lower(setup.state, batch).compile()
    compile_s = time.perf_counter() - start
    state = setup.state
    state, _ = block(compiled(state, batch))  # warm-up

    def one_step():
        nonlocal state
        state, metrics = compiled(state, batch)
        return metrics

    step_s = best_time(one_step, steps)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    model_flops = flops_per_token_detailed(cfg.model, cfg.data.seq_len) * tokens
    matmul_flops = flops_per_token_executed(cfg.model, cfg.data.seq_len) * tokens
    return {
        "config": path,
        "params": param_counts(cfg.model).total,
        "batch": cfg.train.batch_size,
        "seq_len": cfg.data.seq_len,
        "compile_s": compile_s,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "model_flops_per_s": model_flops / step_s,
        "matmul_flops_per_s": matmul_flops / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.py", "configs/small.py"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per config (the best is kept)")
    parser.add_argument("--set", action="append", default=[], help="override for every config")
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"steps": 1})
    overrides = [*smoke_overrides(), *args.set] if args.smoke else args.set
    n, repeats = (256, 2) if args.smoke else (2048, 10)
    before = matmul_ceiling(n, repeats)
    rows = [bench_config(path, args.steps, overrides) for path in args.configs]
    # Measured again after the configs, and the higher kept: on shared cores one measurement can
    # come out low, which would flatter every ratio.
    after = matmul_ceiling(n, repeats)
    ceiling = max(before, after)
    print(f"float32 matmul ceiling ({n}^3, jitted jnp.dot): {before / 1e9:.1f} / {after / 1e9:.1f} GFLOP/s")
    for path, row in zip(args.configs, rows, strict=True):
        row["mfu_vs_matmul"] = row["model_flops_per_s"] / ceiling
        print(
            f"{path}: {row['params'] / 1e6:.1f}M params, batch {row['batch']}x{row['seq_len']}: "
            f"step {row['step_s']:.3f} s, {row['tokens_per_s']:,.0f} tokens/s, compile {row['compile_s']:.1f} s, "
            f"{row['model_flops_per_s'] / 1e9:.1f} GFLOP/s = {row['mfu_vs_matmul']:.2f} of the matmul ceiling"
        )
    out = write_results(
        "train_step",
        {
            "matmul_ceiling_flops_per_s": ceiling,
            "matmul_ceiling_before_after": [before, after],
            "overrides": overrides,
            "runs": rows,
        },
        args.out,
        args.smoke,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
