"""Launching a sweep: each run is ``lmx train`` on a resolved JSON config, in its own process.

`write_plan` lays out the sweep directory::

    <sweep dir>/configs/<run>.json   the resolved config of every run
    <sweep dir>/commands.txt         one shell command per run, in sweep order
    <sweep dir>/<run>/               each run's directory (checkpoints, metrics.jsonl, summary.json)
    <sweep dir>/logs/<run>.log       each run's console output (local launcher)

`launch_local` runs the commands one after another. A run whose ``summary.json`` exists is done and
skipped; a ``summary.json`` that cannot be read (cut off by a killed process) is moved aside to
``summary.json.unreadable`` and the run goes again. An interrupted run resumes from its own
checkpoints (that is what ``lmx train`` does in a run directory that has them); a failed run is
reported and the sweep goes on. SIGINT/SIGTERM stop the sweep after the current run has saved a
checkpoint, so a relaunch continues where it stopped.

`write_slurm` writes an sbatch script with one array task per run that runs the same commands
(skipping finished runs the same way; through ``srun`` when each run has several processes), and
starts nothing. Every file written here is written whole or not at all (`lmx.atomic`), so a killed
launcher leaves no cut-off config, command list or script.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lmx import atomic
from lmx.cluster.slurm import ALL_NODE_GPUS, sbatch_directive, srun_line
from lmx.config import Config, diff_keys, flatten_keys
from lmx.errors import DataError
from lmx.scaling.points import read_json_object
from lmx.scaling.sweep import Sweep, SweepRun
from lmx.train.signals import StopRequest


def run_command(run: SweepRun, sweep_dir: Path, python: str = sys.executable) -> list[str]:
    return [
        python,
        "-m",
        "lmx.cli",
        "train",
        str(sweep_dir / "configs" / f"{run.name}.json"),
        "--run-dir",
        str(sweep_dir / run.name),
    ]


def write_plan(runs: Sequence[SweepRun], sweep_dir: str | Path, python: str = sys.executable) -> list[list[str]]:
    """Writes every run's resolved config and ``commands.txt``; returns the commands."""
    sweep_dir = Path(sweep_dir).absolute()
    (sweep_dir / "configs").mkdir(parents=True, exist_ok=True)
    commands = []
    for run in runs:
        atomic.write_text(sweep_dir / "configs" / f"{run.name}.json", run.config.to_json() + "\n")
        commands.append(run_command(run, sweep_dir, python))
    atomic.write_text(sweep_dir / "commands.txt", "".join(shlex.join(c) + "\n" for c in commands))
    return commands


