"""One run over several real processes on JAX's multi-controller runtime (gloo collectives on CPU).

The reference is one process with 8 devices on a (data 2, fsdp 2, tensor 2) mesh, trained in this
test process. The same 10-step config with packing runs as 2 processes x 4 devices and 4 x 2
(`lmx launch local`), is stopped by SIGTERM to one process or loses one to SIGKILL (processes
started here, as srun would start them), and resumes on another number of processes: every way
must end at the reference's losses, evaluation and parameters to float32 tolerance.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import loop_config
from test_loop import final_params, losses

from lmx.cluster.local import free_port, process_environments
from lmx.config import load_config
from lmx.train.loop import train
from lmx.train.metrics import read_jsonl

pytestmark = pytest.mark.slow

# conftest's small run config (document packing), on the (2, 2, 2) mesh, for 10 steps.
OVERRIDES = {
    "mesh.data": 2,
    "mesh.fsdp": 2,
    "mesh.tensor": 2,
    "train.steps": 10,
    "checkpoint.every_steps": 5,
    "checkpoint.max_to_keep": 5,
    "eval.final_batches": 2,
}
SET = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
PEER_TIMEOUT = 5


@pytest.fixture(scope="module")
def config_file(loop_config_file) -> Path:
    return loop_config_file


def config(path: Path):
    return loop_config(path, **OVERRIDES)


@pytest.fixture(scope="module")
def reference(config_file, tmp_path_factory):
    """One process, 8 devices, uninterrupted (it also prepares the data the others read)."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    result = train(config(config_file), run_dir)
    assert result.status == "completed"
    return run_dir


def launch(config_file: Path, run_dir: Path, processes: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lmx.cli", "launch", "local", "--processes", str(processes)]
    command += [str(config_file), *SET, "--run-dir", str(run_dir), "--peer-timeout", str(PEER_TIMEOUT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_processes(config_file: Path, run_dir: Path, processes: int, *lmx: str) -> list[subprocess.Popen]:
    """The run's processes started one by one, as srun (or a Kubernetes Job) starts them; `lmx`: the
    command's arguments (default: train the config in the run directory)."""
    coordinator = f"127.0.0.1:{free_port()}"
    envs = process_environments(processes, 8 // processes, dict(os.environ), gpus=0)
    command = [sys.executable, "-m", "lmx.cli", *(lmx or ["train", str(config_file), *SET, "--run-dir", str(run_dir)])]
    command += ["--coordinator", coordinator, "--num-processes", str(processes), "--peer-timeout", str(PEER_TIMEOUT)]
    return [
        subprocess.Popen(
            [*command, "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, env in enumerate(envs)
    ]


def wait_until(condition, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            for p in procs:
                p.kill()
            outs = [p.communicate()[1][-2000:] for p in procs]
            pytest.fail(f"the run ended (or hung) before the test could act: {outs}")
        time.sleep(0.01)


def logged_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Losses of every step, the final evaluation and the final parameters, to float32 tolerance."""
    cfg = load_config(reference / "config.json")
    got, want = losses(run_dir), losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, 11))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
    evaluated = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    expected = json.loads((reference / "summary.json").read_text())["final_eval"]
    assert evaluated["eval/tokens"] == expected["eval/tokens"]
    np.testing.assert_allclose(evaluated["eval/loss"], expected["eval/loss"], rtol=1e-5)
    step, params = final_params(run_dir, cfg)
    ref_step, ref_params = final_params(reference, cfg)
    assert step == ref_step == 10
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_split_the_devices_and_end_at_the_one_process_run(processes, config_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    launch(config_file, run_dir, processes)
    assert_same_run(run_dir, reference)
    # One writer: a single row per logged step (and the final evaluation's), whatever the processes.
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert logged_steps(run_dir) == list(range(1, 11))
    assert len(rows) == 11 and "eval/loss" in rows[-1]
    meta = json.loads((run_dir / "checkpoints" / "10" / "meta" / "metadata").read_text())
    assert meta["processes"] == processes and meta["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    if processes == 2:  # `lmx eval` over the processes: the final evaluation's batches, the same sums
        procs = start_processes(config_file, run_dir, 2, "eval", str(run_dir), "--batches", "2")
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert outs[1][0] == ""  # one voice: process 1 prints nothing
        evaluated = json.loads((run_dir / "eval-validation-step10.json").read_text())
        expected = json.loads((reference / "summary.json").read_text())["final_eval"]
        np.testing.assert_allclose(evaluated["loss"], expected["eval/loss"], rtol=1e-5)
        assert evaluated["tokens"] == expected["eval/tokens"]


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_on_one(config_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    procs = start_processes(config_file, run_dir, 2)
    wait_until(lambda: len(logged_steps(run_dir)) >= 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # Every step compiles under Shardy: no fallback to GSPMD (XLA warns on stderr when it falls back).
    assert not any("GSPMD" in err for _, err in outs), outs
    saved = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    stopped = saved[-1]
    assert 2 <= stopped < 10 and not (run_dir / "summary.json").exists()
    assert f"a process of this run received SIGTERM: saved a checkpoint at step {stopped}" in outs[0][0]
    assert logged_steps(run_dir) == list(range(1, stopped + 1))

    result = train(config(config_file), run_dir)  # 2 -> 1 process (8 devices)
    assert result.status == "completed"
    assert_same_run(run_dir, reference)


def test_a_killed_process_stops_the_other_naming_it_and_a_relaunch_ends_equal(config_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    procs = start_processes(config_file, run_dir, 2)
    wait_until(lambda: (run_dir / "checkpoints" / "5").is_dir(), procs)
    procs[1].kill()
    killed = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    waited = time.monotonic() - killed
    assert procs[0].returncode == 3, err
    assert "[process 0] lmx train: error: process 1 stopped (no heartbeat)" in err
    assert waited < PEER_TIMEOUT + 10
    procs[1].communicate()

    result = train(config(config_file), run_dir)  # relaunched, here on one process (2 -> 1)
    assert result.status == "completed"
    assert_same_run(run_dir, reference)


def test_a_one_process_checkpoint_resumes_on_two_processes(config_file, reference, tmp_path):
    """1 -> 2: the reference run as it was after step 5 (its later checkpoint and summary taken
    away), resumed by two processes."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "10")
    (run_dir / "summary.json").unlink()
    launch(config_file, run_dir, 2)
    assert_same_run(run_dir, reference)
