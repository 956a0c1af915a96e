"""The `lmx` command, one module per command group. It parses arguments and calls library functions;
errors meant for the user (ConfigError, DataError, CheckpointError) print one line and exit 2,
without a traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lmx.cli import coord_check, data, evaluate, generate, hf, launch, plan, scaling, train
from lmx.errors import LmxError

if TYPE_CHECKING:  # imported when a command joins a run: it starts JAX
    from lmx.parallel.distributed import PeerWatch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmx", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, launch, evaluate, generate, hf, scaling, coord_check, plan, data):  # the order of `lmx --help`
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_library_logs()
    watch, status = None, 1
    try:
        watch = _join_run(args)
        status = args.func(args)
        return status
    except LmxError as e:
        status = 2
        _report(args.command, str(e), watch)
        return status
    except KeyboardInterrupt:
        status = 130
        _report(args.command, "interrupted", watch)
        return status
    except Exception as e:
        if watch:
            import jax

            if isinstance(e, jax.errors.JaxRuntimeError):  # a lost peer breaks collectives first:
                watch.await_verdict()  # let the watch name it (and exit) if that is what happened
            watch.report_failure(f"{type(e).__name__}: {e}")  # a fault of lmx or the runtime
        raise
    finally:
        if watch:
            watch.finish(ok=status == 0)


def _join_run(args: argparse.Namespace) -> PeerWatch | None:
    """Joins a multi-process run when the command takes part in one (`lmx.parallel.distributed`),
    before anything asks JAX about devices; returns its `PeerWatch`, or None for a run of one
    process. Only process 0 speaks on stdout; errors, on stderr, are each process's own."""
    if not hasattr(args, "coordinator"):
        return None
    from lmx.parallel import distributed

    cfg = distributed.DistributedConfig(args.coordinator, args.num_processes, args.process_id, args.peer_timeout)
    if not distributed.initialize(cfg, stop_agreement=args.command == "train"):
        return None
    watch = distributed.PeerWatch(args.command, cfg.peer_timeout_s).start()
    if not watch.is_lead:  # file descriptor 1 itself: the runtime's C++ (gloo) prints there too
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    return watch


def _report(command: str, message: str, watch: PeerWatch | None) -> None:
    """Prints the error line; in a multi-process run prefixed with the process, and told to the
    other processes, whose watch then stops them naming this one."""
    prefix = watch.prefix if watch else ""
    print(f"{prefix}lmx {command}: error: {message}", file=sys.stderr, flush=True)
    if watch:
        watch.report_failure(message)


def quiet_library_logs() -> None:
    """Orbax and Grain log their failures with tracebacks through absl (and Orbax's unfinished
    writes through asyncio); lmx reports each failure itself as one line, so their logs are shown
    only with ``LMX_LIBRARY_LOGS=1``. lmx itself uses neither logger."""
    if os.environ.get("LMX_LIBRARY_LOGS") != "1":
        for name in ("absl", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run() -> int:
    """The console script: `main`, with the host allocator keeping the memory XLA frees when
    ``LMX_RETAIN_HOST_MEMORY=1`` asks for it (`lmx.hostmem`)."""
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
