from pathlib import Path

import jax
import pytest

from lmx.config import Config, ModelConfig, apply_overrides, load_config
from lmx.errors import ConfigError
from lmx.parallel import make_mesh, resolve_mesh_shape

ROOT = Path(__file__).resolve().parents[1]


def test_json_round_trip_of_defaults_and_overrides():
    cfg = Config()
    assert Config.from_json(cfg.to_json()) == cfg
    changed = cfg.replace(**{"model.qk_norm": True, "mesh.rules": '[["batch", ["data"]], ["embed", []]]'})
    assert Config.from_json(changed.to_json()) == changed
    assert changed.mesh.rules == (("batch", ("data",)), ("embed", ()))


def test_overrides_are_converted_to_the_field_type():
    cfg = apply_overrides(
        Config(),
        ["model.d_model=512", "model.n_heads=8", "optim.learning_rate=3e-4", "model.qk_norm=true", "model.mlp=gelu"],
    )
    assert cfg.model.d_model == 512 and isinstance(cfg.model.d_model, int)
    assert cfg.optim.learning_rate == pytest.approx(3e-4)
    assert cfg.model.qk_norm is True
    assert cfg.model.mlp == "gelu"


def test_overrides_change_related_keys_together():
    # d_model=96 alone is not divisible by 4 heads... together with n_heads=6 it is valid.
    cfg = apply_overrides(Config(), {"model.d_model": "96", "model.n_heads": "6", "model.n_kv_heads": "3"})
    assert cfg.model.head_dim == 16


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.d_modle=3", "did you mean model.d_model"),
        ("modle.d_model=3", "did you mean model.d_model"),
        ("optim.learning_rat=1", "did you mean optim.learning_rate"),
        ("log.wandb.projet=x", "did you mean log.wandb.project"),
    ],
)
def test_unknown_key_names_the_closest_valid_keys(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    "override, key",
    [
        ({"model.d_model": "0"}, "model.d_model=0"),
        ({"model.n_layers": "-2"}, "model.n_layers=-2"),
        ({"train.batch_size": "0"}, "train.batch_size=0"),
        ({"data.seq_len": "0"}, "data.seq_len=0"),
        ({"model.d_model": "250", "model.n_heads": "4"}, "model.d_model=250"),  # not divisible
        ({"model.n_kv_heads": "3"}, "model.n_heads=4"),  # 4 heads over 3 kv heads
        ({"train.micro_batches": "5"}, "train.batch_size=32"),
        ({"optim.b2": "1.5"}, "optim.b2=1.5"),
        ({"model.mlp": "relu"}, "model.mlp='relu'"),
        ({"model.d_model": "many"}, "model.d_model='many'"),
        ({"mesh.data": "0"}, "mesh.data=0"),
        ({"train.nonfinite": "ignore"}, "train.nonfinite='ignore'"),
        ({"eval.every_steps": "10", "eval.batches": "0"}, "eval.batches=0"),
        ({"checkpoint.max_to_keep": "0"}, "checkpoint.max_to_keep=0"),
        ({"log.every_steps": "0"}, "log.every_steps=0"),
        ({"log.wandb.mode": "cloud"}, "log.wandb.mode='cloud'"),
    ],
)
def test_invalid_values_raise_config_error_naming_key_and_value(override, key):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), override)
    assert key in str(err.value)


def test_model_config_validates_on_its_own():
    with pytest.raises(ConfigError, match="model.d_model=100"):
        ModelConfig(d_model=100, n_heads=3)


def test_mesh_must_match_device_count():
    cfg = Config().replace(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 4})
    with pytest.raises(ConfigError, match="mesh.data=2, mesh.fsdp=2, mesh.tensor=4.*16 devices but 8"):
        make_mesh(cfg.mesh)
    with pytest.raises(ConfigError, match="mesh.data=-1"):
        resolve_mesh_shape(Config().replace(**{"mesh.fsdp": 3}).mesh, 8)


def test_minus_one_takes_the_remaining_devices():
    mesh = make_mesh(Config().replace(**{"mesh.fsdp": 2, "mesh.tensor": 2}).mesh)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert resolve_mesh_shape(Config().mesh, 1) == (1, 1, 1)
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_load_config_files_and_overrides():
    tiny = load_config(ROOT / "configs" / "tiny.py")
    small = load_config(ROOT / "configs" / "small.py", ["train.steps=7"])
    assert tiny.name == "tiny"
    assert (small.model.d_model, small.model.n_layers, small.data.seq_len, small.train.steps) == (512, 8, 512, 7)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert Config.from_json(cfg.to_json()) == cfg


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="empty.py.*no get_config"):
        load_config(empty)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    with pytest.raises(ConfigError, match="broken.py.*failed to import"):
        load_config(broken)
    bad_value = tmp_path / "bad_value.py"
    bad_value.write_text("from lmx.config import *\ndef get_config():\n    return Config(model=ModelConfig(d_ff=0))\n")
    with pytest.raises(ConfigError, match="bad_value.py.*model.d_ff=0"):
        load_config(bad_value)


def test_suggestions_name_fields_not_sections():
    with pytest.raises(ConfigError) as error:
        apply_overrides(Config(), ["train.step=3"])
    suggested = str(error.value).split("did you mean ")[1].rstrip("?").split(" or ")
    assert "train.steps" in suggested and "train" not in suggested
    assert all("." in key for key in suggested)
