"""Shared helpers for the benchmarks: timing, the machine's matmul ceiling, writing results, and the
arguments every benchmark takes (`--smoke`, `--out`).

`--smoke` runs a benchmark end to end in seconds with tiny shapes and the fewest repeats that still
take every code path of the full run (tests/test_benchmarks.py runs them all, so a benchmark that
breaks fails CI). Its figures mean nothing; its results go to `--out`, or to a new temporary
directory (printed), never to benchmarks/results/ unless `--out` names it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from lmx.hostmem import retain_freed_memory
from lmx.parallel.hardware import describe_machine, time_matmul_flops

# Step times are measured with XLA's freed host memory reused, not faulted in again every step (lmx.hostmem;
# opt-in for the `lmx` command, LMX_RETAIN_HOST_MEMORY=1).
HOST_MEMORY_RETAINED = retain_freed_memory(default=True)

RESULTS = Path(__file__).resolve().parent / "results"

# Smoke mode's corpus: the email package's sources (20 files, ~350 KB), which every CPython has
# (as tests/conftest.py's CORPUS). A fifth of the files for validation, so that split is not empty.
SMOKE_CORPUS = f"text:{sysconfig.get_paths()['stdlib']}/email/*.py"
SMOKE_VALIDATION_FRACTION = 0.2
SMOKE_VOCAB = 512  # the email sources need more than 351 pieces (characters and symbols)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes and the fewest repeats that take every code path: checks that the benchmark "
        "runs end to end (seconds); the figures mean nothing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"directory for the results JSON (default {RESULTS.relative_to(RESULTS.parent.parent)}/; "
        "with --smoke a new temporary directory)",
    )


def parse_args(parser: argparse.ArgumentParser, smoke_defaults: dict[str, Any] | None = None) -> argparse.Namespace:
    """`parser.parse_args()`, with `smoke_defaults` replacing the parser's defaults under `--smoke`
    (options given on the command line still win), and `args.out` resolved to the directory the
    results go to."""
    args = parser.parse_args()
    if args.smoke and smoke_defaults:
        parser.set_defaults(**smoke_defaults)
        args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="lmx-benchmark-smoke-")) if args.smoke else RESULTS
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def smoke_batch() -> int:
    """A smoke run's global batch: even, at least 8, and divisible by the device count (the default
    mesh puts every device on the data axis; halved, it is still divisible for preference pairs)."""
    n = jax.device_count()
    return 2 * n * math.ceil(4 / n)


def smoke_overrides() -> list[str]:
    """Config overrides for a tiny model (35k parameters) on a tiny batch; a script's
    own `--set` overrides come after these and win."""
    return [
        f"model.vocab_size={SMOKE_VOCAB}",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.n_kv_heads=1",
        "model.d_ff=64",
        "model.max_seq_len=64",
        "data.seq_len=32",
        f"train.batch_size={smoke_batch()}",
    ]


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
    """FLOP/s of a jitted float32 n x n matmul (2048 in a full run): this machine's practical
    ceiling (lmx's own measurement, the one MFU on CPU divides by), timed afresh on every call."""
    return time_matmul_flops(n, repeats=repeats)


def git_commit() -> dict[str, Any]:
    """The repository's commit, and whether the working tree differed from it (then the figures
    belong to uncommitted code)."""
    root = RESULTS.parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    if "LMX_GIT_COMMIT" in os.environ:  # a copy of the tree whose .git is not its own (a lent GPU machine)
        return {"commit": os.environ["LMX_GIT_COMMIT"], "dirty": None}
    return {
        "commit": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "-uno")),
    }


def provenance(smoke: bool = False) -> dict[str, Any]:
    """When, on what code and on what machine a result was measured, with a reference throughput
    measured at the same time (the float32 matmul ceiling): a reader compares their own ceiling
    with it to tell a slower machine from a slower lmx."""
    return {
        "date": datetime.date.today().isoformat(),
        **git_commit(),
        "machine": machine(),
        "matmul_ceiling_flops_per_s": matmul_ceiling(n=256 if smoke else 2048, repeats=3 if smoke else 10),
    }


def machine() -> dict[str, Any]:
    return {
        **describe_machine(),
        "host_memory_retained": HOST_MEMORY_RETAINED,
        "processor": platform.processor() or platform.machine(),
    }


def write_results(name: str, payload: dict[str, Any], out: Path = RESULTS, smoke: bool = False) -> Path:
    """Writes `out/NAME.json`: the provenance (date, commit, machine, ceiling), then `payload`; a
    smoke run's results say so."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    marker = {"smoke": True} if smoke else {}
    path.write_text(json.dumps({**provenance(smoke), **marker, **payload}, indent=2) + "\n")
    return path
