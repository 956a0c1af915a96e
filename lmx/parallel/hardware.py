"""Peak FLOP/s of the machine a run uses: the denominator of model FLOP/s utilisation (MFU)."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# Dense bfloat16 peak per chip, from the vendors' datasheets (TPU system architecture pages; NVIDIA
# A100 / H100 SXM datasheets). Matched as substrings of `device.device_kind`, most specific first.
KNOWN_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("TPU v6 lite", 918e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v4", 275e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def time_matmul_flops(n: int = 2048, repeats: int = 5, dtype: jnp.dtype = jnp.float32) -> float:
    """FLOP/s of a jitted `dtype` n x n matmul on the default device, measured now (best of
    `repeats`). On CPU one device already uses every core, so this is the whole host's ceiling."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@functools.cache
def measured_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """`time_matmul_flops`, measured once per process: a CPU's practical ceiling for MFU.

    Every run on CPU pays for it at startup. At n = 1024 the best of 5 took 0.15 s against 0.75 s
    at 2048 (inputs included), and read 237 against 215 GFLOP/s (2-core Xeon, 2026-12-04): the
    smaller product sits nearer the peak, which is what MFU divides by. The benchmarks record
    their own 2048 ceiling (benchmarks/common.py)."""
    return time_matmul_flops(n, repeats)


def peak_flops(devices: Sequence[jax.Device], per_device: float = 0.0) -> float:
    """Peak FLOP/s of `devices` together (0.0 when unknown).

    `per_device` > 0 wins. Otherwise accelerators are looked up in KNOWN_PEAK_FLOPS; CPUs are
    measured. The CPU devices of one host share its cores (XLA's forced host devices), so on CPU a
    peak counts once per process, not once per device.
    """
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":
        hosts = len({d.process_index for d in devices})
        return (per_device or measured_matmul_flops()) * hosts
    if per_device > 0:
        return per_device * len(devices)
    for name, flops in KNOWN_PEAK_FLOPS:
        if name in kind:
            return flops * len(devices)
    return 0.0


def cpu_model() -> str:
    """The host CPU's model name (Linux's /proc/cpuinfo), or the platform's machine type."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, str | int]:
    """What a measurement ran on, for results files: the CPU, its cores, the JAX version and the
    devices, so that a reader can tell their machine from lmx when figures differ."""
    import os
    import platform

    devices = jax.devices()
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "devices": len(devices),
    }
