"""Pieces several commands share."""

from __future__ import annotations

import argparse


def config_arguments(parser: argparse.ArgumentParser, help: str = "") -> None:
    """The config file argument and its ``--set KEY=VALUE`` overrides."""
    parser.add_argument("config", help=help or "config file (a Python module defining get_config(), or a config.json)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. model.d_model=512"
    )


def slug(text: str) -> str:
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9]+", "_", text.rsplit("/", 1)[-1]).strip("_")[:40]
    return f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
