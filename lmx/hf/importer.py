"""`lmx import hf`: a local transformers checkpoint as an lmx run directory.

Llama, Mistral (without a sliding window) and Qwen3 models map exactly onto lmx's decoder
(`lmx.hf.convert`); anything else fails naming the feature. The run directory written here is what
`lmx train` leaves: ``config.json``, a step-0 checkpoint (the parameters in float32, a fresh
optimizer state) and the tokenizer, so `lmx eval`, `lmx generate`, `lmx export hf` and
``objective.init_from`` all take it. It is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmx.checkpoint import Checkpoints
from lmx.config import Config, DataConfig
from lmx.data.tokenizer import load_tokenizer
from lmx.errors import ConfigError
from lmx.hf.convert import from_hf_tensors, model_config_from_hf, stack_layers
from lmx.hf.safetensors_io import read_safetensors
from lmx.train.setup import setup_training
from lmx.train.state import TrainState


def _tokenizer_file(hf_dir: Path) -> Path:
    """The checkpoint's tokenizer: tokenizer.json (with its config), else a SentencePiece model."""
    for name in ("tokenizer.json", "tokenizer.model"):
        if (hf_dir / name).is_file():
            return hf_dir / name
    raise ConfigError(f"{hf_dir}: no tokenizer.json or tokenizer.model (lmx needs the model's tokenizer)")


def import_hf(hf_dir: str | Path, run_dir: str | Path, seq_len: int = 1024, log=print) -> Path:
    """Writes the lmx run directory `run_dir` (new, or empty) for the checkpoint in `hf_dir`.

    `seq_len` is the run's ``data.seq_len`` (capped at the model's context).
    """
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ConfigError(f"{run_dir}: exists and is not empty; import into a new directory")
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{hf_dir}: no config.json (not a transformers checkpoint directory)")
    model_cfg = model_config_from_hf(json.loads(config_path.read_text()), str(config_path))
    tokenizer_source = _tokenizer_file(hf_dir)
    params = from_hf_tensors(read_safetensors(hf_dir), model_cfg, str(hf_dir))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), stack_layers(params, model_cfg.n_layers))

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        names = [tokenizer_source.name]
        if tokenizer_source.suffix == ".json" and (hf_dir / "tokenizer_config.json").is_file():
            names.append("tokenizer_config.json")
        for name in names:
            shutil.copyfile(hf_dir / name, staging / name)
        tokenizer = load_tokenizer(staging / tokenizer_source.name)  # fails early on an unreadable one
        if tokenizer.vocab_size > model_cfg.vocab_size:
            raise ConfigError(
                f"{hf_dir}: its tokenizer has {tokenizer.vocab_size} ids, the model {model_cfg.vocab_size}"
            )
        cfg = Config(
            name=hf_dir.name,
            model=model_cfg,
            data=DataConfig(
                seq_len=min(seq_len, model_cfg.max_seq_len),
                tokenizer=str((run_dir / tokenizer_source.name).absolute()),
            ),
        )
        write_checkpoint(cfg, params, staging, {"imported_from": str(hf_dir.absolute())})
        (staging / "config.json").write_text(cfg.to_json() + "\n")
        if run_dir.exists():
            run_dir.rmdir()
        staging.rename(run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    count = sum(a.size for a in jax.tree.leaves(params))
    log(
        f"imported {hf_dir} ({count:,} parameters, {model_cfg.n_layers} layers, d_model {model_cfg.d_model}) "
        f"as {run_dir} (step 0)"
    )
    return run_dir


def write_checkpoint(cfg: Config, params: Any, run_dir: Path, meta: dict[str, Any] | None = None) -> None:
    """A step-0 checkpoint in `run_dir`, as `lmx train` saves one: `params` (host arrays in the layout
    of `cfg.model`) and a fresh optimizer state; `meta` is added to the checkpoint's metadata."""
    setup = setup_training(cfg, jax.devices()[:1], init=False)
    on_device = jax.device_put(params, setup.shardings.params)
    opt_state = jax.jit(setup.optimizer.init, out_shardings=setup.shardings.opt_state)(on_device)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=on_device,
        opt_state=opt_state,
        rng=jax.random.key_data(jax.random.key(cfg.train.seed)),
        skipped=jnp.zeros((), jnp.int32),
    )
    meta = {
        "step": 0,
        "tokens_seen": 0,
        "train_time_s": 0.0,
        "mesh": dict(setup.mesh.shape),
        "processes": 1,
        "config": cfg.to_dict(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(meta or {}),
    }
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.checkpoint, log=lambda _: None)
    try:
        checkpoints.save(0, state, meta)
        checkpoints.wait()
    finally:
        checkpoints.close()
