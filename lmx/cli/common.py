"""Pieces several commands share."""

from __future__ import annotations

import argparse


def config_arguments(parser: argparse.ArgumentParser, help: str = "") -> None:
    """The config file argument and its ``--set KEY=VALUE`` overrides."""
    parser.add_argument("config", help=help or "config file (a Python module defining get_config(), or a config.json)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.d_model=512"
    )


def distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """How a process joins a multi-process run (`lmx.parallel.distributed`). Without these, a
    cluster that JAX detects (SLURM, Open MPI, a Kubernetes Indexed Job, Cloud TPU) is joined."""
    group = parser.add_argument_group("many processes (one run over several hosts; see docs/USER_GUIDE.md)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, on every process")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes the run has")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    group.add_argument(
        "--peer-timeout",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a process silent this long is lost: the others exit (status 3) naming it",
    )


def slug(text: str) -> str:
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9]+", "_", text.rsplit("/", 1)[-1]).strip("_")[:40]
    return f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
