"""`lmx train --profile START:STOP` writes a jax.profiler trace of those steps into the run directory."""

import pytest
import trace_summary
from conftest import loop_config

from lmx.cli import main
from lmx.errors import ConfigError
from lmx.train.loop import train
from lmx.train.profile import parse_window


def test_a_profiled_run_writes_a_trace_of_its_steps(loop_config_file, tmp_path, cpu_devices):
    cfg = loop_config(loop_config_file, **{"mesh.data": 1, "train.steps": 5, "checkpoint.every_steps": 0})
    result = train(cfg, tmp_path, devices=cpu_devices[:1], profile=(2, 4))
    assert result.status == "completed"
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1, traces
    data = traces[0].read_bytes()
    assert b"jit_step" in data or b"jit(step)" in data  # the compiled step ran inside the trace
    # benchmarks/trace_summary.py reads the trace's JSON: the traced steps' calls are there.
    time_us, count = trace_summary.device_time(tmp_path / "profile")
    steps = {name: n for (_, name), n in count.items() if "jit(step)" in name}
    assert sum(steps.values()) >= 2 and all(time_us[k] > 0 for k in time_us if "jit(step)" in k[1]), sorted(count)[:40]


@pytest.mark.parametrize("text", ["5", "4:4", "0:3", "a:b"])
def test_a_bad_window_is_one_line(text, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--profile"):
        parse_window(text)
    assert main(["train", "configs/tiny.py", "--profile", text, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--profile" in err[0]
    assert not (tmp_path / "run").exists()
