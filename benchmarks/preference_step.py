"""Cost per token of the preference step against the pretraining step, at the same model size.

    python benchmarks/preference_step.py [--config configs/small.py] [--steps 3] [--out DIR]
    python benchmarks/preference_step.py --smoke [--out DIR]   # seconds: a tiny model, 1 step each

Three compiled steps over the same number of tokens per step (a pretraining batch of B rows of
length L; B / 2 preference pairs, each a chosen and a rejected row of length L):
- pretrain: next-token cross-entropy;
- preference, reference in the step: DPO, the frozen reference's forward pass inside the step;
- preference, precomputed reference: DPO reading reference log-probs from the batch.
Reports tokens/s and the cost per token relative to pretraining (targets: <= 1.6x in-step,
<= 1.1x precomputed). Writes benchmarks/results/preference_step.json (`--out DIR`:
DIR/preference_step.json).

`--smoke`: the config shrunk to a tiny model and batch (common.smoke_overrides), one timed step per
variant; results in `--out` or a new temporary directory, never benchmarks/results/.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import add_common_arguments, best_time, block, parse_args, smoke_overrides, write_results

from lmx.config import load_config
from lmx.data.preference import PreferencePair, pair_record
from lmx.model.flops import param_counts
from lmx.train.setup import setup_training, synthetic_batch


def pair_batch(rng: np.random.Generator, pairs: int, seq_len: int, vocab: int, precomputed: bool) -> dict:
    records = []
    for _ in range(pairs):
        prompt = rng.integers(1, vocab, seq_len // 2).astype(np.int32)
        chosen, rejected = (rng.integers(1, vocab, seq_len // 2 + 1).astype(np.int32) for _ in range(2))
        ref = tuple(-rng.uniform(100, 200, 2)) if precomputed else None
        records.append(pair_record(PreferencePair(prompt, chosen, rejected), seq_len, 0, ref))
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


def time_step(cfg, batch: dict, steps: int, frozen: bool) -> dict:
    setup = setup_training(cfg)
    step = setup.make_step(with_frozen=frozen)
    extra = (jax.tree.map(jnp.copy, setup.state.params),) if frozen else ()
    start = time.perf_counter()
    compiled = step.lower(setup.state, batch, *extra).compile()
    compile_s = time.perf_counter() - start
    state, _ = block(compiled(setup.state, batch, *extra))  # warm-up

    def one_step():
        nonlocal state
        state, metrics = compiled(state, batch, *extra)
        return metrics

    step_s = best_time(one_step, steps)
    return {"compile_s": compile_s, "step_s": step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.py")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (the best is kept)")
    parser.add_argument("--set", action="append", default=[], help="config override")
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"steps": 1})
    base = load_config(args.config, [*smoke_overrides(), *args.set] if args.smoke else args.set)
    B, L, V = base.train.batch_size, base.data.seq_len, base.model.vocab_size
    if B % 2:
        raise SystemExit(f"train.batch_size={B}: must be even (half as many pairs)")
    preference = {
        "objective.kind": "preference",
        "objective.loss": "dpo",
        "objective.train_files": "unused",
        "objective.init_from": "unused",
    }
    rng = np.random.default_rng(0)
    tokens = B * L
    variants = {
        "pretrain": (base, synthetic_batch(rng, B, L, V), False),
        "preference_in_step_reference": (
            base.replace(**preference, **{"train.batch_size": B // 2}),
            pair_batch(rng, B // 2, L, V, precomputed=False),
            True,
        ),
        "preference_precomputed_reference": (
            base.replace(**preference, **{"train.batch_size": B // 2, "objective.reference": "precomputed"}),
            pair_batch(rng, B // 2, L, V, precomputed=True),
            False,
        ),
    }
    rows = {}
    for name, (cfg, batch, frozen) in variants.items():
        row = time_step(cfg, batch, args.steps, frozen)
        row["tokens_per_s"] = tokens / row["step_s"]
        rows[name] = row
    for name, row in rows.items():
        row["cost_per_token_vs_pretrain"] = rows["pretrain"]["tokens_per_s"] / row["tokens_per_s"]
        print(
            f"{name}: step {row['step_s']:.3f} s, {row['tokens_per_s']:,.0f} tokens/s, "
            f"compile {row['compile_s']:.1f} s, {row['cost_per_token_vs_pretrain']:.2f}x pretraining's cost per token"
        )
    out = write_results(
        "preference_step",
        {
            "config": args.config,
            "params": param_counts(base.model).total,
            "tokens_per_step": tokens,
            "seq_len": L,
            "runs": rows,
        },
        args.out,
        args.smoke,
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
