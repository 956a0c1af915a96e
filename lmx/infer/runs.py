"""Reading a finished (or running) run directory back: its config, tokenizer and trained parameters.

Used by everything that starts from a trained model: evaluation, generation and the post-training
evaluators. Only the parameters are read (the optimizer state stays on disk), straight into the
shardings of a mesh built from the run's config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh

from lmx.checkpoint import saved_steps
from lmx.checkpoint.init_from import restore_params
from lmx.config import Config, load_config
from lmx.data.tokenizer import Tokenizer, find_tokenizer, load_tokenizer
from lmx.errors import CheckpointError, ConfigError, DataError
from lmx.objectives.registry import objective_of  # importing lmx.objectives registers the built-ins
from lmx.parallel import make_mesh
from lmx.parallel.rules import abstract_params


@dataclasses.dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    mesh: Mesh
    model: nn.Module  # the objective's model (a RewardModel for a reward-model run)
    step: int
    params: Any  # sharded over `mesh` by the run's rules
    tokenizer: Tokenizer | None  # None when the run directory holds no tokenizer

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise DataError(f"{self.run_dir}: no tokenizer.model or tokenizer.json (needed to encode or decode text)")
        return self.tokenizer

    def abstract_params(self) -> Any:
        """The parameters' shapes and shardings (targets for loading other parameters alike)."""
        return abstract_params(self.model, self.mesh, self.cfg.mesh.rules, self.cfg.data.seq_len)


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json)")
    return load_config(path)


def devices_for(cfg: Config) -> list[jax.Device]:
    """The devices to load a run onto: all of them, or the first ones when the run's mesh is fully
    sized and smaller (a run trained on 1 device, evaluated on a machine with 8)."""
    devices = jax.devices()
    wanted = math.prod(cfg.mesh.shape)
    if -1 not in cfg.mesh.shape and wanted < len(devices):
        return devices[:wanted]
    return devices


def load_run(
    run_dir: str | Path, step: int | None = None, devices: Sequence[jax.Device] | None = None, cfg: Config | None = None
) -> LoadedRun:
    """The run's parameters at `step` (the latest checkpoint by default), on a mesh built from its
    config (or `cfg`, e.g. with another mesh) over `devices` (by default `devices_for`). Raises
    CheckpointError when there is no checkpoint."""
    run_dir = Path(run_dir)
    cfg = cfg or read_run_config(run_dir)
    steps = saved_steps(run_dir / "checkpoints")
    if not steps:
        raise CheckpointError(f"{run_dir}: no checkpoint to load (train it first, or check the path)")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise CheckpointError(f"{run_dir / 'checkpoints'}: no checkpoint for step {step} (have {steps})")
    mesh = make_mesh(cfg.mesh, devices if devices is not None else devices_for(cfg))
    model = objective_of(cfg).make_model(cfg)
    target = abstract_params(model, mesh, cfg.mesh.rules, cfg.data.seq_len)
    state_dir = run_dir / "checkpoints" / str(step) / "state"
    params, _ = restore_params(state_dir, target, str(run_dir))
    tokenizer_path = find_tokenizer(run_dir)
    tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
    return LoadedRun(run_dir, cfg, mesh, model, step, params, tokenizer)
