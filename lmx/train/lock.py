"""One training process per run directory: an exclusive `flock` on ``RUN/lock``.

The kernel releases a flock when its holder exits, however it exits (a SIGKILL included), so a lock
left by a dead process is simply free: the next launch takes it over without anyone deleting files.
The file's content (PID, host, start time) is only there to name the holder in the error a second
process gets. On network filesystems flock is as good as the filesystem's lock support (NFSv4 and
Lustre with flock enabled honour it). A multi-process run takes one lock, in process 0.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from lmx.errors import ConfigError


class RunLock:
    """Held from `acquire` until `release` (or the process's end)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(
                f"{self.path.parent}: another lmx process is training in this run directory ({holder}); "
                "wait for it to finish or stop it, or use another --run-dir"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the file stays (removing it would race with a new holder)
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        holder = {}
    if not holder:
        return "holder unknown"
    return f"PID {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"
