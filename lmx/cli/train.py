"""`lmx train` and `lmx smoke`: training runs."""

from __future__ import annotations

import argparse
import time

from lmx.cli.common import config_arguments, distributed_arguments


def _cmd_smoke(args: argparse.Namespace) -> int:
    """A short training run on random tokens: checks that a config builds, shards and steps."""
    import jax
    import numpy as np

    from lmx.config import load_config
    from lmx.model.flops import param_counts
    from lmx.train.setup import setup_training, synthetic_batch

    cfg = load_config(args.config, args.set)
    setup = setup_training(cfg)
    step = setup.make_step()
    counts = param_counts(cfg.model)
    print(f"{cfg.name}: {counts.total:,} parameters on mesh {dict(setup.mesh.shape)} ({jax.device_count()} devices)")
    batch = synthetic_batch(
        np.random.default_rng(cfg.train.seed), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size
    )
    state = setup.state
    for i in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        loss = float(metrics["loss"])
        tokens_per_s = cfg.train.batch_size * cfg.data.seq_len / (time.perf_counter() - start)
        note = " (includes compilation)" if i == 0 else ""
        print(f"step {i + 1}: loss {loss:.4f}, {tokens_per_s:,.0f} tokens/s{note}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.train.loop import train
    from lmx.train.profile import parse_window

    profile = parse_window(args.profile) if args.profile else None
    cfg = load_config(args.config, args.set)
    run_dir = args.run_dir or f"runs/{cfg.name}"
    result = train(cfg, run_dir, extend=args.extend, profile=profile)
    if result.status == "preempted":
        print(f"stopped at step {result.step}; resume with the same command")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    smoke = sub.add_parser("smoke", help="a few training steps on random tokens")
    config_arguments(smoke)
    smoke.add_argument("--steps", type=int, default=5)
    smoke.set_defaults(func=_cmd_smoke)

    train = sub.add_parser("train", help="train a model (resumes from the run directory's latest checkpoint)")
    config_arguments(train)
    train.add_argument("--run-dir", help="where checkpoints, metrics and the summary go (default runs/<name>)")
    train.add_argument(
        "--extend",
        action="store_true",
        help="continue a finished (or interrupted) run with a changed config on purpose; keeps its old summary "
        "and final checkpoint",
    )
    train.add_argument(
        "--profile",
        metavar="START:STOP",
        help="write a jax.profiler trace of steps START to STOP - 1 into RUN_DIR/profile (TensorBoard, Perfetto)",
    )
    distributed_arguments(train)
    train.set_defaults(func=_cmd_train)
