"""One online RL step, split into its parts, and rollout speed against the streaming generator.

    python benchmarks/rl_step.py [--configs configs/tiny.py configs/small.py] [--prompts 4] [--samples 8]
                                 [--new 32] [--repeats 3] [--out DIR]
    python benchmarks/rl_step.py --smoke [--out DIR]   # seconds: a tiny model

For each config: random parameters, prompts of 16 random tokens, `--samples` completions of each
(GRPO, beta 0.04, so the step also runs the reference's forward), EOS never sampled (every row
decodes `--new` tokens). Timed after a warm-up call, best of `--repeats`:

- generate: `lmx.decode.rollout.RolloutGenerator.rollout`, the whole batch in one compiled loop;
- score: a reward on the host over the completions as text (their ids joined by spaces; a trained
  run decodes with its tokenizer first), `format` (space-separated integers);
- prepare: the step's once-per-batch pass alone (old and reference log-probs, group advantages);
- step: the whole compiled RL step (prepare, then one update); update = step - prepare.

Rollout tokens/s are set against `lmx.decode.generate.Generator.generate` (the streaming path of
`lmx generate`, one host round trip per token) on the same batch and lengths; the issue's target is
a ratio of at least 0.8. Writes benchmarks/results/rl_step.json (`--out DIR`: DIR/rl_step.json).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from common import add_common_arguments, best_time, block, parse_args, smoke_overrides, write_results

from lmx.config import load_config
from lmx.decode.generate import Generator
from lmx.decode.rollout import RolloutGenerator
from lmx.decode.sampling import Sampling
from lmx.objectives.rewards import Rewards
from lmx.objectives.rl import rl_prepare
from lmx.objectives.rl_task import rollout_rows
from lmx.train.setup import setup_training

PROMPT = 16


def measure(config: str, args: argparse.Namespace) -> dict:
    batch = args.prompts * args.samples
    overrides = [
        *(smoke_overrides() if args.smoke else []),
        f"train.batch_size={batch}",
        f"data.seq_len={PROMPT + args.new}",
        "objective.kind=rl",
        "objective.train_files=unused.jsonl",
        "objective.init_from=unused",
        f"objective.samples={args.samples}",
        f"objective.max_new_tokens={args.new}",
        "mesh.data=1",
    ]
    cfg = load_config(config, overrides)
    setup = setup_training(cfg, jax.devices()[:1])
    params, reference = setup.state.params, jax.tree.map(lambda x: x.copy(), setup.state.params)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(4, cfg.model.vocab_size, PROMPT) for _ in range(args.prompts)]
    rows = [p for p in prompts for _ in range(args.samples)]
    ids = [p.tolist() for p in rows]
    sampling = Sampling(temperature=1.0, seed=0)
    max_len = PROMPT + args.new
    rollout = RolloutGenerator(setup.model, params, setup.mesh, cfg.mesh.rules, batch, eos_id=-1, max_len=max_len)
    rollout.rollout(ids, args.new, sampling)  # compile
    generate_s = best_time(lambda: rollout.rollout(ids, args.new, sampling), args.repeats)
    stream = Generator(setup.model, params, setup.mesh, cfg.mesh.rules, batch, eos_id=-1, max_len=max_len)
    stream.generate(ids, args.new, sampling)  # compile
    stream_s = best_time(lambda: stream.generate(ids, args.new, sampling), args.repeats)

    rollouts = rollout.rollout(ids, args.new, sampling)
    texts = [" ".join(str(t) for t in row) for row in rollouts.tokens]
    rewards = Rewards([("format", 1.0)])
    score = lambda: rewards.score(["p"] * batch, texts, [{}] * batch)
    score_s = best_time(score, args.repeats)
    host = rollout_rows(rows, rollouts, score()[0], cfg.data.seq_len)

    step = setup.make_step(with_frozen=True)
    prepare = jax.jit(rl_prepare(setup.model, cfg.objective.hyper(), setup.mesh, cfg.mesh.rules))
    block(prepare(params, host, reference))
    prepare_s = best_time(lambda: block(prepare(params, host, reference)), args.repeats)
    state = setup.state
    state, _ = block(step(state, host, reference))  # compile
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, _ = block(step(state, host, reference))
        times.append(time.perf_counter() - start)
    step_s = min(times)
    new_tokens = batch * args.new
    row = {
        "config": cfg.name,
        "batch": batch,
        "prompts": args.prompts,
        "samples": args.samples,
        "new_tokens": args.new,
        "generate_s": generate_s,
        "score_s": score_s,
        "prepare_s": prepare_s,
        "update_s": step_s - prepare_s,
        "step_s": step_s,
        "rollout_tokens_per_s": new_tokens / generate_s,
        "streaming_tokens_per_s": new_tokens / stream_s,
        "rollout_over_streaming": stream_s / generate_s,
        "generate_share": generate_s / (generate_s + score_s + step_s),
    }
    print(
        f"{cfg.name} batch {batch}: generate {generate_s:.3f} s ({row['rollout_tokens_per_s']:,.0f} tokens/s, "
        f"{row['rollout_over_streaming']:.2f}x streaming), score {score_s * 1e3:.1f} ms, prepare {prepare_s:.3f} s, "
        f"update {row['update_s']:.3f} s"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/tiny.py", "configs/small.py"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"configs": ["configs/tiny.py"], "new": 4, "repeats": 1, "prompts": 2})
    runs = [measure(config, args) for config in args.configs]
    path = write_results("rl_step", {"prompt_tokens": PROMPT, "runs": runs}, args.out, args.smoke)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
