"""The docs' library example (a custom loss through lmx's trainer) runs and does what it says."""

import importlib.util
from pathlib import Path

import pytest

from lmx.train.metrics import read_jsonl

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "custom_loss.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_loss_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_loss_trains_through_the_pmap_style_step(example, loop_config_file, tmp_path):
    mesh = ["--set", "mesh.data=2", "--set", "mesh.fsdp=2", "--set", "mesh.tensor=2"]
    result = example.main([str(loop_config_file), str(tmp_path), "--set", "train.steps=20", *mesh])
    assert result.status == "completed"
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    # The custom loss's extra stat is logged, and smoothing makes the objective exceed the plain CE.
    assert all(r["loss"] > r["ce"] for r in rows)
    assert rows[-1]["ce"] < rows[0]["ce"] - 0.5


def test_zero_smoothing_is_plain_cross_entropy(example, loop_config_file, tmp_path):
    one_step = ["--set", "train.steps=1", "--set", "checkpoint.every_steps=0", "--set", "eval.final_batches=1"]
    example.main([str(loop_config_file), str(tmp_path), "--smoothing", "0", *one_step])
    row = next(r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r)
    assert row["loss"] == pytest.approx(row["ce"], rel=1e-6)
