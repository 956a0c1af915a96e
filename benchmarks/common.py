"""Shared helpers for the benchmarks: timing, the machine's matmul ceiling, writing results."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from lmx.hostmem import retain_freed_memory
from lmx.parallel.hardware import time_matmul_flops

# As in the `lmx` command: XLA's freed host memory is reused, not faulted in again every step.
HOST_MEMORY_RETAINED = retain_freed_memory()

RESULTS = Path(__file__).resolve().parent / "results"


def block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of `repeats` timed calls (after the caller has warmed up / compiled)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_ceiling() -> float:
    """FLOP/s of a jitted float32 2048 x 2048 matmul: this machine's practical ceiling (lmx's own
    measurement, the one MFU on CPU divides by), timed afresh on every call."""
    return time_matmul_flops(2048, repeats=10)


def machine() -> dict[str, Any]:
    return {
        "host_memory_retained": HOST_MEMORY_RETAINED,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "device_kind": jax.devices()[0].device_kind,
        "processor": platform.processor() or platform.machine(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
