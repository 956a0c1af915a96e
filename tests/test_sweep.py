"""Sweep files, IsoFLOP plans, the dry-run table and the slurm script (no training here)."""

import json
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from lmx.cli import main
from lmx.config import Config, DataConfig, ModelConfig, TrainConfig, load_config
from lmx.errors import ConfigError
from lmx.model.flops import training_flops
from lmx.scaling.launch import write_plan, write_slurm
from lmx.scaling.plan import shape_key
from lmx.scaling.sweep import LadderRule, Point, Sweep, cross, format_value, grid, isoflop, load_sweep

BASE = Config(
    model=ModelConfig(vocab_size=512, max_seq_len=64),
    data=DataConfig(seq_len=64),
    train=TrainConfig(batch_size=8),
)
MODELS = LadderRule(head_dim=16, aspect_ratio=32).ladder([32, 64, 96, 128])


def test_ladder_rule_scales_depth_heads_and_mlp_together():
    shapes = LadderRule(head_dim=32, kv_group=2, mlp_ratio=8 / 3, multiple_of=32, aspect_ratio=64).ladder(
        [128, 256, 384]
    )
    assert [s.name for s in shapes] == ["L2-d128", "L4-d256", "L6-d384"]
    assert [(s.n_heads, s.n_kv_heads) for s in shapes] == [(4, 2), (8, 4), (12, 6)]
    assert [s.d_ff for s in shapes] == [352, 704, 1024]  # 8/3 x d_model rounded up to 32
    assert shapes[2].overrides == {
        "model.n_layers": 6,
        "model.d_model": 384,
        "model.n_heads": 12,
        "model.n_kv_heads": 6,
        "model.d_ff": 1024,
    }
    with pytest.raises(ConfigError, match="head_dim"):
        LadderRule(head_dim=48).shape(2, 64)


def test_grid_names_and_overrides():
    points = grid({"optim.learning_rate": [1e-3, 3e-3], "train.batch_size": [8, 16]}, {"optim.learning_rate": "lr"})
    assert [p.name for p in points] == [
        "lr1e-3-batch_size8",
        "lr1e-3-batch_size16",
        "lr3e-3-batch_size8",
        "lr3e-3-batch_size16",
    ]
    assert points[3].overrides == {"optim.learning_rate": 3e-3, "train.batch_size": 16}
    assert format_value(1e13) == "1e13" and format_value(2.5e12) == "2.5e12" and format_value(0.5) == "0.5"


@pytest.mark.parametrize("definition", ["6n", "porian", "detailed"])
def test_isoflop_runs_spend_their_budget_within_one_step(definition):
    budgets = (3e11, 1e12, 3e12)
    sweep = Sweep("iso", BASE, isoflop(budgets, MODELS), flops=definition, warmup_fraction=0.1)
    runs = sweep.runs()
    assert len(runs) == len(budgets) * len(MODELS)
    for run in runs:
        cfg = run.config
        budget = run.coords["budget"]
        one_step = training_flops(cfg, definition, steps=1)
        assert abs(training_flops(cfg, definition) - budget) <= one_step, run.name
        assert cfg.optim.warmup_steps == round(0.1 * cfg.train.steps)
        assert cfg.name == run.name and run.name.startswith("C")
        assert cfg.sweep.name == "iso" and cfg.log.wandb.group == "iso"
        assert run.coords["flops_definition"] == definition and run.coords["model"] in run.name
    # Bigger models get fewer steps at the same budget.
    first_budget = [r.config.train.steps for r in runs[: len(MODELS)]]
    assert first_budget == sorted(first_budget, reverse=True)


def test_sub_sweeps_keep_the_budget_when_the_batch_changes():
    points = cross(isoflop([1e12], MODELS[:2]), grid({"train.batch_size": [8, 32]}, {"train.batch_size": "bs"}))
    runs = Sweep("sub", BASE, points, flops="6n").runs()
    assert [r.name for r in runs] == ["C1e12-L1-d32-bs8", "C1e12-L1-d32-bs32", "C1e12-L2-d64-bs8", "C1e12-L2-d64-bs32"]
    small, large = runs[0].config, runs[1].config
    assert large.train.batch_size == 32 and abs(small.train.steps / large.train.steps - 4) < 0.01
    for run in runs:
        assert abs(training_flops(run.config, "6n") - 1e12) <= training_flops(run.config, "6n", steps=1)
        assert run.coords["bs"] == run.config.train.batch_size


def test_sweep_errors_name_the_run():
    with pytest.raises(ConfigError, match="two runs are named 'a'"):
        Sweep("s", BASE, [Point("a"), Point("a")])
    with pytest.raises(ConfigError, match=r"run bad: unknown config key 'model.d_modle'"):
        Sweep("s", BASE, [Point("bad", {"model.d_modle": 64})]).runs()
    with pytest.raises(ConfigError, match="less than half a step"):
        Sweep("s", BASE, isoflop([1e3], MODELS[:1])).runs()
    with pytest.raises(ConfigError, match="flops='7n'"):
        Sweep("s", BASE, [Point("a")], flops="7n")