def summary_problem(run_dir: Path) -> str | None:
    """Why the run's summary.json cannot be read (cut off, not JSON: the message names the file
    and line); None when it reads as a JSON object or does not exist."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        read_json_object(path)
    except DataError as e:
        return str(e)
    return None


def is_finished(run_dir: Path) -> bool:
    """The run wrote its summary.json, whole."""
    return (run_dir / "summary.json").is_file() and summary_problem(run_dir) is None


UNREADABLE_SUFFIX = ".unreadable"  # summary.json -> summary.json.unreadable, set aside


def set_aside_summary(run_dir: Path) -> Path:
    """Moves an unreadable summary.json out of the way (kept, renamed), so that ``lmx train`` takes
    the run for unfinished: it resumes from its last checkpoint and writes the summary again."""
    path = run_dir / "summary.json"
    aside = path.with_name(path.name + UNREADABLE_SUFFIX)
    path.replace(aside)
    return aside


def changed_keys(run_dir: Path, config: Config) -> list[str]:
    """Dotted config keys whose values differ between a finished run and the sweep's config for it
    now (a sweep file edited after the run finished); [] when they match or nothing was saved. A
    config.json that cannot be read is a DataError naming the file."""
    path = run_dir / "config.json"
    if not path.is_file():
        return []
    return diff_keys(flatten_keys(read_json_object(path)), flatten_keys(config.to_dict()))


@dataclasses.dataclass
class LaunchReport:
    finished: list[str] = dataclasses.field(default_factory=list)  # ran to completion in this launch
    skipped: list[str] = dataclasses.field(default_factory=list)  # already finished before it
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # run -> why (exit code, log)
    interrupted: str | None = None  # the run a signal stopped (resumable)
    not_started: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.interrupted is None and not self.not_started


def launch_local(
    runs: Sequence[SweepRun],
    sweep_dir: str | Path,
    *,
    python: str = sys.executable,
    log: Callable[[str], None] = print,
) -> LaunchReport:
    """Runs the sweep's runs one after another in subprocesses (see the module docstring)."""
    sweep_dir = Path(sweep_dir).absolute()
    commands = write_plan(runs, sweep_dir, python)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    report = LaunchReport()
    with StopRequest() as stop:
        for i, (run, command) in enumerate(zip(runs, commands, strict=True)):
            prefix = f"[{i + 1}/{len(runs)}] {run.name}"
            run_dir = sweep_dir / run.name
            if stop.requested:
                report.not_started.append(run.name)
                continue
            broken = summary_problem(run_dir)
            if broken:
                try:
                    aside = set_aside_summary(run_dir)
                except OSError as e:
                    report.failed[run.name] = f"{broken}; cannot move it aside ({e.strerror or e})"
                    log(f"{prefix}: FAILED: {report.failed[run.name]}; the sweep goes on")
                    continue
                log(f"{prefix}: {broken}; moved it to {aside.name}, running the run again")
            if is_finished(run_dir):
                report.skipped.append(run.name)
                try:
                    changed = changed_keys(run_dir, run.config)
                    note = f" (WARNING: it ran with other values of {', '.join(changed)})" if changed else ""
                except DataError as e:
                    note = f" (WARNING: cannot compare its config: {e})"
                log(f"{prefix}: finished before, skipped{note}")
                continue
            resuming = any((run_dir / "checkpoints").glob("[0-9]*"))
            log_path = sweep_dir / "logs" / f"{run.name}.log"
            action = "resuming" if resuming else "starting"
            log(f"{prefix}: {action} ({run.config.train.steps:,} steps), log in {log_path}")
            start = time.perf_counter()
            rc = _run_subprocess(command, log_path, stop)
            seconds = time.perf_counter() - start
            if rc == 0 and is_finished(run_dir):
                report.finished.append(run.name)
                log(f"{prefix}: finished in {seconds:.0f} s")
            elif stop.requested:
                report.interrupted = run.name
                log(f"{prefix}: interrupted by {stop.signal_name} after {seconds:.0f} s; relaunch to resume it")
            else:
                why = f"exit code {rc}" if rc else "exited without writing summary.json"
                report.failed[run.name] = f"{why}: {_last_line(log_path)} (log: {log_path})"
                log(f"{prefix}: FAILED ({why}) after {seconds:.0f} s; the sweep goes on")
    return report


def _run_subprocess(command: list[str], log_path: Path, stop: StopRequest) -> int:
    """Runs `command` with output appended to `log_path`. A stop request is passed on to the
    child as one SIGTERM (it saves a checkpoint and exits); the child runs in its own session so
    a terminal's Ctrl-C reaches it only through here, once."""
    with open(log_path, "a") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        forwarded = False
        try:
            while proc.poll() is None:
                if stop.requested and not forwarded:
                    proc.send_signal(signal.SIGTERM)
                    forwarded = True
                time.sleep(0.1)
        except BaseException:  # a second Ctrl-C: the child must not outlive the launcher
            proc.kill()
            proc.wait()
            raise
        return proc.returncode


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def format_report(report: LaunchReport) -> str:
    lines = [
        f"{len(report.finished)} finished, {len(report.skipped)} skipped (done before), {len(report.failed)} failed"
        + (f", {report.interrupted} interrupted" if report.interrupted else "")
        + (f", {len(report.not_started)} not started" if report.not_started else "")
    ]
    if report.failed:
        lines.append("failed runs:")
        lines.extend(f"  {name}: {why}" for name, why in report.failed.items())
    return "\n".join(lines)


