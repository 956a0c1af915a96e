"""`lmx train` as a process: SIGKILL and SIGTERM at random moments (ten of each), then the same
command again.

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


def lmx_train(config: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmx.cli", "train", str(config), "--run-dir", str(run_dir), *SLOWER, *extra],
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


def test_sigint_behaves_like_sigterm(loop_config_file, tmp_path):
    run_dir = tmp_path / "run"
    proc = lmx_train(loop_config_file, run_dir)
    wait_for(lambda: last_logged_step(run_dir) >= 3, proc)
    os.kill(proc.pid, signal.SIGINT)
    out = finish(proc)
    assert "received SIGINT" in out


# The chaos runs: frequent asynchronous saves and evaluations, so random kills land inside them.
CHAOS = ["--set", "checkpoint.every_steps=3", "--set", "eval.every_steps=5", "--set", "eval.batches=2"]
CHAOS_KEYS = {"checkpoint.every_steps": 3, "eval.every_steps": 5, "eval.batches": 2}


@pytest.fixture(scope="module")
def chaos_reference(loop_config_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("chaos_reference")
    finish(lmx_train(loop_config_file, run_dir, *CHAOS))
    return run_dir


def saving(run_dir: Path) -> bool:
    directory = run_dir / "checkpoints"
    return directory.is_dir() and any("tmp" in p.name for p in directory.iterdir())


def evaluating(run_dir: Path, after: int) -> bool:
    """A train row of an evaluation step past `after` is written: its evaluation runs right after."""
    step = last_logged_step(run_dir)
    return step > after and step % 5 == 0


def interrupt_ten_times(config: Path, run_dir: Path, sig: signal.Signals, seed: int) -> list[str]:
    """Ten launches stopped by `sig`: during an asynchronous save, right after an evaluation step,
    or after a random step plus a random delay, in turn. Returns where each one landed."""
    rng, landed, saved = random.Random(seed), [], None
    for i in range(10):
        proc = lmx_train(config, run_dir, *CHAOS)
        start = last_logged_step(run_dir)
        when = ("save", "eval", "random")[i % 3]
        if when == "save":
            ready = wait_for(lambda start=start: last_logged_step(run_dir) > start and saving(run_dir), proc)
        elif when == "eval":
            ready = wait_for(lambda start=start: evaluating(run_dir, start), proc)
        else:
            target = start + rng.randint(1, 4)
            ready = wait_for(lambda target=target: last_logged_step(run_dir) >= target, proc)
            time.sleep(rng.uniform(0, 0.2))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=300)
        if saved is not None:  # this launch resumed from the step the last SIGTERM saved
            assert "resumed from" in out and f"(step {saved})" in out, out
        saved = None
        if sig == signal.SIGTERM:
            assert proc.returncode == 0, out  # a SIGTERM always saves and exits 0
            if "received SIGTERM" in out:
                saved = int(out.split("saved a checkpoint at step ")[1].split()[0])
                assert (run_dir / "checkpoints" / str(saved)).is_dir()
        stopped = ready and (proc.returncode == -sig or "received SIGTERM" in out)
        landed.append(f"{when}@{last_logged_step(run_dir)}" if stopped else "done")
        if (run_dir / "summary.json").exists():
            break
    return landed


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_ten_interruptions_at_random_moments_end_bit_identical(loop_config_file, chaos_reference, tmp_path, sig):
    run_dir = tmp_path / "run"
    landed = interrupt_ten_times(loop_config_file, run_dir, sig, seed=int(sig))
    assert sum(x != "done" for x in landed) >= 5, landed  # most interruptions hit a running launch
    if not (run_dir / "summary.json").exists():
        finish(lmx_train(loop_config_file, run_dir, *CHAOS))
    cfg = loop_config(loop_config_file, **{"train.batch_size": 64, **CHAOS_KEYS})
    step, params = final_params(run_dir, cfg)
    assert step == 30
    assert_trees_equal(params, final_params(chaos_reference, cfg)[1])
    assert losses(run_dir) == losses(chaos_reference)
    # Rows a killed launch logged after its last checkpoint were dropped, not doubled.
    logged = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    assert logged == list(range(1, 31))
