"""Which XLA SPMD partitioner compiles lmx's steps.

jax 0.10.2 partitions with Shardy by default. Shardy aborts the process (a CHECK failure in
spmd_partitioner_util.cc) on lmx's training step on meshes with a manual "data" axis beside two
automatic axes of size > 1, e.g. (2, 2, 2); GSPMD compiles the same program and gives the same
numbers as one device. So lmx compiles its mapped steps under GSPMD, scoped to those calls; the rest
of the process keeps JAX's default. Measurements and repros: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from jax._src import config as _jax_config  # the scoped form of jax_use_shardy_partitioner


@contextlib.contextmanager
def gspmd_partitioner() -> Iterator[None]:
    """Compile (and run) jitted functions inside this block with the GSPMD partitioner."""
    state = getattr(_jax_config, "use_shardy_partitioner", None)
    if state is None:  # a JAX without the switch: nothing to choose
        yield
        return
    with state(False):
        yield


class PartitionedFunction:
    """A jitted function that always lowers and runs under `gspmd_partitioner`."""

    def __init__(self, jitted: Any) -> None:
        self.jitted = jitted
        functools.update_wrapper(self, jitted)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with gspmd_partitioner():
            return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        with gspmd_partitioner():
            return self.jitted.lower(*args, **kwargs)


def partitioned(jitted: Callable[..., Any]) -> PartitionedFunction:
    return PartitionedFunction(jitted)
