"""Reading a finished (or running) run directory back: its config, tokenizer and trained parameters.

Used by everything that starts from a trained model: evaluation, generation, and post-training
(`objective.init_from`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from lmx.config import Config
from lmx.data.tokenizer import Tokenizer
from lmx.errors import CheckpointError, ConfigError, DataError
from lmx.train.setup import TrainSetup, setup_training


@dataclasses.dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    setup: TrainSetup  # mesh, model, shardings (no state initialised)
    step: int
    params: Any  # sharded over setup.mesh by the run's rules
    tokenizer: Tokenizer | None  # None when the run directory holds no tokenizer.model

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise DataError(f"{self.run_dir}: no tokenizer.model (needed to encode or decode text)")
        return self.tokenizer


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.json)")
    return Config.from_json(path.read_text())


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
    from lmx.checkpoint import Checkpoints

    run_dir = Path(run_dir)
    cfg = cfg or read_run_config(run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    if not checkpoint_dir.is_dir() or not any(p.name.isdigit() for p in checkpoint_dir.iterdir()):
        raise CheckpointError(f"{run_dir}: no checkpoint to load (train it first, or check the path)")
    if devices is None:
        devices = devices_for(cfg)
    setup = setup_training(cfg, devices, init=False)
    checkpoints = Checkpoints(checkpoint_dir, cfg.checkpoint, log=lambda _: None)
    try:
        step, state = checkpoints.restore_state(setup.abstract_state, step)
    finally:
        checkpoints.close()
    tokenizer_path = run_dir / "tokenizer.model"
    tokenizer = Tokenizer.load(tokenizer_path) if tokenizer_path.is_file() else None
    return LoadedRun(run_dir, cfg, setup, step, state.params, tokenizer)
