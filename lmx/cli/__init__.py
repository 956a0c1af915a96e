"""The `lmx` command, one module per command group. It parses arguments and calls library functions;
errors meant for the user (ConfigError, DataError, CheckpointError) print one line and exit 2,
without a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from lmx.cli import data, evaluate, generate, scaling, train
from lmx.errors import LmxError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, evaluate, generate, scaling, data):  # the order of `lmx --help`
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_logs()
    try:
        return args.func(args)
    except LmxError as e:
        print(f"lmx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmx {args.command}: interrupted", file=sys.stderr)
        return 130


def quiet_library_logs() -> None:
    """Orbax and Grain log their failures with tracebacks through absl (and Orbax's unfinished
    writes through asyncio); lmx reports each failure itself as one line, so their logs are shown
    only with ``LMX_LIBRARY_LOGS=1``. lmx itself uses neither logger."""
    if os.environ.get("LMX_LIBRARY_LOGS") != "1":
        for name in ("absl", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run() -> int:
    """The console script: `main` in a process whose host allocator keeps the memory XLA frees
    (`lmx.hostmem`; in-process callers such as tests call `main` and leave malloc as it is)."""
    from lmx.hostmem import retain_freed_memory

    retain_freed_memory()
    if os.environ.get("LMX_LIBRARY_LOGS") != "1":
        # Only in the console script: in-process callers keep their own hook.
        sys.unraisablehook = _quiet_closed_loop_callbacks
    return main()


def _quiet_closed_loop_callbacks(unraisable: sys.UnraisableHookArgs) -> None:
    """A failed TensorStore write (a full disk) leaves callbacks that raise "Event loop is closed"
    in its threads, after the save's failure is already reported as one line: those are dropped;
    anything else goes to Python's default hook."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and "Event loop is closed" in str(error):
        return
    sys.__unraisablehook__(unraisable)
