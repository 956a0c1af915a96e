"""docs/examples/unlikelihood.py: an objective registered from outside lmx trains through lmx's own
trainer and parses like a built-in kind."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from lmx.errors import ConfigError
from lmx.train.metrics import read_jsonl

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "unlikelihood.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("unlikelihood_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name)


def test_the_example_trains_from_outside_the_package(loop_config_file, tmp_path):
    run_dir = tmp_path / "run"
    steps = ["--set", "train.steps=12", "--set", "checkpoint.every_steps=0", "--set", "eval.final_batches=1"]
    # Its own process, started from another directory: nothing of lmx's tree is on the path but lmx.
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), str(loop_config_file), str(run_dir), "--alpha", "0.5", *steps],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "completed at step 12" in out.stdout
    saved = json.loads((run_dir / "config.json").read_text())["objective"]
    assert saved == {"kind": "unlikelihood", "alpha": 0.5}
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 12
    for row in rows:  # loss = ce + alpha * unlikelihood, as logged means
        assert row["loss"] == pytest.approx(row["ce"] + 0.5 * row["unlikelihood"], rel=1e-5)
    assert rows[-1]["ce"] < rows[0]["ce"]
    assert "final_eval" in json.loads((run_dir / "summary.json").read_text())


def test_the_registered_kind_parses_like_a_built_in_one(example):
    cfg = tiny_config(**{"objective.kind": "unlikelihood", "objective.alpha": "0.25"})
    assert isinstance(cfg.objective, example.UnlikelihoodConfig) and cfg.objective.alpha == 0.25
    assert type(cfg).from_json(cfg.to_json()) == cfg
    with pytest.raises(
        ConfigError, match=r"objective.beta: not a field of objective.kind='unlikelihood' \(its fields: alpha\)"
    ):
        cfg.replace(**{"objective.beta": "0.1"})
    with pytest.raises(ConfigError, match="objective.alpha"):
        cfg.replace(**{"objective.alpha": "-1"})


def test_the_unlikelihood_term_equals_its_formula(example):
    import jax
    import jax.numpy as jnp

    from lmx.model import Transformer

    cfg = tiny_config()
    model = Transformer(cfg.model)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (4, 17)).astype(np.int32)
    tokens[:, 5] = tokens[:, 4]  # some repeats, which the term leaves out
    batch = {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "segment_ids": jnp.ones((4, 16), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(16), (4, 16)),
    }
    params = model.init(jax.random.key(0), batch["inputs"])["params"]
    _, stats = example.unlikelihood_loss(model, 1.0)(params, batch)
    logits = np.asarray(model.apply({"params": params}, batch["inputs"]), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    p_repeat = np.take_along_axis(p, inputs[..., None], -1)[..., 0]
    expected = np.sum(-np.log(1 - p_repeat) * (inputs != targets))
    assert float(stats["unlikelihood"]) == pytest.approx(expected, rel=1e-5)
