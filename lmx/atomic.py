"""Files written whole or not at all: a temporary file in the same directory, flushed to disk, then
renamed over the target (`os.replace` is atomic on POSIX). A process killed at any moment leaves
either the old file or the new one, never a cut-off one; a leftover ``*.partial`` is ignored.
`new_directory` does the same for a whole directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmx.errors import ConfigError


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def copy_file(source: str | Path, path: str | Path) -> None:
    """Copies `source` to `path` through a temporary file, so `path` is never half-written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def require_new_directory(target: str | Path, what: str = "write") -> Path:
    """`target`, if it does not exist yet or is an empty directory; ConfigError otherwise."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target}: exists and is not empty; {what} into a new directory")
    return target


@contextlib.contextmanager
def new_directory(target: str | Path, what: str = "write") -> Iterator[Path]:
    """A directory written whole or not at all: yields a temporary sibling of `target` to fill,
    renamed to `target` when the block ends, removed if it raises. `target` must not exist yet, or
    be empty (ConfigError otherwise: nothing already there is touched)."""
    target = require_new_directory(target, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
