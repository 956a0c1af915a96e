"""Decoding speed with the KV cache against recomputing the whole forward pass per token.

    python benchmarks/generate.py [--config configs/small.py] [--new 256] [--batches 1 16] [--out DIR]
    python benchmarks/generate.py --smoke [--out DIR]   # seconds: a tiny model, 4 new tokens

For each batch size: prompts of 16 random tokens, `--new` new tokens, greedy.

- cached: `lmx.decode.generate.Generator` (prefill, then one compiled decoding step per token), timed
  over the whole generation after a warm-up call; reports new tokens/s and how many times each
  function was compiled (traced).
- recompute: `lmx.decode.generate.greedy_without_cache`, one fixed-shape forward over prompt + new tokens
  per step. Its steps all cost the same (the shape never changes), so `--recompute-steps` of them
  are timed and the time per token is extrapolated to `--new` tokens. It is timed with the layers
  scanned and unrolled, and the faster is the baseline (the cached decoder runs them unrolled).

Parameters are random (speed does not depend on training), initialised with the layers scanned
whatever the config's `model.scan_layers` (the unrolled layout is their unstacked copy).
Writes benchmarks/results/generate.json (`--out DIR`: DIR/generate.json).

`--smoke`: the config shrunk to a tiny model (common.smoke_overrides), one batch of 2 prompts, 4 new
tokens, 2 recompute steps; results in `--out` or a new temporary directory, never benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from common import add_common_arguments, parse_args, smoke_overrides, write_results

from lmx.config import load_config
from lmx.decode.generate import Generator, greedy_without_cache
from lmx.model import Transformer, unstack_layers
from lmx.parallel import make_mesh

PROMPT = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.py")
    parser.add_argument("--new", type=int, default=256, help="new tokens per prompt")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--recompute-steps", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="config override")
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"new": 4, "batches": [2], "recompute_steps": 2})
    cfg = load_config(args.config, [*smoke_overrides(), *args.set] if args.smoke else args.set)
    # Scanned whatever the config says: the recompute baseline below times both layouts, the
    # unrolled one from these parameters unstacked (and `Generator` unrolls a scanned model itself).
    model = Transformer(dataclasses.replace(cfg.model, scan_layers=True))
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    mesh = make_mesh(cfg.mesh)
    max_len = PROMPT + args.new
    rows = []
    for batch in args.batches:
        prompts = np.random.default_rng(batch).integers(4, cfg.model.vocab_size, (batch, PROMPT)).tolist()
        generator = Generator(model, params, mesh, cfg.mesh.rules, batch, eos_id=-1, max_len=max_len)
        generator.generate(prompts, args.new)  # compile and warm up
        start = time.perf_counter()
        generator.generate(prompts, args.new)
        cached_s = time.perf_counter() - start

        recompute = {}
        for scan, layout in ((True, "scanned"), (False, "unrolled")):
            ref = Transformer(dataclasses.replace(cfg.model, scan_layers=scan))
            ref_params = params if scan else unstack_layers(params, cfg.model.n_layers)
            greedy_without_cache(ref, ref_params, prompts, 1, max_len)  # compile
            start = time.perf_counter()
            greedy_without_cache(ref, ref_params, prompts, args.recompute_steps, max_len)
            recompute[layout] = (time.perf_counter() - start) / args.recompute_steps * args.new
        recompute_s = min(recompute.values())

        row = {
            "batch": batch,
            "new_tokens": args.new,
            "cached_tokens_per_s": batch * args.new / cached_s,
            "recompute_tokens_per_s": batch * args.new / recompute_s,
            "recompute_tokens_per_s_by_layers": {k: batch * args.new / v for k, v in recompute.items()},
            "speedup": recompute_s / cached_s,
            "compilations": dict(generator.traces),
        }
        rows.append(row)
        print(
            f"batch {batch}: cached {row['cached_tokens_per_s']:,.1f} tokens/s, recompute "
            f"{row['recompute_tokens_per_s']:,.1f} tokens/s, speedup {row['speedup']:.1f}x, "
            f"compilations {row['compilations']}"
        )
    path = write_results(
        "generate",
        {"config": cfg.name, "prompt_tokens": PROMPT, "cache_length": max_len, "runs": rows},
        args.out,
        args.smoke,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
