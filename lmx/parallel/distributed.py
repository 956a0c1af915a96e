"""Joining a multi-process run on JAX's multi-controller runtime (`jax.distributed`).

One run spread over many processes (a SLURM job, a Kubernetes Indexed Job, `lmx launch local`):
every process runs the same `lmx` command, drives its local devices, and sees the same global mesh.
`initialize` is called once, by the CLI, before anything asks JAX about devices. It joins a run when
the command names one (``--coordinator HOST:PORT --num-processes N --process-id I``) or a cluster
JAX can read is detected; otherwise it does nothing and the process is the whole run.

Faults. JAX's runtime, left alone, aborts every survivor with a C++ stack trace when one process
dies. lmx turns on the runtime's recoverable mode instead and runs a `PeerWatch` thread that asks
the coordination service which processes are still alive (heartbeats, ``--peer-timeout`` seconds)
and whether one of them reported an error; when one is lost it prints one line naming it and exits
with `PEER_LOST_EXIT`. The one case it cannot cover: when process 0 dies, the coordination service
dies with it and the runtime stops the others at once with its own message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Mapping

import jax
from jax._src import distributed as jax_distributed  # private: the runtime client's liveness queries

from lmx.errors import ClusterError, ConfigError

PEER_LOST_EXIT = 3  # the exit status of a process that stops because another one was lost
_FAILURE_KEY = "lmx/failed/"  # + process index: the one-line error a process reports before exiting
_EXIT_BARRIER = "lmx/exit"


def detected_cluster(env: Mapping[str, str] | None = None) -> str | None:
    """The cluster that launched this process as one of several, by the variables JAX's own cluster
    detection reads (``jax._src.clusters``), or None. One task (``srun -n 1``, a batch script run
    directly, a Job of one pod) is not a multi-process run."""
    env = os.environ if env is None else env

    def count(name: str) -> int:
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and count("SLURM_NTASKS") > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "Open MPI"
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        return "Kubernetes"  # an Indexed Job (or JobSet); its size is read from the Job by JAX
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return "Cloud TPU"
    return None


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a run. All of coordinator/num_processes/process_id, or none of them
    (then a detected cluster supplies them, or the process runs alone)."""

    coordinator: str | None = None  # HOST:PORT of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    peer_timeout_s: int = 60  # a process without a heartbeat for this long is lost
    connect_timeout_s: int = 300  # how long to wait for every process to join

    def __post_init__(self) -> None:
        given = {
            "--coordinator": self.coordinator,
            "--num-processes": self.num_processes,
            "--process-id": self.process_id,
        }
        missing = [k for k, v in given.items() if v is None]
        if 0 < len(missing) < 3:
            raise ConfigError(
                f"{', '.join(missing)} missing: --coordinator, --num-processes and --process-id go together"
            )
        if self.explicit:
            if ":" not in self.coordinator:
                raise ConfigError(f"--coordinator={self.coordinator!r}: expected HOST:PORT")
            if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
                raise ConfigError(
                    f"--process-id={self.process_id}, --num-processes={self.num_processes}: "
                    "the id must be in [0, num_processes)"
                )
        if self.peer_timeout_s < 1:
            raise ConfigError(f"--peer-timeout={self.peer_timeout_s}: must be at least 1 second")

    @property
    def explicit(self) -> bool:
        return self.coordinator is not None


def initialize(cfg: DistributedConfig, stop_agreement: bool = True) -> bool:
    """Joins the run `cfg` (or the detected cluster) describes; False (and nothing done) when this
    process runs alone. Call once, before anything queries devices. Raises ClusterError when the
    run cannot be joined. `stop_agreement`: the runtime takes SIGTERM to agree on a step to stop at
    (training); without it SIGTERM ends the process, as it does a one-process command."""
    cluster = None if cfg.explicit else detected_cluster()
    if cluster is None and (not cfg.explicit or cfg.num_processes == 1):
        return False
    # Recoverable: a lost process does not abort the others inside the runtime; `PeerWatch` reports it.
    jax.config.update("jax_enable_recoverability", True)
    jax.config.update("jax_enable_preemption_service", stop_agreement)
    where = f"{cfg.coordinator} as process {cfg.process_id} of {cfg.num_processes}" if cfg.explicit else cluster
    try:
        jax.distributed.initialize(
            coordinator_address=cfg.coordinator,
            num_processes=cfg.num_processes,
            process_id=cfg.process_id,
            heartbeat_timeout_seconds=cfg.peer_timeout_s,
            initialization_timeout=cfg.connect_timeout_s,
        )
    except Exception as e:  # the runtime raises RuntimeError/XlaRuntimeError with RPC details
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"could not join the run ({where}) within {cfg.connect_timeout_s} s: {first}") from None
    return True