SWEEP_FILE = """
from lmx.config import Config, DataConfig, ModelConfig, TrainConfig
from lmx.scaling.sweep import LadderRule, Sweep, isoflop

def get_sweep():
    base = Config(model=ModelConfig(vocab_size=512, max_seq_len=64), data=DataConfig(seq_len=64),
                  train=TrainConfig(batch_size=8))
    models = LadderRule(head_dim=16).ladder([32, 64])
    return Sweep("filed", base, isoflop([1e11, 1e12], models), flops="porian")
"""


def test_dry_run_prints_the_plan(tmp_path, capsys):
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_FILE)
    assert main(["sweep", str(path), "--dry-run", "--flops-per-s", "1e9", "--dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    runs = load_sweep(path).runs()
    for run in runs:
        assert run.name in out
    row = next(line for line in out.splitlines() if line.startswith("C1e12-L1-d32"))
    cfg = runs[2].config
    tokens = cfg.train.steps * 8 * 64
    assert f"{tokens:,}" in row and f"{cfg.train.steps:,}" in row and "16.7 min" in row  # 1e12 / 1e9 s
    assert "tokens/param" in out and "est. time" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_a_measuring_dry_run_times_each_model_shape_once(tmp_path, capsys):
    """Without --flops-per-s the dry run times a few steps of each shape (the docs' dry runs pass
    --no-measure, tests/doc_support.py): two shapes, four runs, every run estimated."""
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_FILE)
    assert main(["sweep", str(path), "--dry-run", "--dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    measured = [line for line in out.splitlines() if line.startswith("measuring")]
    assert measured == ["measuring 1 layers x d_model 32 ...", "measuring 2 layers x d_model 64 ..."]
    assert "estimated times from the FLOP/s of timed steps of each model shape" in out
    for run in load_sweep(path).runs():
        row = next(line for line in out.splitlines() if line.startswith(run.name))
        assert re.search(r" \d[\d.]* (s|min|h) ", row), row
    assert not (tmp_path / "out").exists()


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_sweep():\n    return 3\n")
    with pytest.raises(ConfigError, match="expected lmx.scaling.sweep.Sweep"):
        load_sweep(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "missing.py")


def run_array_task(script, task: int) -> str:
    """Runs `script` as slurm would run array task `task`; returns its output."""
    env = {"SLURM_ARRAY_TASK_ID": str(task), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout


def test_slurm_script_has_one_array_task_per_run(tmp_path):
    sweep = Sweep("slurm-test", BASE, isoflop([1e11, 1e12], MODELS[:3]), flops="porian")
    runs = sweep.runs()
    path = write_slurm(sweep, runs, tmp_path / "sweep", directives=["--gres=gpu:1", "time=1:00:00"], max_parallel=2)
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert f"#SBATCH --array=0-{len(runs) - 1}%2" in text
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --time=1:00:00" in text
    commands = (tmp_path / "sweep" / "commands.txt").read_text().splitlines()
    assert len(commands) == len(runs) == 6
    # Task i of the array runs run i: the embedded arrays line up with commands.txt.
    names_block = text.split("RUNS=(\n", 1)[1].split("\n)", 1)[0].split()
    assert names_block == [r.name for r in runs]
    for run, command in zip(runs, commands, strict=True):
        assert f"configs/{run.name}.json" in command and command.endswith(f"--run-dir {tmp_path / 'sweep' / run.name}")
    # Running a task runs its command (here a harmless stand-in for python), and skips finished runs.
    fake = tmp_path / "fake"
    write_slurm(sweep, runs, fake, python="echo")
    out = run_array_task(fake / "sweep.sbatch", 4)
    assert f"-m lmx.cli train {fake}/configs/{runs[4].name}.json" in out
    (fake / runs[4].name).mkdir()
    (fake / runs[4].name / "summary.json").write_text("{}")
    out = run_array_task(fake / "sweep.sbatch", 4)
    assert "finished before, skipped" in out


def test_resolved_configs_round_trip_as_json_config_files(tmp_path):
    sweep = Sweep("json", BASE, isoflop([1e12], MODELS[:2]), flops="porian")
    runs = sweep.runs()
    write_plan(runs, tmp_path)
    for run in runs:
        path = tmp_path / "configs" / f"{run.name}.json"
        assert load_config(path) == run.config
        coords = dict(json.loads(path.read_text())["sweep"]["coords"])
        assert coords["budget"] == 1e12 and coords["model"] == run.name.split("-", 1)[1]
    (tmp_path / "broken.json").write_text(textwrap.dedent('{"model": {"d_modle": 3}}'))
    with pytest.raises(ConfigError, match=r"broken.json: unknown config key 'model.d_modle'"):
        load_config(tmp_path / "broken.json")


@pytest.mark.parametrize(
    "path",
    ["configs/sweeps/lr_ladder.py", "configs/sweeps/isoflop_tiny.py", "experiments/isoflop_stdlib/sweep.py"],
)
def test_shipped_sweep_files_resolve(path):
    sweep = load_sweep(path)
    runs = sweep.runs()
    assert len({r.name for r in runs}) == len(runs) > 1
    for run in runs:
        if "budget" in run.coords:
            flops = training_flops(run.config, sweep.flops)
            assert abs(flops - run.coords["budget"]) <= training_flops(run.config, sweep.flops, steps=1)


def test_a_finished_run_whose_config_changed_is_named(tmp_path):
    from lmx.scaling.launch import changed_keys

    run = Sweep("c", BASE, [Point("a")]).runs()[0]
    (tmp_path / "config.json").write_text(run.config.to_json())
    assert changed_keys(tmp_path, run.config) == []
    edited = run.config.replace(**{"optim.learning_rate": 1e-2})
    assert changed_keys(tmp_path, edited) == ["optim.learning_rate"]
    assert changed_keys(tmp_path / "missing", edited) == []


def test_slurm_task_reruns_a_run_whose_summary_was_cut_off(tmp_path):
    import sys

    # Python for the script's summary check (`-c`); a harmless echo for the training command.
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/bash\nif [[ $1 == -c ]]; then exec {sys.executable} "$@"; fi\necho "$@"\n')
    fake.chmod(0o755)
    sweep = Sweep("slurm-torn", BASE, [Point("a"), Point("b")])
    runs = sweep.runs()
    out = tmp_path / "sweep"
    script = write_slurm(sweep, runs, out, python=str(fake))
    for run in runs:
        (out / run.name).mkdir()
        (out / run.name / "summary.json").write_text(json.dumps({"tokens": 1, "final_eval": {}}, indent=2) + "\n")
    assert "a: finished before, skipped" in run_array_task(script, 0)
    (out / "b" / "summary.json").write_text('{\n  "tokens": 1,\n  "final_e')  # killed mid-write
    printed = run_array_task(script, 1)
    assert f"b: {out}/b/summary.json cannot be read (cut off?); moved it to {out}/b/summary.json.unreadable" in printed
    assert f"-m lmx.cli train {out}/configs/b.json --run-dir {out}/b" in printed  # the run goes again
    assert not (out / "b" / "summary.json").exists()
    assert (out / "b" / "summary.json.unreadable").read_text().endswith('"final_e')


def test_sweep_files_are_written_whole(tmp_path, monkeypatch):
    import lmx.atomic

    written = []
    write_bytes = lmx.atomic.write_bytes

    def recording(path, data):
        written.append(Path(path).relative_to(tmp_path).as_posix())
        write_bytes(path, data)

    monkeypatch.setattr(lmx.atomic, "write_bytes", recording)
    sweep = Sweep("whole", BASE, [Point("a"), Point("b")])
    write_slurm(sweep, sweep.runs(), tmp_path)
    assert sorted(written) == ["commands.txt", "configs/a.json", "configs/b.json", "sweep.sbatch"]
    assert (tmp_path / "sweep.sbatch").stat().st_mode & 0o777 == 0o755
    assert not list(tmp_path.rglob("*.partial"))


def test_dry_run_estimates_pass_over_runs_with_cut_off_files(tmp_path, capsys):
    from lmx.scaling.plan import finished_flops_per_s

    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_FILE)
    sweep = load_sweep(path)
    runs = sweep.runs()
    out = tmp_path / "out"
    for i, run in enumerate(runs[:3]):
        (out / run.name).mkdir(parents=True)
        (out / run.name / "config.json").write_text(run.config.to_json() + "\n")
        summary = {"tokens": 2**20 * (i + 1), "train_time_s": 10.0, "final_eval": {}}
        (out / run.name / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / runs[1].name / "summary.json").write_text('{"tokens": 10')
    (out / runs[2].name / "config.json").write_text("{")
    assert main(["sweep", str(path), "--dry-run", "--no-measure", "--dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"note: {out / runs[1].name}/summary.json: cut off" in printed and runs[3].name in printed
    notes = []
    rates = finished_flops_per_s(out, sweep.flops, log=notes.append)
    assert list(rates) == [shape_key(runs[0].config)]
    assert notes == [
        f"note: {out / runs[1].name}/summary.json: cut off at line 1 (killed while writing?); "
        "its run's FLOP/s is not used for the estimates",
        f"note: {out / runs[2].name}/config.json: cut off at line 1 (killed while writing?); "
        "its run's FLOP/s is not used for the estimates",
    ]
