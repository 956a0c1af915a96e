"""Host memory: let XLA's CPU runtime reuse the memory it frees instead of faulting it in anew.

A compiled CPU step mallocs its temporaries (activations and gradients, gigabytes per step for
`configs/small.py`) and frees them when it returns. glibc serves blocks above its mmap threshold
(32 MiB at most) with fresh ``mmap`` calls and unmaps them on ``free``; blocks freed from a
thread's own arena are returned to the OS as well. So every step page-faults and zero-fills all of
its temporaries again: on the project's 2-core machine the small step spent a third of its CPU
time in the kernel (BENCHMARKS.md). Serving every block from one heap that is never trimmed keeps
freed pages in the process for the next step, as tcmalloc does.

It is opt-in: ``LMX_RETAIN_HOST_MEMORY=1`` turns it on for the `lmx` command (`lmx.cli.run`), and
scripts call `retain_freed_memory` first. The cost is host memory: the process keeps its peak until
it exits, and with asynchronous checkpoint saves the one heap fragments and grows. `lmx train
configs/small.py` (12 steps, a checkpoint every 4) peaked at 23.3 GB resident with it against
9.0 GB without, on a 24 GB machine (issue 20): a default that can exhaust the host is wrong, so the
default is glibc's own behaviour. The benchmarks that measure step time turn it on
(``default=True``) and record that they did.
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


def retain_freed_memory(default: bool = False) -> bool:
    """Tunes glibc's malloc so that freed memory stays in the process: no ``mmap`` for large
    blocks, one arena for all threads, no trimming. Applied when ``LMX_RETAIN_HOST_MEMORY=1``, or
    when it is unset and `default` is true; ``0`` always leaves malloc alone. Returns whether the
    settings were applied (never on another C library or under a preloaded allocator such as
    tcmalloc)."""
    if os.environ.get(ENV_SWITCH, "1" if default else "0") != "1":
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
