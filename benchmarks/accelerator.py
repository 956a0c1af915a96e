"""Accelerator benchmark (issue 20): the GPU configs' train-step MFU, each attention implementation,
decode throughput and peak memory, on whatever backend JAX finds.

    python benchmarks/accelerator.py [--configs lm_125m lm_350m lm_1b3] [--steps 5] [--out DIR]
    python benchmarks/accelerator.py --smoke [--out DIR]   # tiny widths: the script works end to end
    python benchmarks/accelerator.py --configs lm_1b3 --attention --set model.remat=save_dots --profile DIR
        # a jax.profiler trace of the timed steps; benchmarks/trace_summary.py DIR ranks its kernels

Each config of configs/gpu/ runs with its per-device work unchanged on the devices found: a mesh of
FSDP over all of them and a batch of 32 rows per device in the config's 4 micro-batches (the 8-GPU
config's 256 rows over 8). Its step is compiled, warmed up, and timed (median of `--steps`); MFU is
the step's model FLOPs (`lmx.model.flops`'s ``executed``, the definition the loop's MFU uses) over the step time
and the devices' bf16 peak (`lmx.parallel.hardware.peak_flops`: the datasheet's for H100/H200/A100/
TPU, the measured matmul ceiling on CPU). The smallest config's step is then timed with each
`model.attention`. Decoding: greedy tokens per second of the KV-cache generator at batch 8.
Memory: the device's peak bytes in use where the runtime reports it (GPU, TPU; the configs run
smallest first, so each peak is its own), XLA's `memory_analysis()` total of the compiled step, and
`lmx plan`'s estimate. Issue 20's target: >= 45% MFU for lm_1b3 on one H100/H200 in bf16.
Writes benchmarks/results/accelerator.json (`--out DIR`: DIR/accelerator.json).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import add_common_arguments, block, parse_args, write_results

from lmx.config import Config, load_config
from lmx.decode.generate import Generator
from lmx.model.attention import IMPLEMENTATIONS, native_implementations, resolve_attention
from lmx.model.flops import flops_per_token, tokens_per_step
from lmx.parallel.hardware import peak_flops, time_matmul_flops
from lmx.scaling.memory import estimate_memory
from lmx.train.setup import setup_training, synthetic_batch

ROWS_PER_DEVICE = 32  # the 8-GPU configs' 256 rows over 8 devices
SMOKE_SHAPES = [
    "model.vocab_size=512",
    "model.d_model=64",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.n_kv_heads=2",
    "model.d_ff=128",
    "model.max_seq_len=64",
    "data.seq_len=64",
]


def config(name: str, args: argparse.Namespace, *extra: str) -> Config:
    n = jax.device_count()
    per_device = 4 if args.smoke else ROWS_PER_DEVICE
    overrides = [
        *(SMOKE_SHAPES if args.smoke else []),
        "mesh.data=1",
        f"mesh.fsdp={n}",
        "mesh.tensor=1",
        f"train.batch_size={per_device * n}",
        f"train.micro_batches={min(4, per_device)}",
        *extra,
    ]
    return load_config(f"configs/gpu/{name}.py", overrides)


def xla_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes


def train_step(cfg: Config, steps: int, profile: str | None = None) -> dict:
    """The compiled step of `cfg` on every device: its median time, MFU and memory. `profile`: a
    directory for a `jax.profiler` trace (with a Perfetto JSON) of the timed steps."""
    devices = jax.devices()
    setup = setup_training(cfg, devices)
    batch = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    start = time.perf_counter()
    compiled = setup.make_step().lower(setup.state, batch).compile()
    compile_s = time.perf_counter() - start
    print(f"{cfg.name} attention={cfg.model.attention}: compiled in {compile_s:.1f} s", flush=True)
    state, metrics = block(compiled(setup.state, batch))  # warm-up: its loss compares implementations
    times = []
    with jax.profiler.trace(profile, create_perfetto_trace=True) if profile else contextlib.nullcontext():
        for _ in range(steps):
            start = time.perf_counter()
            state, _ = block(compiled(state, batch))
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    flops = flops_per_token(cfg.model, cfg.data.seq_len, "executed") * tokens_per_step(cfg)
    peak = peak_flops(devices)
    stats = devices[0].memory_stats() or {}
    return {
        "attention": cfg.model.attention,
        "step_s": step_s,
        "compile_s": compile_s,
        "tokens_per_s": tokens_per_step(cfg) / step_s,
        "flops_per_step": flops,
        "peak_flops": peak,
        "mfu": flops / (step_s * peak) if peak else None,
        "first_loss": float(metrics["loss"]),
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "xla_bytes": xla_bytes(compiled),
        "planned_bytes": estimate_memory(cfg, len(devices), jax.default_backend()).total,
        "params": state.params,  # for decoding; dropped before writing
    }


def decode(cfg: Config, params, batch: int, new_tokens: int) -> float:
    """Greedy KV-cache tokens per second of `batch` rows, after a warm-up (compiling) call."""
    setup = setup_training(cfg, jax.devices(), init=False)
    prompts = np.random.default_rng(1).integers(4, cfg.model.vocab_size, (batch, 16)).tolist()
    generator = Generator(setup.model, params, setup.mesh, cfg.mesh.rules, batch, eos_id=-1)
    generator.generate(prompts, new_tokens)
    start = time.perf_counter()
    generator.generate(prompts, new_tokens)
    return batch * new_tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["lm_125m", "lm_350m", "lm_1b3"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (the median is kept)")
    parser.add_argument("--new-tokens", type=int, default=128, help="decoded tokens per row")
    parser.add_argument(
        "--attention",
        nargs="*",
        choices=IMPLEMENTATIONS,
        default=list(native_implementations(jax.default_backend())),
        help="implementations timed on the first config (default: those compiled on this backend, splash "
        "only on TPU; none: only the configs' own; one process per config keeps each peak memory its own)",
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every config (model.remat=save_dots)"
    )
    parser.add_argument("--profile", metavar="DIR", help="a jax.profiler trace of the first config's timed steps")
    add_common_arguments(parser)
    args = parse_args(parser, smoke_defaults={"configs": ["lm_125m"], "steps": 2, "new_tokens": 8})
    runs = []
    for name in args.configs:
        cfg = config(name, args, *args.set)
        row = {"config": name, "overrides": args.set, **train_step(cfg, args.steps, args.profile if not runs else None)}
        params = row.pop("params")
        row["decode_tokens_per_s"] = decode(cfg, params, 8, args.new_tokens) if args.new_tokens else None
        runs.append(row)
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "unknown peak"
        print(
            f"{name}: step {row['step_s'] * 1e3:,.1f} ms, MFU {mfu}, XLA {row['xla_bytes'] / 2**30:.2f} GiB, "
            f"planned {row['planned_bytes'] / 2**30:.2f} GiB, decode {row['decode_tokens_per_s'] or 0:,.0f} tokens/s",
            flush=True,
        )
    attention = []
    first = config(args.configs[0], args, *args.set)
    for impl in args.attention:
        if resolve_attention(first.model.attention, jax.default_backend()) == impl:
            # The config's own ("auto") step is this implementation's: measured above, not recompiled.
            row = {**{k: v for k, v in runs[0].items() if k not in ("config", "decode_tokens_per_s")}}
            row["attention"] = impl
        else:
            row = train_step(config(args.configs[0], args, *args.set, f"model.attention={impl}"), args.steps)
            row.pop("params")
        attention.append(row)
        print(
            f"{args.configs[0]} attention={impl}: step {row['step_s'] * 1e3:,.1f} ms, "
            f"first loss {row['first_loss']:.5f}",
            flush=True,
        )
    # The bf16 matmul rate this device reaches (8192^3 as the lent H200's own check, 2026-10-28),
    # beside the datasheet peak that MFU divides by.
    bf16_matmul = time_matmul_flops(256 if args.smoke else 8192, repeats=3 if args.smoke else 10, dtype=jnp.bfloat16)
    print(f"bf16 matmul: {bf16_matmul / 1e12:,.1f} TFLOP/s per device", flush=True)
    payload = {
        "rows_per_device": 4 if args.smoke else ROWS_PER_DEVICE,
        "bf16_matmul_flops_per_s": bf16_matmul,
        "runs": runs,
        "attention_config": args.configs[0],
        "attention": attention,
    }
    print(f"wrote {write_results('accelerator', payload, args.out, args.smoke)}")


if __name__ == "__main__":
    main()
