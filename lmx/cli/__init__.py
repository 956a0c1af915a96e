"""The `lmx` command, one module per command group. It parses arguments and calls library functions;
errors meant for the user (ConfigError, DataError, CheckpointError) print one line and exit 2,
without a traceback."""

from __future__ import annotations

import argparse
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
    try:
        return args.func(args)
    except LmxError as e:
        print(f"lmx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmx {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> int:
    """The console script: `main` in a process whose host allocator keeps the memory XLA frees
    (`lmx.hostmem`; in-process callers such as tests call `main` and leave malloc as it is)."""
    from lmx.hostmem import retain_freed_memory

    retain_freed_memory()
    return main()


if __name__ == "__main__":
    sys.exit(run())