def write_slurm(
    sweep: Sweep,
    runs: Sequence[SweepRun],
    sweep_dir: str | Path,
    *,
    python: str = sys.executable,
    directives: Sequence[str] = (),
    max_parallel: int = 0,
    nodes: int = 1,
    tasks_per_node: int = 1,
) -> Path:
    """Writes ``<sweep dir>/sweep.sbatch``: a job array with one task per run (task i runs line
    i + 1 of commands.txt, also embedded in the script), skipping runs already finished. Submit it
    with ``sbatch``; this starts nothing. `directives` are extra ``#SBATCH`` options, e.g.
    ``--gres=gpu:1`` or ``--time=4:00:00``; `max_parallel` > 0 caps concurrently running tasks.
    With `nodes` > 1 or `tasks_per_node` > 1 every run is one multi-process run of that many
    processes, started through ``srun`` (`lmx.cluster.slurm.srun_line`; one process per GPU means
    `tasks_per_node` = the GPUs each node has, asked for in `directives`, e.g. ``--gpus-per-node=8``)."""
    srun = srun_line(nodes, tasks_per_node)  # (checks the counts)
    multiprocess = nodes > 1 or tasks_per_node > 1
    srun = srun + " " if multiprocess else ""
    sweep_dir = Path(sweep_dir).absolute()
    commands = write_plan(runs, sweep_dir, python)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    array = f"0-{len(runs) - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = [
        "#!/bin/bash",
        f"# lmx sweep {sweep.name}: {len(runs)} runs, one array task each.",
        f"# Submit with: sbatch {sweep_dir / 'sweep.sbatch'}",
        f"#SBATCH --job-name={sweep.name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={sweep_dir / 'logs'}/%x-%a.out",
        *([f"#SBATCH --nodes={nodes}", f"#SBATCH --ntasks-per-node={tasks_per_node}"] if multiprocess else []),
        *(sbatch_directive(d) for d in directives),
        "set -euo pipefail",
        *([ALL_NODE_GPUS] if multiprocess and tasks_per_node == 1 else []),
        "",
        "RUNS=(",
        *(f"  {shlex.quote(run.name)}" for run in runs),
        ")",
        "COMMANDS=(",
        *(f"  {shlex.quote(shlex.join(c))}" for c in commands),
        ")",
        "",
        'task="${SLURM_ARRAY_TASK_ID:?not inside a slurm array job}"',
        'run="${RUNS[$task]}"',
        f'summary={shlex.quote(str(sweep_dir))}/"$run"/summary.json',
        'if [[ -f "$summary" ]]; then',
        # Finished if the summary reads as a JSON object; one cut off by a killed task (exit 3) is
        # moved aside and the run goes again, as the local launcher does.
        "  status=0",
        f'  {shlex.quote(python)} -c {shlex.quote(_CHECK_SUMMARY)} "$summary" >/dev/null || status=$?',
        '  if [[ $status == 0 ]]; then echo "$run: finished before, skipped"; exit 0; fi',
        '  if [[ $status != 3 ]]; then echo "$run: cannot check $summary (exit code $status)" >&2; exit "$status"; fi',
        f'  mv -f "$summary" "$summary"{UNREADABLE_SUFFIX}',
        f'  echo "$run: $summary cannot be read (cut off?); moved it to $summary{UNREADABLE_SUFFIX}, running again"',
        "fi",
        f'echo "$run: {srun}${{COMMANDS[$task]}}"',
        # lmx train resumes from the run's checkpoints, so a requeued task continues.
        f'eval "{srun}${{COMMANDS[$task]}}"',
        "",
    ]
    path = sweep_dir / "sweep.sbatch"
    atomic.write_text(path, "\n".join(lines))
    path.chmod(0o755)
    return path


# Exit status 0: the summary.json named by argv[1] is a JSON object; 3: it is not (cut off, not JSON).
_CHECK_SUMMARY = """import json, sys
try:
    ok = isinstance(json.load(open(sys.argv[1], encoding="utf-8")), dict)
except ValueError:
    ok = False
sys.exit(0 if ok else 3)"""
