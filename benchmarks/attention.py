"""Attention implementations: train-step memory against sequence length, and step time.

    python benchmarks/attention.py [--lengths 1024 2048 4096] [--repeats 3] [--out DIR]
    python benchmarks/attention.py --smoke [--out DIR]   # seconds: short sequences

For each implementation of `model.attention` (`lmx.model.attention`), the one-device pretraining
step of a one-layer model (configs/tiny.py's widths with a 256-token vocabulary, batch 1) is
compiled at each length; XLA's `memory_analysis()` gives its temporary bytes (activations, the
saved residuals, attention's own buffers), and the step is timed (best of `--repeats`, after a
warm-up). The quadratic reference should grow about 16x from L to 4L, the linear implementations
about 4x (issue 20 asks for <= 5 for chunked). Then configs/tiny.py's own step (4 layers, 32 x 128
tokens) is timed with each. Writes benchmarks/results/attention.json (`--out DIR`:
DIR/attention.json).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from common import add_common_arguments, block, parse_args, write_results

from lmx.config import load_config
from lmx.model.attention import native_implementations
from lmx.train.setup import setup_training, synthetic_batch


def measure(attention: str, length: int, args: argparse.Namespace) -> dict:
    overrides = [
        "model.n_layers=1",
        "model.vocab_size=256",  # else the [L, vocab] logits (vocab 4,096) hide attention's share
        f"model.max_seq_len={length}",
        f"data.seq_len={length}",
        "train.batch_size=1",
    ]
    return timed_step(attention, overrides, args)


def timed_step(attention: str, overrides: list[str], args: argparse.Namespace) -> dict:
    """Compiles the one-device step of configs/tiny.py with `overrides`; its temporaries and time."""
    attention_settings = [f"model.attention={attention}", f"model.attention_block={args.block}", "mesh.data=1"]
    cfg = load_config("configs/tiny.py", [*overrides, *attention_settings])
    length = cfg.data.seq_len
    setup = setup_training(cfg, jax.devices()[:1])
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, length, cfg.model.vocab_size)
    compiled = setup.make_step().lower(setup.state, batch).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    state, _ = block(compiled(setup.state, batch))  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, _ = block(compiled(state, batch))
        times.append(time.perf_counter() - start)
    row = {"attention": attention, "length": length, "temp_bytes": temp, "step_s": min(times)}
    shape = f"{cfg.train.batch_size} x {length}"
    print(f"{attention:>11} {shape:>8}: temporaries {temp / 2**20:8.1f} MiB, step {row['step_s']:.3f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--block", type=int, default=256, help="keys per block of the chunked implementation")
    parser.add_argument("--repeats", type=int, default=3)
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"lengths": [64], "block": 32, "repeats": 1})
    runs = [measure(name, n, args) for name in native_implementations(jax.default_backend()) for n in args.lengths]
    # configs/tiny.py itself (4 layers, batch 32 x 128 tokens): which is fastest at short lengths.
    # A smoke run times its one short length instead (the same function, without three compiles).
    if args.smoke:
        tiny = {r["attention"]: r["step_s"] for r in runs if r["length"] == args.lengths[0]}
    else:
        tiny = {name: timed_step(name, [], args)["step_s"] for name in native_implementations(jax.default_backend())}
    first, last = args.lengths[0], args.lengths[-1]
    growth = {
        name: next(r["temp_bytes"] for r in runs if r["attention"] == name and r["length"] == last)
        / next(r["temp_bytes"] for r in runs if r["attention"] == name and r["length"] == first)
        for name in native_implementations(jax.default_backend())
    }
    payload = {
        "layers": 1,
        "batch": 1,
        "block": args.block,
        "runs": runs,
        "memory_growth": growth,
        "tiny_step_s": tiny,
    }
    path = write_results("attention", payload, args.out, args.smoke)
    print(f"temporaries at L={last} over L={first}: " + ", ".join(f"{k} {v:.1f}x" for k, v in growth.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
