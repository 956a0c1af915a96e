"""Held-out evaluation of a language model: loss, perplexity and bits per byte over token windows.

Bits per byte divide the summed next-token loss (in bits) by the UTF-8 bytes of exactly the tokens
that were predicted (each id's byte length comes from the tokenizer), so it does not depend on the
tokenizer and runs with different vocabularies compare on one scaling plot. The evaluation step is
pmap-style like the train step: each data shard sums its loss, weight and bytes, then a psum.
Pretraining evaluates with it during training; `lmx.infer.evaluate` on any text or token file.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.config import Config
from lmx.data.corpus import Split
from lmx.data.eval_batches import eval_batches
from lmx.data.pretrain import TokenWindows
from lmx.errors import DataError
from lmx.objectives.losses import cross_entropy_sums
from lmx.parallel.mapping import Batch, eval_batch_size, process_rows, sharded_sums, step_batch_sharding
from lmx.parallel.rules import Rules

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float  # mean next-token cross-entropy, nats
    perplexity: float
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of the predicted tokens

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        return {prefix + k: v for k, v in dataclasses.asdict(self).items()}


def config_eval_batches(
    cfg: Config, mesh: Mesh, prepared_dir: str | Path, split: Split, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of a prepared split with a run config's sequence length, packing and batch
    size, for this process; its token ids are checked against ``model.vocab_size``."""
    windows = TokenWindows(prepared_dir, split, cfg.data.seq_len, cfg.data.packing, cfg.model.vocab_size)
    return source_eval_batches(cfg, mesh, windows, max_batches)


def source_eval_batches(
    cfg: Config, mesh: Mesh, source: TokenWindows, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of any windows with a run config's batch size, for this process."""
    size = eval_batch_size(cfg, mesh)
    return eval_batches(source, size, max_batches, process_rows(step_batch_sharding(mesh), size))


def make_eval_step(
    model: nn.Module, mesh: Mesh, rules: Rules, byte_lengths: np.ndarray
) -> Callable[[Any, Batch], dict[str, Array]]:
    """Compiled ``(params, batch) -> {loss, tokens, bytes}`` sums over the global batch.

    Batches are those of the pretraining pipeline; padded rows (segment id 0) weigh nothing.
    """
    lengths = jnp.asarray(byte_lengths, jnp.int32)

    def sums(params: Any, batch: Batch) -> dict[str, Array]:
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        weights = batch["loss_mask"] * (batch["segment_ids"] > 0)
        loss, stats = cross_entropy_sums(logits, batch["targets"], weights)
        byte_count = jnp.sum(jnp.where(weights > 0, lengths[batch["targets"]], 0))
        return {"loss": loss, "tokens": stats["weight"], "bytes": byte_count}

    mapped = sharded_sums(sums, mesh, rules)

    def step(params: Any, batch: Batch) -> dict[str, Array]:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return mapped(params, batch)

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, in_shardings=(None, step_batch_sharding(mesh)), out_shardings=replicated)


def evaluate(
    eval_step: Callable[[Any, Batch], dict[str, Array]],
    params: Any,
    batches: Iterator[dict[str, np.ndarray]],
    batch_sharding: NamedSharding,
) -> EvalResult:
    """Runs `eval_step` over `batches` (host batches of this process) and reduces the sums.

    The sums stay on the devices until the end: one host transfer per evaluation.
    """
    totals = None
    for batch in batches:
        batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in batch.items()}
        out = eval_step(params, batch)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        raise ValueError("evaluate: no batches")
    totals = jax.device_get(totals)
    check_finite_loss(float(totals["loss"]), float(totals["tokens"]), "tokens")
    return result_from_sums(float(totals["loss"]), float(totals["tokens"]), float(totals["bytes"]))


def check_finite_loss(loss_sum: float, count: float, unit: str) -> None:
    """Raises DataError when an evaluation's summed loss is NaN or infinite: a number such as
    ``loss nan`` would read as a result (and land in a metrics file) when it is a fault."""
    if not math.isfinite(loss_sum):
        raise DataError(
            f"the evaluation of {int(count):,} {unit} gave a non-finite loss ({loss_sum}); likely causes: token ids "
            "outside the model's vocabulary in the evaluated data, or non-finite parameters (a diverged or damaged "
            "checkpoint)"
        )


def result_from_sums(loss_sum: float, tokens: float, byte_count: float) -> EvalResult:
    loss = loss_sum / max(tokens, 1.0)
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_byte=loss_sum / math.log(2) / max(byte_count, 1.0),
        tokens=int(tokens),
        bytes=int(byte_count),
    )


def unigram_loss(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of `eval_tokens` under the add-one smoothed unigram distribution
    of `train_tokens`: the loss of a model that ignores context, a floor a trained model must beat."""
    counts = np.bincount(np.asarray(train_tokens), minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[np.asarray(eval_tokens)].mean())
