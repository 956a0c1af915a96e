"""`lmx coord-check`: mup keeps every layer's activations the same size across widths; sp does not."""

import json
from pathlib import Path

import pytest

from lmx.cli import main
from lmx.scaling.coord_check import verdict

REPO = Path(__file__).resolve().parent.parent
# configs/tiny.py cut to widths 32 and 128 (head width 8), untied with a zero-initialised readout.
SMALL = {
    "model.parametrization": "mup",
    "model.tie_embeddings": "false",
    "model.zero_readout": "true",
    "model.vocab_size": "64",
    "model.d_model": "32",
    "model.n_heads": "4",
    "model.n_kv_heads": "2",
    "model.d_ff": "64",
    "model.n_layers": "2",
    "data.seq_len": "16",
    "train.batch_size": "4",
    "optim.learning_rate": "3e-3",
}


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """sp and mup at widths 32 and 128, three steps, 16 seeds (fewer leave the seed means noisy at
    these widths: the coord_check module's docstring has the figures)."""
    out = tmp_path_factory.mktemp("coord")
    argv = ["coord-check", str(REPO / "configs/tiny.py"), "--widths", "32", "128", "--steps", "3", "--seeds", "16"]
    for key, value in SMALL.items():
        argv += ["--set", f"{key}={value}"]
    return main([*argv, "--out", str(out)]), out


def test_mup_passes_and_sp_fails(checked, capsys):
    status, out = checked
    assert status == 0
    results = json.loads((out / "coord_check.json").read_text())
    assert results["verdicts"]["mup"]["pass"] is True
    assert 1 / 1.2 <= results["verdicts"]["mup"]["worst"]["ratio"] <= 1.2
    assert results["verdicts"]["sp"]["pass"] is False
    # sp's activations grow with width after one step at this learning rate, by far more than 1.2.
    assert results["verdicts"]["sp"]["worst"]["ratio"] > 3
    assert results["verdicts"]["sp"]["worst"]["step"] >= 1
    assert len(results["runs"]) == 2 * 2 * 16 * 3  # parametrizations x widths x seeds x steps
    layers = {"embedding", "layer_0/attn", "layer_0/mlp", "layer_0/residual", "layer_1/residual", "logits"}
    assert layers <= results["runs"][0].keys()
    for p in ("sp", "mup"):
        assert (out / f"coord_check_{p}_L2.png").stat().st_size > 10_000


def test_verdict_applies_the_ratio_band_and_the_step_0_logits_exception():
    def runs(parametrization, ratio, layer="layer_0/mlp", step=1, shapes=((32, 2), (128, 2)), wide_layer=None):
        rows = []
        for (width, depth), value, name in zip(shapes, (1.0, ratio), (layer, wide_layer or layer), strict=True):
            row = {"parametrization": parametrization, "width": width, "depth": depth, "seed": 0, "step": step}
            rows.append({**row, "loss": 1.0, name: value, "embedding": 1.0})
        return rows

    assert verdict(runs("mup", 1.15), "mup")["pass"]
    assert verdict(runs("mup", 1 / 1.15), "mup")["pass"]
    assert not verdict(runs("mup", 1.25), "mup")["pass"]
    assert not verdict(runs("mup", 1 / 1.25), "mup")["pass"]
    # mup's readout multiplier shrinks the logits at initialisation by design; sp has no such excuse.
    assert verdict(runs("mup", 0.5, "logits", step=0), "mup")["pass"]
    assert not verdict(runs("sp", 0.5, "logits", step=0), "sp")["pass"]
    assert not verdict(runs("mup", 0.5, "logits", step=1), "mup")["pass"]
    # Between depths a block is compared with the block at the same relative depth, and the logits
    # at step 0 count: the readout does not change with depth.
    deep = {"shapes": ((32, 1), (32, 4))}
    assert verdict(runs("completep", 1.1, "layer_0/mlp", wide_layer="layer_3/mlp", **deep), "completep")["pass"]
    assert not verdict(runs("completep", 1.3, "layer_0/mlp", wide_layer="layer_3/mlp", **deep), "completep")["pass"]
    assert not verdict(runs("completep", 0.5, "logits", step=0, **deep), "completep")["pass"]
    zeros = runs("completep", 0.0, "logits", step=0, **deep)
    zeros[0]["logits"] = 0.0  # a zero-initialised readout: exactly 0 at both depths compares as equal
    assert verdict(zeros, "completep")["pass"]


def test_widths_without_a_4x_pair_are_one_line(capsys, tmp_path):
    argv = ["coord-check", str(REPO / "configs/tiny.py"), "--widths", "64", "128", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmx coord-check: error: ") and "4x apart" in err[0]
