"""`lmx import hf`: a local transformers checkpoint as an lmx run directory.

Llama, Mistral (without a sliding window) and Qwen3 models map exactly onto lmx's decoder
(`lmx.hf.convert`); anything else fails naming the feature. The run directory written here is what
`lmx train` leaves: ``config.json``, a step-0 checkpoint (the parameters in float32; no optimizer
state) and the tokenizer, so `lmx eval`, `lmx generate`, `lmx export hf` and
``objective.init_from`` all take it. It is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lmx import atomic
from lmx.checkpoint import Checkpoints
from lmx.config import Config, DataConfig
from lmx.data.tokenizer import load_tokenizer
from lmx.errors import ConfigError
from lmx.hf.convert import from_hf_tensors, model_config_from_hf, stack_layers
from lmx.hf.safetensors_io import read_safetensors


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _tokenizer_file(hf_dir: Path) -> Path:
    """The checkpoint's tokenizer: tokenizer.json (with its config), else a SentencePiece model."""
    for name in ("tokenizer.json", "tokenizer.model"):
        if (hf_dir / name).is_file():
            return hf_dir / name
    raise ConfigError(f"{hf_dir}: no tokenizer.json or tokenizer.model (lmx needs the model's tokenizer)")


def _tokenizer_config(hf_dir: Path, hf_config: dict[str, Any]) -> dict[str, Any]:
    """tokenizer_config.json, with the special tokens it lacks named from the ids in config.json or
    generation_config.json (some checkpoints name them only there)."""
    from tokenizers import Tokenizer as BackendTokenizer

    config = _read_json(hf_dir / "tokenizer_config.json") if (hf_dir / "tokenizer_config.json").is_file() else {}
    generation = _read_json(hf_dir / "generation_config.json") if (hf_dir / "generation_config.json").is_file() else {}
    try:
        backend = BackendTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise ConfigError(f"{hf_dir / 'tokenizer.json'}: cannot be read ({e})") from None
    for key in ("bos", "eos", "pad"):
        if config.get(f"{key}_token"):
            continue
        token_id = generation.get(f"{key}_token_id", hf_config.get(f"{key}_token_id"))
        if isinstance(token_id, list):  # several stop ids: the first is the end of a text
            token_id = token_id[0] if token_id else None
        if isinstance(token_id, int) and backend.id_to_token(token_id) is not None:
            config[f"{key}_token"] = backend.id_to_token(token_id)
    if not config.get("eos_token"):
        raise ConfigError(f"{hf_dir}: no eos_token in tokenizer_config.json nor eos_token_id in config.json")
    return config


def import_hf(hf_dir: str | Path, run_dir: str | Path, seq_len: int = 1024, log=print) -> Path:
    """Writes the lmx run directory `run_dir` (new, or empty) for the checkpoint in `hf_dir`.

    `seq_len` is the run's ``data.seq_len`` (capped at the model's context).
    """
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    atomic.require_new_directory(run_dir, "import")  # before reading any weights
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{hf_dir}: no config.json (not a transformers checkpoint directory)")
    hf_config = _read_json(config_path)
    model_cfg = model_config_from_hf(hf_config, str(config_path))
    tokenizer_source = _tokenizer_file(hf_dir)
    params = from_hf_tensors(read_safetensors(hf_dir), model_cfg, str(hf_dir))
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), stack_layers(params, model_cfg.n_layers))

    with atomic.new_directory(run_dir, "import") as staging:
        shutil.copyfile(tokenizer_source, staging / tokenizer_source.name)
        if tokenizer_source.suffix == ".json":
            config = _tokenizer_config(hf_dir, hf_config)
            (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
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
        write_params_checkpoint(cfg, params, staging, {"imported_from": str(hf_dir.absolute())})
        (staging / "config.json").write_text(cfg.to_json() + "\n")
    count = sum(a.size for a in jax.tree.leaves(params))
    log(
        f"imported {hf_dir} ({count:,} parameters, {model_cfg.n_layers} layers, d_model {model_cfg.d_model}) "
        f"as {run_dir} (step 0)"
    )
    return run_dir


def write_params_checkpoint(cfg: Config, params: Any, run_dir: Path, meta: dict[str, Any] | None = None) -> None:
    """A step-0 checkpoint of `params` alone (host arrays in the layout of `cfg.model`) in `run_dir`.

    Parameters only, as `lmx eval`, `lmx generate`, `lmx export hf` and ``objective.init_from`` read
    them: an optimizer state would triple the files of a large model for nothing (a run started from
    this one begins its own). The arrays stay on the host (a CPU device), whatever accelerator there
    is. `lmx train` refuses to resume such a checkpoint (``params_only`` in its metadata).
    """
    host = jax.local_devices(backend="cpu")[0]
    state = {"params": jax.device_put(params, host), "step": jax.device_put(jnp.zeros((), jnp.int32), host)}
    meta = {
        "step": 0,
        "params_only": True,
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
