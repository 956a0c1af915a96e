"""One lmx run over several SLURM nodes: an sbatch script whose single ``srun`` step starts every process.

`write_train_script` lays out the run directory::

    <run dir>/slurm/train.sbatch   the script (submit it with ``sbatch``, or `submit`)
    <run dir>/slurm/<job id>.out   the job's console output, appended to across requeues
    <run dir>/...                  what ``lmx train`` writes (checkpoints, metrics.jsonl, summary.json)

Each process is one SLURM task (one per GPU, or one per node); ``lmx train`` joins the run through
JAX's SLURM detection, which reads the step's variables (SLURM_PROCID, SLURM_LOCALID, ...). With
several tasks on a node JAX gives task SLURM_LOCALID the node's GPU of that number, so every task
must see all the node's GPUs: do not add ``--gpus-per-task`` or ``--gpu-bind`` (they renumber them).
The run directory and the config's data directory must be on storage that every node sees.

Stopping and going on. The job asks SLURM for a SIGTERM to its step `grace_s` seconds before the
time limit (``--signal=TERM@...``). On SIGTERM to any process all of them agree on a step, save a
checkpoint and exit 0; the script then finds no ``summary.json`` and puts the job back in the queue
(``scontrol requeue``): it starts again under the same job id and ``lmx train`` resumes from that
checkpoint. So a run longer than the time limit goes on job after job until its summary.json
exists. ``scancel --signal=TERM <job>`` does the same on demand (save, requeue); plain ``scancel``
ends the job for good. ``--requeue`` also lets SLURM requeue the job itself after a node failure or
a preemption. A process that fails (or loses a peer: exit status 3) ends the step at once
(``--kill-on-bad-exit``) and the job with that status: a failure is not retried in a loop.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lmx import atomic
from lmx.errors import ClusterError, ConfigError

# srun's --wait: how long the other tasks may go on after the first one has ended before srun ends
# them. A run's processes end within seconds of each other (they leave through a barrier of at most
# 120 s, then process 0 waits at most 120 s more, `lmx.parallel.distributed.leave`), so this only ends a process
# stuck after the others finished, which would otherwise hold the nodes until the time limit.
EXIT_WAIT_S = 300


def srun_line(nodes: int, tasks_per_node: int) -> str:
    """The ``srun`` prefix of every multi-process lmx command: `tasks_per_node` processes on each of
    `nodes` nodes. ``--kill-on-bad-exit=1``: a process exiting non-zero ends the whole step at once
    (the run cannot go on without it). ``--wait``: a step whose other processes hang after one ended
    is ended too (`EXIT_WAIT_S`), instead of holding the nodes until the time limit."""
    if nodes < 1 or tasks_per_node < 1:
        raise ConfigError(f"nodes={nodes}, tasks_per_node={tasks_per_node}: each must be at least 1")
    return f"srun --nodes={nodes} --ntasks-per-node={tasks_per_node} --kill-on-bad-exit=1 --wait={EXIT_WAIT_S}"


# With one process per node, JAX's SLURM detection would give the process only GPU SLURM_LOCALID
# (0); JAX_LOCAL_DEVICE_IDS (read by jax.distributed.initialize) hands it all the node's GPUs.
ALL_NODE_GPUS = (
    'if [[ "${SLURM_GPUS_ON_NODE:-0}" -gt 1 ]]; then '
    'export JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))"; fi'
)


def sbatch_directive(option: str) -> str:
    """``#SBATCH --x=y`` from ``--x=y`` or ``x=y``."""
    return f"#SBATCH {option if option.startswith('--') else '--' + option}"