def barrier(name: str, timeout_s: int = 24 * 3600) -> None:
    """Waits until every process of the run reaches `name`: the coordination service's barrier, not
    a device collective, so it may wait long (process 0 tokenizing a corpus). No-op on one process."""
    client = _client()
    if client is not None and jax.process_count() > 1:
        client.wait_at_barrier(name, timeout_s * 1000)


class PeerWatch:
    """A daemon thread that ends this process when another process of the run is lost, and this
    process's side of leaving the run (`report_failure`, `finish`).

    A process is lost when its heartbeats stop (the coordination service's verdict, after
    ``peer_timeout_s``) or when it reports an error. The main thread may be blocked in a collective
    that will never finish, so the watch prints its line and exits with `os._exit`. Started by the
    CLI right after `initialize`.
    """

    def __init__(self, command: str, peer_timeout_s: int) -> None:
        self.command = command
        self.peer_timeout_s = peer_timeout_s
        self.interval = min(1.0, peer_timeout_s / 4)
        self.index, self.count = jax.process_index(), jax.process_count()
        self.is_lead = self.index == 0
        self.prefix = f"[process {self.index}] "
        self._client = _client()
        self._stopped = threading.Event()

    def start(self) -> PeerWatch:
        threading.Thread(target=self._watch, name="lmx-peer-watch", daemon=True).start()
        return self

    def _watch(self) -> None:
        everyone = list(range(self.count))
        while not self._stopped.wait(self.interval):
            try:
                live = self._client.get_live_nodes(everyone)
                failures = self._reported_failures()
            except Exception as e:  # the coordination service itself is gone (process 0 died)
                self._exit(f"lost the coordination service on process 0 ({_first_line(e)})")
                return
            if failures:
                i, message = min(failures.items())
                self._exit(f"process {i} failed: {message}")
            lost = sorted(set(everyone) - set(live))
            if lost:
                names = ", ".join(str(i) for i in lost)
                self._exit(f"process {names} stopped (no heartbeat); the others cannot go on without it")

    def _reported_failures(self) -> dict[int, str]:
        """The errors other processes reported, by process index (one round trip)."""
        found = {}
        for key, message in self._client.key_value_dir_get(_FAILURE_KEY):
            index = key.rsplit("/", 1)[-1]
            if index.isdigit() and int(index) != self.index:
                found[int(index)] = message
        return found

    def _exit(self, reason: str) -> None:
        if self._stopped.is_set():
            return
        print(
            f"{self.prefix}lmx {self.command}: error: {reason}. Relaunch the same command to resume from the "
            "last complete checkpoint",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        self._linger()
        os._exit(PEER_LOST_EXIT)

    def await_verdict(self) -> None:
        """Called when this process failed unexpectedly (a collective that broke off, "Connection
        reset by peer"): most often because a peer died. Waits out the peer timeout (and a little),
        in which the watch names the lost process and exits; returns if no peer is lost."""
        time.sleep(self.peer_timeout_s + 5)

    def report_failure(self, message: str) -> None:
        """Tells the other processes that this one is exiting with an error, so their watch stops
        them at once with this message instead of waiting out the heartbeat timeout."""
        # If the service is already gone, the others learn of this exit from its heartbeats.
        with contextlib.suppress(Exception):
            self._client.key_value_set(f"{_FAILURE_KEY}{self.index}", message[:500])

    def finish(self, ok: bool) -> None:
        """Stops watching and leaves the run (`leave`)."""
        self._stopped.set()
        leave(ok)

    def _linger(self) -> None:
        if self.is_lead:
            _linger_as_lead(self._client, self.count, 3.0)


def leave(ok: bool = True, timeout_s: int = 120) -> None:
    """Leaves a multi-process run; every process that called `initialize` calls this at its end.
    After success the processes meet at a barrier, and process 0, which hosts the coordination
    service, waits for the others to disconnect: a process still using the service when it goes
    is aborted by the runtime. After a failure this process leaves at once (it has told the others).
    """
    client = _client()
    if client is None:
        return
    count = jax.process_count()
    if ok:
        with contextlib.suppress(Exception):  # a peer is gone: its own watch (or ours) has said so
            barrier(_EXIT_BARRIER, timeout_s)
    if jax.process_index() == 0:
        _linger_as_lead(client, count, timeout_s if ok else 3.0)
    with contextlib.suppress(Exception):
        jax.distributed.shutdown()


def _linger_as_lead(client, count: int, seconds: float) -> None:
    """Waits (a bounded time) until process 0 is the last one connected."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if len(client.get_live_nodes(list(range(count)))) <= 1:
                return
        except Exception:
            return
        time.sleep(0.2)


def _client():  # the runtime's client (JAX exposes no public accessor for its liveness queries)
    return jax_distributed.global_state.client


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
