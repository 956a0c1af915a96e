"""Host memory: let XLA's CPU runtime reuse the memory it frees instead of faulting it in anew.

A compiled CPU step mallocs its temporaries (activations and gradients, gigabytes per step for
`configs/small.py`) and frees them when it returns. glibc serves blocks above its mmap threshold
(32 MiB at most) with fresh ``mmap`` calls and unmaps them on ``free``; blocks freed from a
thread's own arena are returned to the OS as well. So every step page-faults and zero-fills all of
its temporaries again: on the project's 2-core machine the small step spent a third of its CPU
time in the kernel (BENCHMARKS.md). Serving every block from one heap that is never trimmed keeps
freed pages in the process for the next step, as tcmalloc does.

The CLI applies this at start-up (`lmx.cli.run`); scripts that import lmx call
`retain_freed_memory` first. ``LMX_RETAIN_HOST_MEMORY=0`` turns it off. The cost: the process keeps
its peak host memory until it exits, as it would with a preallocating accelerator runtime.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

ENV_SWITCH = "LMX_RETAIN_HOST_MEMORY"


def retain_freed_memory() -> bool:
    """Tunes glibc's malloc so that freed memory stays in the process: no ``mmap`` for large
    blocks, one arena for all threads, no trimming. Returns whether the settings were applied
    (False on another C library, under a preloaded allocator such as tcmalloc, or when switched off
    with ``LMX_RETAIN_HOST_MEMORY=0``)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("LD_PRELOAD", ""):  # e.g. tcmalloc or jemalloc: it owns malloc, leave it be
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1))  # -1: never trim
    # mallopt returns 1 on success; the first failure stops (later settings rely on earlier ones).
    return all(libc.mallopt(param, value) == 1 for param, value in settings)
