"""No fault or bad input may damage a run, and every error names its cause (one line, no traceback).

Each test here covers a defect found on main before the fix (2026-12-02): a rejected resume that
rewrote config.json, a finished run overwritten by a relaunch with another config, no run-directory
lock, a custom loss without "weight" failing with a KeyError inside the trace, exceptions in a
config file's get_config() printed as tracebacks, uncreatable run directories and cut-off
config.json files without the file's name, and a full disk during a checkpoint save.
"""

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
from conftest import loop_config

from lmx.cli import main
from lmx.errors import LossError
from lmx.train.lock import RunLock
from lmx.train.loop import train
from lmx.train.metrics import read_jsonl


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory with its content hash (the lock file excepted)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def finished(full_run, tmp_path):
    """A copy of the session's finished 30-step run (checkpoints at 10, 20, 30) to damage freely."""
    _, run_dir, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_a_rejected_resume_leaves_the_run_byte_identical(finished, loop_config_file, capsys):
    before = snapshot(finished)
    base = ["train", str(loop_config_file), "--run-dir", str(finished)]
    mesh = ["--set", "mesh.data=2", "--set", "mesh.fsdp=2", "--set", "mesh.tensor=2", "--set", "eval.every_steps=10"]
    assert main([*base, *mesh, "--set", "model.d_model=48"]) == 2
    one_line_error(capsys, "model.d_model", "--run-dir", "--extend")
    assert snapshot(finished) == before
    assert main([*base, "--set", "mesh.data=16"]) == 2  # a mesh that does not fit the 8 devices
    one_line_error(capsys, "mesh")
    assert snapshot(finished) == before
    assert main(["eval", str(finished), "--batches", "1"]) == 0  # still loads


def test_a_finished_run_is_extended_only_on_purpose(finished, loop_config_file, capsys):
    mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "eval.every_steps": 10}
    longer = loop_config(loop_config_file, **mesh, **{"train.steps": 50})
    before = snapshot(finished)
    base = ["train", str(loop_config_file), "--run-dir", str(finished)]
    sets = [x for k, v in {**mesh, "train.steps": 50}.items() for x in ("--set", f"{k}={v}")]
    assert main([*base, *sets]) == 2
    one_line_error(capsys, "finished run (step 30", "train.steps (30 -> 50)", "--extend")
    assert snapshot(finished) == before
    old_summary = json.loads((finished / "summary.json").read_text())
    result = train(longer, finished, extend=True)
    assert result.status == "completed" and result.step == 50
    assert json.loads((finished / "summary-step30.json").read_text()) == old_summary
    assert json.loads((finished / "summary.json").read_text())["steps"] == 50
    assert json.loads((finished / "extensions.json").read_text())[0]["step"] == 30
    # Checkpoint 30 outlives checkpoint.max_to_keep=3 (40 and 50 were saved after it; 10 and 20 went).
    steps = sorted(int(p.name) for p in (finished / "checkpoints").iterdir() if p.name.isdigit())
    assert 30 in steps and steps[-1] == 50
    rows = [r["step"] for r in read_jsonl(finished / "metrics.jsonl") if "loss" in r]
    assert rows == list(range(1, 51))  # one row per step, none twice


def test_an_interrupted_run_resumes_only_with_changes_it_can_honour(finished, loop_config_file, capsys):
    (finished / "summary.json").unlink()
    shutil.rmtree(finished / "checkpoints" / "30")  # stopped after the checkpoint at step 20
    mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "eval.every_steps": 10}
    before = snapshot(finished)
    base = ["train", str(loop_config_file), "--run-dir", str(finished)]
    sets = [x for k, v in mesh.items() for x in ("--set", f"{k}={v}")]
    assert main([*base, *sets, "--set", "optim.learning_rate=0.01"]) == 2
    one_line_error(capsys, "interrupted run (step 20)", "optim.learning_rate")
    assert snapshot(finished) == before
    # The log interval is a change resume honours exactly: the run goes on from step 20.
    result = train(loop_config(loop_config_file, **mesh, **{"log.every_steps": 5}), finished)
    assert result.status == "completed" and result.step == 30


