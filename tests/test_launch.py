"""The local launcher on real runs: interrupt and relaunch, a failing run, wandb group in config."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import CORPUS, tiny_config

SWEEP = """
from lmx.config import (CheckpointConfig, Config, DataConfig, EvalConfig, LogConfig, ModelConfig,
                        OptimConfig, TrainConfig)
from lmx.scaling.sweep import Point, Sweep

def get_sweep():
    base = Config(
        model=ModelConfig(vocab_size=512, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64, max_seq_len=32),
        data=DataConfig(seq_len=32, corpus={corpus!r}, dir={data_dir!r}, validation_fraction=0.2),
        optim=OptimConfig(warmup_steps=2),
        train=TrainConfig(steps=6, batch_size=8),
        checkpoint=CheckpointConfig(every_steps=20, max_to_keep=1, async_save=False),
        eval=EvalConfig(final_batches=2),
        log=LogConfig(every_steps=5, progress=False),
    )
    return Sweep("launch-test", base, [
        Point("a", coords={{"which": "first"}}),
        # Fails at run time: its corpus does not exist.
        Point("bad", {{"data.corpus": "text:/nonexistent/*.txt"}}),
        Point("long", {{"train.steps": {long_steps}}}),
    ])
"""


@pytest.mark.slow
def test_interrupted_sweep_resumes_only_unfinished_runs_and_reports_failures(tmp_path, monkeypatch):
    from lmx.config import DataConfig
    from lmx.data.prepare import ensure_prepared

    data_dir = tmp_path / "data"
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(SWEEP.format(corpus=CORPUS, data_dir=str(data_dir), long_steps=1000))
    out = tmp_path / "sweep"
    # Children train on one CPU device each (not the 8 forced for this test process).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    command = [sys.executable, "-m", "lmx.cli", "sweep", str(sweep_file), "--dir", str(out)]

    # Data prepared once, as `lmx data prepare` would (the runs share it).
    ensure_prepared(DataConfig(corpus=CORPUS, dir=str(data_dir), validation_fraction=0.2), 512)

    # First launch: interrupt it once the long run has saved a checkpoint.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not any((out / "long" / "checkpoints").glob("[0-9]*")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the long run never saved a checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    first = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, first
    assert "[1/3] a: finished in" in first
    assert "[2/3] bad: FAILED (exit code 2)" in first
    assert "[3/3] long: interrupted by SIGTERM" in first
    assert (out / "a" / "summary.json").exists() and not (out / "long" / "summary.json").exists()
    a_summary_mtime = (out / "a" / "summary.json").stat().st_mtime_ns
    # A fit of the sweep so far reads the finished run and names the unfinished ones.
    from lmx.scaling.points import load_points

    points = load_points(out)
    assert points.names == ("a",) and "long" in points.unfinished

    # Relaunch: the finished run is skipped, the interrupted one resumes, the failing one fails again.
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "[1/3] a: finished before, skipped" in second.stdout
    assert "[3/3] long: resuming" in second.stdout and "[3/3] long: finished in" in second.stdout
    assert "1 finished, 1 skipped (done before), 1 failed" in second.stdout
    assert "failed runs:\n  bad: exit code 2" in second.stdout and "/nonexistent/" in second.stdout
    assert (out / "a" / "summary.json").stat().st_mtime_ns == a_summary_mtime  # a did not run again
    long_log = (out / "logs" / "long.log").read_text()
    assert "resumed from" in long_log
    summary = json.loads((out / "long" / "summary.json").read_text())
    assert summary["steps"] == 1000
    # Every run carries its sweep: the wandb group and its coordinates.
    config = json.loads((out / "a" / "config.json").read_text())
    assert config["sweep"]["name"] == "launch-test" and config["log"]["wandb"]["group"] == "launch-test"
    assert dict(config["sweep"]["coords"])["which"] == "first"
    # The sweep's loss curves plot from its runs' metrics.jsonl.
    from lmx.scaling.plot import plot_loss_curves

    png = plot_loss_curves([out / "a", out / "long"], tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5_000


# Stands in for `python -m lmx.cli train CONFIG --run-dir DIR`: writes DIR/summary.json at once.
FAKE_TRAIN = """#!/bin/bash
run_dir="${@: -1}"
mkdir -p "$run_dir"
echo "training $run_dir"
printf '{"tokens": 1024, "final_eval": {}}\\n' > "$run_dir/summary.json"
"""


def test_a_cut_off_summary_is_set_aside_and_the_run_goes_again(tmp_path):
    from lmx.scaling.launch import launch_local
    from lmx.scaling.sweep import Point, Sweep

    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    runs = Sweep("torn", tiny_config(), [Point("done"), Point("torn"), Point("fresh")]).runs()
    out = tmp_path / "sweep"
    for run in runs[:2]:
        (out / run.name).mkdir(parents=True)
        (out / run.name / "config.json").write_text(run.config.to_json() + "\n")
        (out / run.name / "summary.json").write_text(json.dumps({"tokens": 1024, "final_eval": {}}, indent=2) + "\n")
    # A finished run whose config.json a killed process cut off, and a run killed writing its summary.
    config = (out / "done" / "config.json").read_text()
    (out / "done" / "config.json").write_text(config[: len(config) // 2])
    summary = (out / "torn" / "summary.json").read_text()
    (out / "torn" / "summary.json").write_text(summary[:12])

    lines = []
    report = launch_local(runs, out, python=str(fake), log=lines.append)
    assert report.skipped == ["done"] and report.finished == ["torn", "fresh"] and report.ok, lines
    warning = f"[1/3] done: finished before, skipped (WARNING: cannot compare its config: {out}/done/config.json: "
    assert re.fullmatch(re.escape(warning) + r"cut off at line \d+ \(killed while writing\?\)\)", lines[0])
    assert lines[1] == (
        f"[2/3] torn: {out}/torn/summary.json: cut off at line 2 (killed while writing?); "
        "moved it to summary.json.unreadable, running the run again"
    )
    assert lines[2].startswith("[2/3] torn: starting") and lines[3].startswith("[2/3] torn: finished in")
    assert (out / "torn" / "summary.json.unreadable").read_text() == summary[:12]
    assert json.loads((out / "torn" / "summary.json").read_text())["tokens"] == 1024
