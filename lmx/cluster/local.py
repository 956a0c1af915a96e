"""`lmx launch local`: one run over N processes on this machine, the way to try multi-host on a laptop.

Each process is an ordinary ``lmx train`` given ``--coordinator 127.0.0.1:PORT --num-processes N
--process-id I``, with its share of the machine's devices: on CPU ``JAX_NUM_CPU_DEVICES`` each; on
GPUs a slice of them through ``CUDA_VISIBLE_DEVICES``. The processes run in their own session, so a
Ctrl-C in the terminal reaches the launcher only: it forwards SIGTERM to every process, and they
agree on a step, save it and exit 0 (a second Ctrl-C kills them). When one process dies, the
others exit within their ``--peer-timeout`` naming it; the launcher reports how each one ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from lmx.errors import ClusterError


def free_port() -> int:
    """A TCP port free on this machine now (for the coordinator of process 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    """The GPUs `nvidia-smi` lists (0 without it): counted without starting JAX in the launcher,
    which would claim the GPUs' memory for itself."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def cpu_devices(env: Mapping[str, str]) -> int:
    """The CPU devices one JAX process here would have: ``JAX_NUM_CPU_DEVICES``, else the XLA
    host-platform flag, else 1."""
    if env.get("JAX_NUM_CPU_DEVICES"):
        return int(env["JAX_NUM_CPU_DEVICES"])
    forced = re.search(r"--xla_force_host_platform_device_count=(\d+)", env.get("XLA_FLAGS", ""))
    return int(forced.group(1)) if forced else 1


def process_environments(
    processes: int, devices_per_process: int | None, env: Mapping[str, str], gpus: int
) -> list[dict[str, str]]:
    """Each process's environment, splitting this machine's devices among them: the GPUs when there
    are any, else the CPU devices (`cpu_devices`, or `devices_per_process` each)."""
    total = gpus or cpu_devices(env)
    per = devices_per_process or max(total // processes, 1)
    if gpus and per * processes > gpus:
        raise ClusterError(f"{processes} processes x {per} GPUs each: this machine has {gpus} GPUs")
    envs = []
    for i in range(processes):
        own = dict(env)
        if gpus:
            own["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(i * per, (i + 1) * per))
        else:
            own["JAX_NUM_CPU_DEVICES"] = str(per)
        envs.append(own)
    return envs


def launch_local(
    train_args: Sequence[str],
    processes: int,
    *,
    devices_per_process: int | None = None,
    peer_timeout_s: int = 60,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    log=print,
) -> int:
    """Runs ``lmx train <train_args>`` as one run of `processes` local processes and waits for
    them. Returns 0 when every process exited 0, else the status of the first one that did not
    (128 + the signal for one killed)."""
    if processes < 1:
        raise ClusterError(f"--processes={processes}: must be at least 1")
    envs = process_environments(processes, devices_per_process, os.environ if env is None else env, gpu_count())
    coordinator = f"127.0.0.1:{free_port()}"
    children: list[subprocess.Popen] = []
    for i, own_env in enumerate(envs):
        command = [python, "-m", "lmx.cli", "train", *train_args]
        command += ["--coordinator", coordinator, "--num-processes", str(processes), "--process-id", str(i)]
        command += ["--peer-timeout", str(peer_timeout_s)]
        children.append(subprocess.Popen(command, env=own_env, start_new_session=True))
    with _Forwarding(children):
        return _wait(children, peer_timeout_s, log)


class _Forwarding:
    """While the processes run, SIGINT/SIGTERM to the launcher become SIGTERM to each of them (a
    second SIGINT: SIGKILL)."""

    def __init__(self, children: Sequence[subprocess.Popen]) -> None:
        self.children, self.received = children, 0
        self._previous: dict[int, object] = {}

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        kill = signum == signal.SIGINT and self.received > 1
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGKILL if kill else signal.SIGTERM)

    def __enter__(self) -> _Forwarding:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _wait(children: Sequence[subprocess.Popen], peer_timeout_s: int, log) -> int:
    """Waits for every process; once one has failed, the others get their peer timeout (and some
    slack) to notice and exit before they are killed."""
    first_failure: int | None = None
    deadline = None
    while any(c.poll() is None for c in children):
        if first_failure is None:
            failed = [c for c in children if c.returncode not in (None, 0)]
            if failed:
                first_failure = _status(failed[0].returncode)
                deadline = time.monotonic() + peer_timeout_s + 30
        if deadline is not None and time.monotonic() > deadline:
            for i, c in enumerate(children):
                if c.poll() is None:
                    log(f"lmx launch: process {i} still running {peer_timeout_s + 30} s after a failure; killing it")
                    c.kill()
        time.sleep(0.1)
    for i, c in enumerate(children):
        if c.returncode < 0:
            log(f"lmx launch: process {i} was killed by {signal.Signals(-c.returncode).name}")
    if first_failure is None:
        first_failure = next((_status(c.returncode) for c in children if c.returncode), 0)
    return first_failure


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