def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(loop_config_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from lmx.train.lock import RunLock; RunLock({str(run_dir)!r}).acquire(); "
            "print('held', flush=True); import time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cmd = ["train", str(loop_config_file), "--run-dir", str(run_dir), "--set", "train.steps=2"]
        assert main(cmd) == 2
        one_line_error(capsys, "another lmx process", f"PID {holder.pid}", "host")
        assert not (run_dir / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: the next launch takes it without anyone deleting files.
    RunLock(run_dir).acquire().release()
    assert json.loads((run_dir / "lock").read_text() or "{}") == {}


def test_a_failed_launch_in_a_new_directory_leaves_nothing(loop_config_file, tmp_path, capsys):
    run_dir = tmp_path / "new"
    assert main(["train", str(loop_config_file), "--run-dir", str(run_dir), "--set", "mesh.data=16"]) == 2
    one_line_error(capsys, "mesh")
    assert not run_dir.exists()


def test_a_run_directory_that_cannot_be_created_is_one_line(loop_config_file, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["train", str(loop_config_file), "--run-dir", str(tmp_path / "file" / "run")]) == 2
    one_line_error(capsys, "cannot create the run directory", str(tmp_path / "file" / "run"))


def test_a_cut_off_config_json_is_named(finished, capsys):
    text = (finished / "config.json").read_text()
    (finished / "config.json").write_text(text[: len(text) // 2])
    assert main(["eval", str(finished)]) == 2
    one_line_error(capsys, str(finished / "config.json"), "malformed")


def test_a_config_that_no_longer_fits_its_checkpoint_is_one_line(finished, capsys):
    cfg = json.loads((finished / "config.json").read_text())
    cfg["model"]["d_ff"] = 96
    (finished / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", str(finished), "--batches", "1"]) == 2
    one_line_error(capsys, "has shape", "model section")


def test_errors_raised_by_a_config_files_own_code_are_one_line(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text("from lmx.config import Config\n\ndef get_config():\n    return {}['missing']\n")
    assert main(["train", str(path)]) == 2
    one_line_error(capsys, f"{path}:4", "get_config() raised KeyError")
    sweep = tmp_path / "sweep.py"
    sweep.write_text("def get_sweep():\n    raise RuntimeError('no GPUs here')\n")
    assert main(["sweep", str(sweep), "--dry-run"]) == 2
    one_line_error(capsys, f"{sweep}:2", "RuntimeError: no GPUs here")


def test_a_custom_loss_without_weight_is_named(loop_config_file, tmp_path):
    def make_loss(setup):
        def loss_fn(params, batch):
            logits = setup.model.apply({"params": params}, batch["inputs"])
            return jnp.sum(logits), {"ce": jnp.sum(logits)}

        return loss_fn

    cfg = loop_config(loop_config_file, **{"train.steps": 1})
    with pytest.raises(LossError, match=r"stats must hold 'weight'.*got stats \['ce'\]"):
        train(cfg, tmp_path / "run", make_loss=make_loss)


def test_a_torn_metrics_row_does_not_swallow_the_next(tmp_path):
    from lmx.train.metrics import JsonlSink

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    sink = JsonlSink(path)
    sink.write(2, {"loss": 1.5})
    sink.close()
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]


@pytest.mark.slow
def test_a_full_disk_during_a_save_keeps_the_earlier_checkpoints(loop_config_file, tmp_path):
    """The run directory on a 3 MiB tmpfs: the first checkpoint (~1.5 MiB) fits, the second does not."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        run_dir = mount / "run"
        cmd = [sys.executable, "-m", "lmx.cli", "train", str(loop_config_file), "--run-dir", str(run_dir)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 2, out.stderr[-3000:]
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith("lmx train: error:")]
        assert len(errors) == 1 and "[Errno 28] No space left on device" in errors[0], out.stderr[-3000:]
        failed = int(re.search(r"saving checkpoint (\d+)", errors[0]).group(1))
        intact = json.loads(re.search(r"\(steps (\[[\d, ]*\])\) are intact", errors[0]).group(1))
        # The complete checkpoints are those the message names, the failed step left none, and the
        # newest one restores.
        on_disk = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
        assert intact == on_disk and intact and failed not in on_disk
        assert main(["eval", str(run_dir), "--batches", "1", "--step", str(intact[-1])]) == 0
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_run_whose_only_checkpoint_is_damaged_is_one_short_line(finished, capsys):
    for step in ("10", "20"):
        shutil.rmtree(finished / "checkpoints" / step)
    for path in (finished / "checkpoints" / "30" / "state").rglob("*"):
        if path.is_file() and path.stat().st_size:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["eval", str(finished), "--batches", "1"]) == 2
    err = one_line_error(capsys, "checkpoints/30/state", "damaged files?")
    assert len(err) < 600  # no kilobytes of TensorStore spec
    shutil.rmtree(finished / "checkpoints")
    assert main(["eval", str(finished)]) == 2
    one_line_error(capsys, "no checkpoint to load")
