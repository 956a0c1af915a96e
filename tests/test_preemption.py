"""`lmx train` as a process: SIGKILL and SIGTERM mid-run, then the same command again.

The resumed runs must end bit-identical to an uninterrupted run: same parameters at step 30, same
logged losses for every step (XLA on CPU is deterministic for a fixed program and mesh).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import loop_config
from test_loop import assert_trees_equal, final_params, losses

from lmx.train.metrics import read_jsonl

pytestmark = pytest.mark.slow


# Bigger batches than the in-process tests: slow enough steps that the test can act between them.
SLOWER = ["--set", "train.batch_size=64"]


def lmx_train(config: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmx.cli", "train", str(config), "--run-dir", str(run_dir), *SLOWER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Polls until `condition()`; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.002)
    return True


def last_logged_step(run_dir: Path) -> int:
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    return max(steps, default=0)


@pytest.fixture(scope="module")
def reference(loop_config_file, tmp_path_factory):
    """The same command, never interrupted."""
    run_dir = tmp_path_factory.mktemp("reference")
    finish(lmx_train(loop_config_file, run_dir))
    return run_dir


def kill_between_20_and_30(config: Path, run_dir: Path) -> bool:
    """Starts a run and SIGKILLs it after a random step in 21-27, once step 20's checkpoint is
    complete (Orbax renames its temporary directory to "20" then). False if the run got too far."""
    proc = lmx_train(config, run_dir)
    kill_after = random.randint(21, 27)
    ready = wait_for(
        lambda: (run_dir / "checkpoints" / "20").is_dir() and last_logged_step(run_dir) >= kill_after, proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return ready and proc.returncode == -signal.SIGKILL and not (run_dir / "checkpoints" / "30").exists()


def test_sigkill_then_rerun_resumes_bit_exactly(loop_config_file, reference, tmp_path):
    for attempt in range(3):  # on a loaded machine the run may outpace the test: try again
        run_dir = tmp_path / f"run{attempt}"
        if kill_between_20_and_30(loop_config_file, run_dir):
            break
    else:
        pytest.fail("three runs finished before the test could kill them between steps 21 and 29")
    assert not (run_dir / "summary.json").exists()

    out = finish(lmx_train(loop_config_file, run_dir))
    assert "resumed from" in out and "(step 20)" in out
    cfg = loop_config(loop_config_file, **{"train.batch_size": 64})
    step, params = final_params(run_dir, cfg)
    assert step == 30
    assert_trees_equal(params, final_params(reference, cfg)[1])
    resumed, uninterrupted = losses(run_dir), losses(reference)
    assert sorted(resumed) == list(range(1, 31))  # rows 21.. of the killed launch were dropped, not doubled
    assert all(resumed[s] == uninterrupted[s] for s in range(21, 31))


def test_sigterm_saves_exits_zero_and_resumes(loop_config_file, reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = lmx_train(loop_config_file, run_dir)
    wait_for(lambda: last_logged_step(run_dir) >= random.randint(11, 16), proc)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert "received SIGTERM: saved a checkpoint at step" in out
    stopped_at = int(out.split("saved a checkpoint at step ")[1].split()[0])
    assert 11 <= stopped_at < 30
    assert (run_dir / "checkpoints" / str(stopped_at)).is_dir()
    assert not (run_dir / "summary.json").exists()

    out = finish(lmx_train(loop_config_file, run_dir))
    assert f"(step {stopped_at})" in out
    cfg = loop_config(loop_config_file, **{"train.batch_size": 64})
    assert_trees_equal(final_params(run_dir, cfg)[1], final_params(reference, cfg)[1])
    assert losses(run_dir) == losses(reference)


def test_sigint_behaves_like_sigterm(loop_config_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = lmx_train(loop_config_file, run_dir)
    wait_for(lambda: last_logged_step(run_dir) >= 3, proc)
    os.kill(proc.pid, signal.SIGINT)
    out = finish(proc)
    assert "received SIGINT" in out
