"""The cost of running one training step over processes instead of devices, on this machine.

    python benchmarks/multiprocess.py [--config configs/small.py] [--steps 10] [--out DIR]
    python benchmarks/multiprocess.py --smoke [--out DIR]   # a tiny model, 2 steps, small buffers

The same step of the same config (`mesh.data=-1`: two data shards) runs as 1 process x 2 CPU devices
and as 2 processes x 1 device each (`jax.distributed` on localhost, gloo collectives between them),
on random tokens. Each reports its median step time, and the median time of an all-reduce (a sum
over the data axis, as the step's gradient psum) of float32 buffers up to the model's gradient size.
Writes benchmarks/results/multiprocess.json (`--out DIR`: DIR/multiprocess.json).

What carries over to a cluster and what does not: BENCHMARKS.md, "Many processes".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import add_common_arguments, parse_args, smoke_overrides, write_results

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = {"1 process x 2 devices": (1, 2), "2 processes x 1 device": (2, 1)}


def median_time(fn, repeats: int) -> float:
    import jax

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    """One process of a layout: joins the run (when there are several), times the step and the
    all-reduces, and (process 0) writes what it measured to `args.result`."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from lmx.config import load_config
    from lmx.model.flops import param_counts
    from lmx.parallel.distributed import DistributedConfig, initialize, leave
    from lmx.parallel.mapping import process_rows, step_batch_sharding
    from lmx.train.setup import setup_training, synthetic_batch

    if args.processes > 1:
        initialize(DistributedConfig(args.coordinator, args.processes, args.process_id))
    cfg = load_config(args.config, [*args.set, "mesh.data=-1", "mesh.fsdp=1", "mesh.tensor=1"])
    setup = setup_training(cfg)
    sharding = step_batch_sharding(setup.mesh)
    start, stop = process_rows(sharding, cfg.train.batch_size)
    host = synthetic_batch(np.random.default_rng(0), cfg.train.batch_size, cfg.data.seq_len, cfg.model.vocab_size)
    batch = {k: jax.make_array_from_process_local_data(sharding, v[start:stop]) for k, v in host.items()}
    began = time.perf_counter()
    step = setup.make_step().lower(setup.state, batch).compile()
    compile_s = time.perf_counter() - began
    state = setup.state
    state, _ = jax.block_until_ready(step(state, batch))  # warm-up (and gloo's connections)

    def one_step():
        nonlocal state
        state, metrics = step(state, batch)
        return metrics

    step_s = median_time(one_step, args.steps)

    # All-reduce: each data shard holds a buffer; the sum over shards is replicated on every device.
    params = param_counts(cfg.model).total
    mesh, shards = setup.mesh, setup.mesh.shape["data"]
    split, replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
    total = jax.jit(lambda x: x.sum(0), out_shardings=replicated)
    allreduce = {}
    for size in sorted({*args.sizes, params}):
        local = np.ones((shards // jax.process_count(), size), np.float32)
        x = jax.make_array_from_process_local_data(split, local)
        jax.block_until_ready(total(x))  # compile
        allreduce[str(size)] = median_time(lambda x=x: total(x), args.steps)
    if jax.process_index() == 0:
        tokens = cfg.train.batch_size * cfg.data.seq_len
        result = {
            "processes": jax.process_count(),
            "devices_per_process": jax.local_device_count(),
            "compile_s": compile_s,
            "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "allreduce_s_by_floats": allreduce,
        }
        Path(args.result).write_text(json.dumps(result))
    leave()


def run_layout(processes: int, devices: int, args: argparse.Namespace, workdir: Path) -> dict:
    from lmx.cluster.local import free_port

    result = workdir / f"{processes}x{devices}.json"
    coordinator = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(devices)}
    command = [sys.executable, __file__, "--worker", "--config", args.config, "--steps", str(args.steps)]
    command += ["--processes", str(processes), "--coordinator", coordinator, "--result", str(result)]
    command += ["--sizes", *(str(s) for s in args.sizes)]
    for override in args.set:
        command += ["--set", override]
    procs = [
        subprocess.Popen([*command, "--process-id", str(i)], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
        for i in range(processes)
    ]
    errors = [p.communicate(timeout=1200)[1] for p in procs]
    if any(p.returncode for p in procs):
        codes = [p.returncode for p in procs]
        raise SystemExit(f"{processes} x {devices} failed (exit {codes}):\n" + "\n".join(e[-3000:] for e in errors))
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.py")
    parser.add_argument("--steps", type=int, default=10, help="timed repeats of the step and each all-reduce")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="floats")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    add_common_arguments(parser)
    if "--worker" in sys.argv:
        worker(parser.parse_args())
        return
    args = parse_args(parser, smoke_defaults={"steps": 2, "sizes": [1000]})
    if args.smoke:
        args.set = [*smoke_overrides(), "train.batch_size=8", *args.set]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: run_layout(p, d, args, Path(tmp)) for name, (p, d) in LAYOUTS.items()}
    one, two = runs["1 process x 2 devices"], runs["2 processes x 1 device"]
    payload = {
        "config": args.config,
        "overrides": args.set,
        "runs": runs,
        "step_slowdown": two["step_s"] / one["step_s"],
    }
    path = write_results("multiprocess", payload, args.out, args.smoke)
    for name, r in runs.items():
        reduce = ", ".join(f"{int(k):,} floats {v * 1e3:.2f} ms" for k, v in r["allreduce_s_by_floats"].items())
        print(f"{name}: step {r['step_s'] * 1e3:.1f} ms ({r['tokens_per_s']:,.0f} tokens/s); all-reduce {reduce}")
    print(f"2 processes / 1 process step time: {payload['step_slowdown']:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
