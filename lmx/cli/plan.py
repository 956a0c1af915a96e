"""`lmx plan`: memory per device and step time of a config's training step, before running it."""

from __future__ import annotations

import argparse

from lmx.cli.common import config_arguments
from lmx.errors import ConfigError


def _cmd_plan(args: argparse.Namespace) -> int:
    from lmx.config import load_config
    from lmx.model.flops import tokens_per_step
    from lmx.scaling.memory import device, estimate_memory, format_bytes, parse_bytes
    from lmx.scaling.plan import format_duration

    if not 0 < args.mfu <= 1:
        raise ConfigError(f"--mfu {args.mfu}: must lie in (0, 1]")
    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices {args.devices}: must be positive")
    accelerator = device(args.device)
    memory = parse_bytes(args.device_memory) if args.device_memory else accelerator.memory
    cfg = load_config(args.config, args.set)
    devices, note = args.devices, ""
    if devices is None and -1 in cfg.mesh.shape:
        import jax

        devices = jax.device_count()
        note = f" (-1 filled from this machine's {devices} device(s); --devices N plans for others)"
    est = estimate_memory(cfg, devices, accelerator.platform)
    m = cfg.model
    data, fsdp, tensor = est.mesh
    micro = cfg.train.batch_size // cfg.train.micro_batches // data
    mesh = f"mesh data={data} fsdp={fsdp} tensor={tensor}"
    print(f"{cfg.name} ({args.config}) on {est.devices} x {accelerator.name}: {mesh}{note}")
    print(
        f"model: {m.n_layers} layers x d_model {m.d_model}, remat {m.remat}, attention {est.attention}, "
        f"{'scanned' if m.scan_layers else 'unrolled'} layers, compute {m.dtype}; "
        f"{cfg.train.micro_batches} micro-batch{'es' if cfg.train.micro_batches > 1 else ''} of "
        f"{micro} x {cfg.data.seq_len} tokens per data shard"
    )
    rows = [
        ("parameters", est.parameters),
        ("optimizer state", est.optimizer_state),
        ("gradients", est.gradients),
        ("activations", est.activations),
        ("other (batch, XLA's parameter copies)", est.other),
        ("total per device", est.total),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {format_bytes(value):>12}")
    verdict = "fits" if est.total <= memory else "does not fit"
    print(f"  {'device memory'.ljust(width)}  {format_bytes(memory):>12}  ({est.total / memory:.1%} used): {verdict}")
    step_s = est.step_seconds(accelerator.peak_flops, args.mfu)
    print(f"FLOPs per step: {est.flops_per_step:.4g} ({tokens_per_step(cfg):,} tokens, executed definition)")
    print(
        f"step time at {args.mfu:.0%} MFU of {accelerator.peak_flops / 1e12:,.0f} TFLOP/s per device: "
        f"{format_duration(step_s)}; the run's {cfg.train.steps:,} steps: {format_duration(step_s * cfg.train.steps)}"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser(
        "plan", help="memory per device (parameters, optimizer, gradients, activations) and step time of a config"
    )
    config_arguments(plan)
    plan.add_argument(
        "--device", default="h100", help="h100 (default), h200, a100, tpu-v4, tpu-v5p, tpu-v5e or tpu-v6e"
    )
    plan.add_argument("--device-memory", metavar="SIZE", help="memory per device, e.g. 80GiB (default: the device's)")
    plan.add_argument("--mfu", type=float, default=0.4, help="model FLOP/s utilisation for the step time (default 0.4)")
    plan.add_argument("--devices", type=int, help="devices to plan for when the mesh has a -1 size")
    plan.set_defaults(func=_cmd_plan)
