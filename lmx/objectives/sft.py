"""Supervised fine-tuning: next-token cross-entropy on the response tokens of chat examples only,
normalised per token (every response token of the batch weighs the same) or per sequence (each
example's mean weighs the same, whatever its length)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np

from lmx.config.sections import DATACLASS
from lmx.data.chat import ChatStats
from lmx.data.sft import read_sft, sequence_record, sft_batches
from lmx.objectives.base import Array, LossFn, Objective, row_spec
from lmx.objectives.chat import ChatObjectiveConfig, ChatTask
from lmx.objectives.losses import cross_entropy_sums
from lmx.objectives.registry import register
from lmx.parallel.mapping import Batch


@dataclasses.dataclass(**DATACLASS)
class SFTConfig(ChatObjectiveConfig):
    KIND: ClassVar[str] = "sft"
    # Mean over all response tokens of the batch, or mean over sequences of their token mean.
    normalize: Literal["token", "sequence"] = "token"


def sft_loss(model: nn.Module, normalize: str = "token", z_loss: float = 0.0) -> LossFn:
    """Response-only cross-entropy over SFT batches (lmx.data.sft): per token or per sequence."""

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        weights_BxL = batch["loss_mask"].astype(jnp.float32)
        if normalize == "sequence":
            # Each row's tokens share a weight of 1 in total: the weight sum counts sequences.
            tokens_B = jnp.sum(weights_BxL, axis=1, keepdims=True)
            weights_BxL = weights_BxL / jnp.maximum(tokens_B, 1.0)
        return cross_entropy_sums(logits, batch["targets"], weights_BxL, z_loss)

    return loss_fn


class SFTTask(ChatTask):
    """SFT examples (prompt, response) as rows in the language model's layout."""

    unit = "examples"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        B, L = self.cfg.train.batch_size, self.cfg.data.seq_len
        self.batch_spec = row_spec(B, L)
        self.tokens_per_step = B * L

    def read(self, files: list[str]) -> tuple[list, ChatStats]:
        cfg = self.cfg
        return read_sft(files, self.template, cfg.data.seq_len, cfg.objective.truncation)

    def record(self, split: str, i: int) -> dict[str, np.ndarray]:
        example = self.examples[split][i]
        return sequence_record(example.prompt, example.response, self.cfg.data.seq_len, self.pad_id)

    def batches(self, examples: list, **kwargs: Any) -> grain.IterDataset:
        return sft_batches(examples, self.cfg.data.seq_len, self.cfg.train.batch_size, **kwargs)

    @property
    def weight_name(self) -> str:
        """What the loss's total weight counts: response tokens, or examples (per-sequence means)."""
        return "examples" if self.cfg.objective.normalize == "sequence" else "response_tokens"

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        metrics = super().evaluate(params, max_batches, frozen)
        if metrics:
            metrics["perplexity"] = math.exp(min(metrics["loss"], 700.0))
        return metrics


def describe_sft_metrics(m: Mapping[str, float]) -> str:
    if not m:
        return "no held-out data (objective.eval_files)"
    return f"held-out response loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}"


SFT = register(
    Objective(
        config_class=SFTConfig,
        make_loss=lambda model, cfg: sft_loss(model, cfg.objective.normalize, cfg.train.z_loss),
        make_task=lambda cfg, mesh, model, reference, log: SFTTask(cfg, mesh, model, SFT, log),
        describe=describe_sft_metrics,
    )
)
