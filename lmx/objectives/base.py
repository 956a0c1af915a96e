"""What an objective is: a config section, a model, a pure loss, data and evaluation (one record).

The trainer (`lmx.train`) and the evaluators (`lmx.infer`) know objectives only through `Objective`
and `Task`; each objective module (`pretrain`, `sft`, `preference`, `reward_model`, or one of a
user's) builds them and registers itself (`lmx.objectives.registry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import flax.linen as nn
import grain
import jax
import numpy as np
from jax.sharding import Mesh

from lmx.config import Config, ObjectiveConfig
from lmx.data.tokenizer import Tokenizer
from lmx.errors import ConfigError, LossError
from lmx.model import Transformer

Array = jax.Array
# (params, batch) -> (loss sum, stats sums). stats must hold "weight", the loss's denominator: the
# step divides every sum by the weight summed over all shards and micro-batches (exact global means).
# Objectives with a frozen model (a preference reference) take (params, batch, frozen params).
LossFn = Callable[..., tuple[Array, dict[str, Array]]]
# Once per step before the updates, without gradients: (params, batch, frozen or None) -> (batch
# with what the updates need added, metrics).
Prepare = Callable[[Any, Mapping[str, Array], Any], tuple[Mapping[str, Array], dict[str, Array]]]
BatchSpec = dict[str, tuple[tuple[int, ...], np.dtype]]  # key -> (global shape, dtype)
Log = Callable[[str], None]
# Frozen reference parameters (objective.init_from's): none; passed to every step as a third
# argument; or run once over the data before training (stored beside it).
Reference = Literal["none", "in_step", "precomputed"]


class Task(Protocol):
    """What a run trains on and how it is evaluated; built by `Objective.make_task`."""

    tokenizer: Tokenizer | None  # copied into the run directory
    batch_spec: BatchSpec
    tokens_per_step: int  # tokens the model processes per step (throughput and MFU)

    def train_batches(self, start_step: int = 0) -> grain.IterDataset:
        """This process's rows of the global batches from `start_step` on (`lmx.data.pretrain.record_batches`)."""
        ...

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]: ...

    def describe(self, metrics: Mapping[str, float]) -> str: ...

    def summary(self) -> dict[str, Any]: ...


# (cfg, mesh, model, frozen reference params or None, log) -> Task
MakeTask = Callable[[Config, Mesh, nn.Module, Any, Log], Task]


def language_model(cfg: Config) -> nn.Module:
    return Transformer(cfg.model)


def no_reference(cfg: Config) -> Reference:
    return "none"


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: every piece the trainer and the evaluators need, chosen by ``objective.kind``."""

    config_class: type[ObjectiveConfig]  # its config section; its KIND is the objective's name
    make_loss: Callable[[nn.Module, Config], LossFn]
    make_task: MakeTask
    describe: Callable[[Mapping[str, float]], str]  # one line for evaluation metrics
    make_model: Callable[[Config], nn.Module] = language_model
    reference: Callable[[Config], Reference] = no_reference
    generates: bool = True  # the model is a language model: generation and exact match apply
    scores_pairs: bool = False  # `lmx eval --pairs` scores held-out preference pairs with it
    # The model reads every token of an example, EOS included (a scorer), rather than predicting
    # the next one: an example then holds at most seq_len tokens instead of seq_len + 1.
    reads_whole_sequences: bool = False
    # Online objectives (RL) make each step's batch from the current parameters: the task's
    # `next_batch(params, step)` replaces `train_batches`. `make_prepare` (model, cfg, mesh) gives
    # the step's once-per-batch pass before its `updates(cfg)` optimizer updates (`lmx.train.steps`).
    online: bool = False
    make_prepare: Callable[[nn.Module, Config, Mesh], Prepare] | None = None
    updates: Callable[[Config], int] = lambda cfg: 1

    @property
    def kind(self) -> str:
        return self.config_class.KIND


def check_loss_output(output: Any) -> tuple[Array, dict[str, Array]]:
    """`output` of a loss function, checked against the contract of `LossFn` (at trace time)."""
    ok = isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], Mapping)
    if not ok:
        raise LossError(f"a loss function must return (loss_sum, stats), got {type(output).__name__}")
    if "weight" not in output[1]:
        raise LossError(
            f"a loss function's stats must hold 'weight', the loss's denominator (the step divides every sum by "
            f"its global total), got stats {sorted(output[1])}; e.g. stats['weight'] = the number of target tokens"
        )
    return output


ROW_KEYS = {
    "inputs": np.int32,
    "targets": np.int32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "loss_mask": np.float32,
}


def row_spec(batch: int, seq_len: int, prefix: str = "") -> BatchSpec:
    return {prefix + k: ((batch, seq_len), np.dtype(d)) for k, d in ROW_KEYS.items()}


def check_vocab(cfg: Config, tokenizer: Tokenizer) -> None:
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size}: smaller than the tokenizer's {tokenizer.vocab_size} ids"
        )