def write_train_script(
    train_args: Sequence[str],
    run_dir: str | Path,
    *,
    nodes: int,
    gpus_per_node: int,
    per: Literal["gpu", "node"] = "gpu",
    directives: Sequence[str] = (),
    python: str = sys.executable,
    grace_s: int = 120,
) -> Path:
    """Writes ``<run dir>/slurm/train.sbatch``, which runs ``lmx train <train_args> --run-dir <run
    dir>`` as one run of `nodes` x (`gpus_per_node` or 1, by `per`) processes, and returns its path;
    starts nothing. `gpus_per_node` 0 means CPU nodes (one process each). `directives` are extra
    ``#SBATCH`` options (``--time=4:00:00`` or ``time=4:00:00``). `grace_s`: how long before the
    time limit the processes get SIGTERM; it must cover a step, a checkpoint save and the exit."""
    if "--run-dir" in train_args or any(a.startswith("--run-dir=") for a in train_args):
        raise ConfigError("train_args: --run-dir is set from run_dir; leave it out of the lmx train arguments")
    if per not in ("gpu", "node"):
        raise ConfigError(f"per={per!r}: expected 'gpu' (one process per GPU) or 'node' (one per node)")
    if gpus_per_node < 0:
        raise ConfigError(f"gpus_per_node={gpus_per_node}: must be at least 0 (0: CPU nodes)")
    if not 0 <= grace_s <= 65535:  # sbatch's limit on --signal's time
        raise ConfigError(f"grace_s={grace_s}: must be in [0, 65535] seconds")
    tasks_per_node = gpus_per_node if per == "gpu" and gpus_per_node > 0 else 1
    run_dir = Path(run_dir).absolute()
    script_dir = run_dir / "slurm"
    script_dir.mkdir(parents=True, exist_ok=True)  # SLURM does not create the --output directory
    path = script_dir / "train.sbatch"
    q = shlex.quote
    command = [python, "-m", "lmx.cli", "train", *train_args, "--run-dir", str(run_dir)]
    processes = f"{tasks_per_node} process{'es' if tasks_per_node > 1 else ''} per node"
    lines = [
        "#!/bin/bash",
        f"# lmx training run {run_dir.name}: {nodes} node{'s' if nodes > 1 else ''} x {processes}, one run.",
        f"# Submit with: sbatch {q(str(path))}",
        "# Before the time limit the processes save a checkpoint and exit; the job then requeues itself",
        f"# and resumes from it, until {q(str(run_dir / 'summary.json'))} exists.",
        "# Every process sees all its node's GPUs (JAX takes number SLURM_LOCALID): no --gpus-per-task.",
        f"#SBATCH --job-name={q('lmx-' + run_dir.name)}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks-per-node={tasks_per_node}",
        *([f"#SBATCH --gpus-per-node={gpus_per_node}"] if gpus_per_node else []),
        f"#SBATCH --output={q(str(script_dir / '%j.out'))}",
        "#SBATCH --open-mode=append",  # a requeued job keeps its id: one log, continued
        "#SBATCH --requeue",
        f"#SBATCH --signal=TERM@{grace_s}",
        *(sbatch_directive(d) for d in directives),
        "set -euo pipefail",
        f"cd {q(str(Path.cwd()))}",  # relative config and data paths, as when the script was written
        "export PYTHONUNBUFFERED=1",  # output reaches the log as it is printed
        *([ALL_NODE_GPUS] if tasks_per_node == 1 and gpus_per_node > 1 else []),
        f"run_dir={q(str(run_dir))}",
        "",
        "# The run: one srun step starts every process. `|| status=$?` keeps its exit status (set -e",
        "# would end the script here) for the choice below.",
        "status=0",
        f"{srun_line(nodes, tasks_per_node)} {shlex.join(command)} || status=$?",
        "",
        'if [[ -f "$run_dir/summary.json" ]]; then',
        '  echo "lmx: the run is complete: $run_dir/summary.json"',
        "  exit 0",
        "fi",
        "if [[ $status == 0 ]]; then",
        "  # Stopped early (SIGTERM before the time limit, scancel --signal=TERM) with a checkpoint saved.",
        '  job="${SLURM_JOB_ID:?not inside a SLURM job: submit this script with sbatch}"',
        '  echo "lmx: stopped with a checkpoint saved; requeueing job $job to resume from it"',
        '  scontrol requeue "$job"',
        "  exit 0",
        "fi",
        'echo "lmx: the run failed (exit status $status); fix it and submit this script again to resume" >&2',
        'exit "$status"',
        "",
    ]
    atomic.write_text(path, "\n".join(lines))
    path.chmod(0o755)
    return path


def submit(script: Path) -> str:
    """Submits `script` with ``sbatch --parsable``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise ClusterError(f"cannot submit {script}: sbatch is not installed here (submit from a SLURM login node)")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
        raise ClusterError(f"sbatch {script} failed (exit code {done.returncode}): {why}")
    # --parsable prints "<job id>" or "<job id>;<cluster>".
    job_id = done.stdout.strip().split(";")[0]
    if not job_id:
        raise ClusterError(f"sbatch {script} printed no job id")
    return job_id
