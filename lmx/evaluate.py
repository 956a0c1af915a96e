"""Held-out evaluation: loss, perplexity and bits per byte over a prepared split.

Bits per byte divide the summed next-token loss (in bits) by the UTF-8 bytes of exactly the tokens
that were predicted (each id's byte length comes from the tokenizer), so it does not depend on the
tokenizer and runs with different vocabularies compare on one scaling plot. The evaluation step is
pmap-style like the train step: each data shard sums its loss, weight and bytes, then a psum.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.config import Config
from lmx.data.corpus import Corpus, Split
from lmx.data.pretrain import Packing, TokenWindows
from lmx.data.tokenizer import Tokenizer
from lmx.errors import ConfigError, DataError
from lmx.parallel.partitioner import partitioned
from lmx.parallel.rules import Rules
from lmx.train.losses import cross_entropy_sums
from lmx.train.steps import DATA_AXIS, Batch, sharded_sums, step_batch_sharding

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


def eval_batches(
    source: TokenWindows,
    global_batch: int,
    max_batches: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The windows of `source` in order, `global_batch // process_count` per process and batch.

    All batches have one shape (one compilation): the last is padded with rows of zero weight.
    `max_batches` > 0 stops after that many (always the same ones, so evaluations compare).
    """
    per_process = global_batch // process_count
    n_batches = -(-len(source) // global_batch)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    ds = grain.MapDataset.range(len(source))[process_index::process_count].map(source.__getitem__)
    ds = ds.batch(per_process, drop_remainder=False)
    for i in range(min(n_batches, len(ds))):
        batch = ds[i]
        rows = len(next(iter(batch.values())))
        if rows < per_process:
            pad = per_process - rows
            batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
        yield batch


def eval_batch_size(cfg: Config, mesh: Mesh) -> int:
    """The global evaluation batch (``eval.batch_size``, else ``train.batch_size``), checked to
    split evenly over the mesh's data axis and the processes."""
    size = cfg.eval.batch_size or cfg.train.batch_size
    if size % (mesh.shape[DATA_AXIS] * jax.process_count()):
        raise ConfigError(
            f"eval.batch_size={size}: must be divisible by the mesh data size ({mesh.shape[DATA_AXIS]}) "
            f"and the processes ({jax.process_count()})"
        )
    return size


def config_eval_batches(
    cfg: Config, mesh: Mesh, prepared_dir: str | Path, split: Split, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of a prepared split with a run config's sequence length, packing and batch
    size, for this process."""
    return source_eval_batches(
        cfg, mesh, TokenWindows(prepared_dir, split, cfg.data.seq_len, cfg.data.packing), max_batches
    )


def source_eval_batches(
    cfg: Config, mesh: Mesh, source: TokenWindows, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """`eval_batches` of any windows with a run config's batch size, for this process."""
    return eval_batches(source, eval_batch_size(cfg, mesh), max_batches, jax.process_index(), jax.process_count())


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
    return partitioned(jax.jit(step, in_shardings=(None, step_batch_sharding(mesh)), out_shardings=replicated))


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
    return result_from_sums(float(totals["loss"]), float(totals["tokens"]), float(totals["bytes"]))


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


def text_windows(spec: str, tokenizer: Tokenizer, seq_len: int, packing: Packing) -> TokenWindows:
    """Windows of every document of a corpus spec (``text:GLOB``, ``jsonl:GLOB@FIELD``, ``stdlib``),
    tokenized as in training: each document followed by EOS."""
    from lmx.data.prepare import encode_documents

    docs = [d.text for d in Corpus.parse(spec).documents(None)]
    tokens, lengths = encode_documents(tokenizer, docs, np.dtype(np.int32))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenWindows.from_tokens(tokens, offsets, seq_len, packing, f"corpus {spec!r}")


def token_file_windows(path: str | Path, vocab_size: int, seq_len: int) -> TokenWindows:
    """Windows of a 1-D integer array of token ids in a ``.npy`` file, read as one stream."""
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read a .npy token file ({e})") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array of token ids, got {tokens.dtype} {tokens.shape}")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise DataError(f"{path}: token ids must lie in [0, {vocab_size}), found [{tokens.min()}, {tokens.max()}]")
    return TokenWindows.from_tokens(tokens, np.array([0, len(tokens)]), seq_len, "concat", str(path))


def evaluate_run(
    run_dir: str | Path,
    split: Split = "validation",
    max_batches: int = 0,
    step: int | None = None,
    text: str | None = None,
    tokens_file: str | Path | None = None,
) -> tuple[int, EvalResult]:
    """Evaluates a run directory's checkpoint (the latest by default) with the run's own config:
    on a split of its corpus, or on any text (`text`, a corpus spec) or token file (`tokens_file`).

    Returns ``(step, EvalResult)``.
    """
    from lmx.data.prepare import ensure_prepared
    from lmx.runs import load_run

    run = load_run(run_dir, step)
    cfg, mesh = run.cfg, run.setup.mesh
    if text is not None or tokens_file is not None:
        tokenizer = run.require_tokenizer()
        if tokens_file is not None:
            source = token_file_windows(tokens_file, cfg.model.vocab_size, cfg.data.seq_len)
        else:
            source = text_windows(text, tokenizer, cfg.data.seq_len, cfg.data.packing)
        batches = source_eval_batches(cfg, mesh, source, max_batches)
    else:
        tokenizer, prepared_dir, _ = ensure_prepared(cfg.data, cfg.model.vocab_size)
        batches = config_eval_batches(cfg, mesh, prepared_dir, split, max_batches)
    eval_step = make_eval_step(run.setup.model, mesh, cfg.mesh.rules, tokenizer.byte_lengths(cfg.model.vocab_size))
    return run.step, evaluate(eval_step, run.params, batches, step_batch_sharding(mesh))
