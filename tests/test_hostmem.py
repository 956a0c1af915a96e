"""lmx.hostmem: with the settings applied (opt-in), memory a process frees stays in it for the next step."""

import os
import platform
import subprocess
import sys

import pytest

# Mallocs and frees 256 MiB (as an XLA step does with its temporaries), then prints whether the
# settings were applied and how much of the block is still resident after the free.
PROBE = """
import ctypes, os
from lmx.hostmem import retain_freed_memory
import sys
applied = retain_freed_memory(default=sys.argv[1] == "default")
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
size = 256 << 20
before = resident()
block = libc.malloc(size)
ctypes.memset(block, 1, size)  # touch every page
libc.free(block)
print(applied, (resident() - before) / size)
"""

glibc_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def probe(default: bool = False, **env: str) -> tuple[bool, float]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LMX_RETAIN_HOST_MEMORY")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, "default" if default else "off"],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", float(out[1])


@glibc_linux
def test_freed_memory_stays_resident_when_asked_for_and_is_returned_by_default():
    applied, kept = probe()
    assert not applied and kept < 0.1  # glibc's default: a block this large is unmapped on free
    applied, kept = probe(LMX_RETAIN_HOST_MEMORY="1")
    assert applied and kept > 0.9
    applied, kept = probe(default=True)  # the benchmarks' call
    assert applied and kept > 0.9
    applied, kept = probe(default=True, LMX_RETAIN_HOST_MEMORY="0")
    assert not applied and kept < 0.1


@glibc_linux
def test_a_preloaded_allocator_is_left_alone():
    # Any preload counts; the C library itself is a harmless one to name.
    applied, _ = probe(LD_PRELOAD="libc.so.6", LMX_RETAIN_HOST_MEMORY="1")
    assert not applied
