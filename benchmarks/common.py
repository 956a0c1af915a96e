"""Shared helpers for the benchmarks: timing, the machine's matmul ceiling, writing results."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

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


def matmul_ceiling(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted float32 n x n matmul: this machine's practical ceiling."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    block(dot(a, b))
    return 2 * n**3 / best_time(lambda: dot(a, b), repeats)


def machine() -> dict[str, Any]:
    return {
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
