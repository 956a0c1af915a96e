"""From a Config to everything a pretraining run computes with: mesh, model, optimizer, state, step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from lmx.config import Config
from lmx.errors import ConfigError
from lmx.model.parametrization import parameter_factors
from lmx.objectives.base import LossFn
from lmx.objectives.registry import objective_of
from lmx.parallel import make_mesh
from lmx.parallel.mapping import DATA_AXIS
from lmx.train.optim import make_optimizer, make_schedule
from lmx.train.state import TrainState, init_train_state, train_state_shapes
from lmx.train.steps import make_train_step


@dataclasses.dataclass
class TrainSetup:
    cfg: Config
    mesh: Mesh
    model: nn.Module  # the objective's model (`Objective.make_model`)
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    state: TrainState | None  # None until `init_state()` (a run that restores never initialises)
    shardings: TrainState
    abstract_state: TrainState  # ShapeDtypeStructs carrying the shardings: restore targets

    def init_state(self) -> TrainState:
        """Fresh parameters and optimizer state from ``train.seed``, straight into their shardings."""
        self.state, _ = init_train_state(
            self.model, self.optimizer, self.mesh, self.cfg.mesh.rules, self.cfg.train.seed, self.cfg.data.seq_len
        )
        return self.state

    def make_step(
        self, loss_fn: LossFn | None = None, with_frozen: bool = False
    ) -> Callable[..., tuple[TrainState, dict]]:
        """The compiled step for this setup: the objective's loss unless one is given.

        `with_frozen`: the step takes a frozen copy of the parameters (the preference reference,
        sharded like the trained ones) as its third argument.
        """
        objective = objective_of(self.cfg)
        prepare = objective.make_prepare(self.model, self.cfg, self.mesh) if objective.make_prepare else None
        return make_train_step(
            loss_fn or default_loss(self),
            self.optimizer,
            self.schedule,
            self.mesh,
            self.cfg.mesh.rules,
            self.shardings,
            self.cfg.train.micro_batches,
            self.shardings.params if with_frozen else None,
            prepare,
            objective.updates(self.cfg),
        )


def check_batch_fits_mesh(cfg: Config, mesh: Mesh) -> None:
    """Every data shard must get whole micro-batches of whole sequences."""
    data = mesh.shape[DATA_AXIS]
    if cfg.train.batch_size % (data * cfg.train.micro_batches):
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size}: must be divisible by mesh data size ({data}) x "
            f"train.micro_batches ({cfg.train.micro_batches})"
        )


def setup_training(cfg: Config, devices: Sequence[jax.Device] | None = None, init: bool = True) -> TrainSetup:
    """Builds the mesh and, with `init`, initialises the sharded train state (no step compiled yet)."""
    mesh = make_mesh(cfg.mesh, devices)
    check_batch_fits_mesh(cfg, mesh)
    objective = objective_of(cfg)
    model = objective.make_model(cfg)
    # Online RL makes several optimizer updates per step: the schedule counts updates.
    schedule = make_schedule(cfg.optim, cfg.train.steps * objective.updates(cfg))
    optimizer = make_optimizer(cfg.optim, schedule, parameter_factors(cfg.model, model))
    abstract, shardings = train_state_shapes(model, optimizer, mesh, cfg.mesh.rules, cfg.data.seq_len)
    setup = TrainSetup(cfg, mesh, model, schedule, optimizer, None, shardings, abstract)
    if init:
        setup.init_state()
    return setup


def default_loss(setup: TrainSetup) -> LossFn:
    """The loss of the config's objective (next-token cross-entropy for pretraining)."""
    return objective_of(setup.cfg).make_loss(setup.model, setup.cfg)


def synthetic_batch(rng: np.random.Generator, batch_size: int, seq_len: int, vocab_size: int) -> dict[str, np.ndarray]:
    """Random tokens in the batch layout of the pretraining step (smoke runs and benchmarks)."""
    tokens = rng.integers(0, vocab_size, (batch_size, seq_len + 1), dtype=np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((batch_size, seq_len), np.int32),
        "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len)).copy(),
    }
