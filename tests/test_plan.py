"""The memory planner (lmx.scaling.memory, `lmx plan`): its estimate against XLA's memory_analysis of
the compiled step, meshes larger than this machine, and the sweep dry run's memory column."""

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from conftest import tiny_config

from lmx.cli import main
from lmx.config import load_config
from lmx.errors import ConfigError
from lmx.model.flops import param_counts
from lmx.scaling.memory import estimate_memory, format_bytes, parse_bytes
from lmx.scaling.sweep import load_sweep
from lmx.train.setup import setup_training

REPO = Path(__file__).resolve().parent.parent
# Small enough to compile in seconds, large enough that activations (MiB), not scalars, decide.
MODEL = {
    "model.vocab_size": 512,
    "model.d_model": 64,
    "model.d_ff": 256,
    "model.max_seq_len": 64,
    "data.seq_len": 64,
    "train.batch_size": 16,
}


def xla_bytes(cfg, devices) -> int:
    """What XLA says one device needs for the compiled step (compiled from shapes, never run)."""
    setup = setup_training(cfg, devices, init=False)
    shape = (cfg.train.batch_size, cfg.data.seq_len)
    batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
    m = setup.make_step().lower(setup.abstract_state, batch).compile().memory_analysis()
    return m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes


@pytest.mark.parametrize("remat", ["none", "full"])
@pytest.mark.parametrize("mesh", [(8, 1, 1), (2, 2, 2)])
def test_estimate_is_within_15_percent_of_xla(mesh, remat, cpu_devices):
    data, fsdp, tensor = mesh
    cfg = tiny_config(**MODEL, **{"model.remat": remat, "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor})
    estimate = estimate_memory(cfg, platform="cpu").total
    measured = xla_bytes(cfg, cpu_devices)
    assert 0.85 <= estimate / measured <= 1.15, (estimate / 2**20, measured / 2**20)


def test_a_mesh_larger_than_the_machine_is_planned_without_devices():
    cfg = load_config(
        REPO / "configs/small.py", ["mesh.data=8", "mesh.fsdp=8", "mesh.tensor=1", "train.batch_size=512"]
    )
    est = estimate_memory(cfg)  # 64 devices; this process has 8
    assert est.mesh == (8, 8, 1) and est.devices == 64
    m = cfg.model
    norms = (2 * m.n_layers + 1) * m.d_model  # norm scales stay whole; every matrix splits over fsdp
    assert est.parameters == 4 * ((param_counts(m).total - norms) // 8 + norms)
    assert est.optimizer_state >= 2 * est.parameters  # AdamW's two moments (and its counters)
    # Twice the batch, twice the per-layer activations; remat keeps far less.
    bigger = estimate_memory(cfg.replace(**{"train.batch_size": 1024}))
    assert 1.8 < bigger.activations / est.activations <= 2.0
    assert estimate_memory(cfg.replace(**{"model.remat": "full"})).activations < est.activations / 2
    assert est.flops_per_step > 0 and est.step_seconds(989e12, 0.5) > 0


def test_a_mesh_with_a_free_size_needs_a_device_count():
    cfg = tiny_config()  # mesh.data = -1
    with pytest.raises(ConfigError, match="give the number of devices"):
        estimate_memory(cfg)
    assert estimate_memory(cfg, devices=8).mesh == (8, 1, 1)
    with pytest.raises(ConfigError, match="train.batch_size=8: must be divisible"):
        estimate_memory(cfg, devices=16)


def test_sizes():
    assert parse_bytes("80GiB") == 80 * 2**30 and parse_bytes("40 GB") == 40 * 10**9 and parse_bytes("512") == 512
    assert parse_bytes("1.5TiB") == int(1.5 * 2**40)
    for bad in ("80XB", "GiB", "-1GiB", "0MiB"):
        with pytest.raises(ConfigError, match="device memory"):
            parse_bytes(bad)
    assert format_bytes(3 * 2**20) == "3.00 MiB"


def test_plan_command_prints_the_table(capsys):
    tiny = str(REPO / "configs/tiny.py")
    assert main(["plan", tiny, "--devices", "8", "--device-memory", "80GiB", "--set", "model.remat=full"]) == 0
    out = capsys.readouterr().out
    for row in ("parameters", "optimizer state", "gradients", "activations", "total per device", "FLOPs per step"):
        assert row in out
    assert "mesh data=8 fsdp=1 tensor=1" in out and "remat full" in out
    assert ": fits" in out and "step time at 40% MFU" in out
    assert main(["plan", tiny, "--devices", "8", "--device-memory", "1MiB"]) == 0
    assert ": does not fit" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--device-memory", "80XB", "device memory '80XB': expected a size such as 80GiB"),
        ("--device", "b300", "unknown device 'b300'"),
        ("--mfu", "1.5", "--mfu 1.5: must lie in (0, 1]"),
    ],
)
def test_plan_command_bad_input_is_one_line(flag, value, message, capsys):
    assert main(["plan", str(REPO / "configs/tiny.py"), "--devices", "8", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmx plan: error: ") and message in err[0]


SWEEP = """
from lmx.config import Config, DataConfig, MeshConfig, ModelConfig, TrainConfig
from lmx.scaling.sweep import LadderRule, Sweep, isoflop

def get_sweep():
    base = Config(model=ModelConfig(vocab_size=512, max_seq_len=64), data=DataConfig(seq_len=64),
                  train=TrainConfig(batch_size=16), mesh=MeshConfig(data=-1))
    return Sweep("mem", base, isoflop([1e11], LadderRule(head_dim=16).ladder([32, 64])))
"""


def test_sweep_dry_run_shows_memory_per_device(tmp_path, capsys):
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(SWEEP))
    assert main(["sweep", str(path), "--dry-run", "--flops-per-s", "1e9", "--dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "memory/device" in out
    for run in load_sweep(path).runs():
        row = next(line for line in out.splitlines() if line.startswith(run.name))
        expected = estimate_memory(run.config, jax.device_count(), jax.default_backend()).total
        assert row.endswith(format_bytes(expected))
