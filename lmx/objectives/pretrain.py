"""Pretraining: next-token prediction on windows of the prepared corpus; validation loss, perplexity
and bits per byte. Its config section (`lmx.config.PretrainConfig`) has no fields: the data, model
and z-loss settings are the config's own sections."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import grain
from jax.sharding import Mesh

from lmx.config import Config, PretrainConfig
from lmx.data.prepare import ensure_prepared, load_split
from lmx.data.pretrain import pretrain_batches
from lmx.objectives.base import Array, Log, LossFn, Objective, check_vocab, row_spec
from lmx.objectives.lm_eval import config_eval_batches, evaluate, make_eval_step, unigram_loss
from lmx.objectives.losses import cross_entropy_sums
from lmx.objectives.registry import register
from lmx.parallel.mapping import Batch, process_rows, step_batch_sharding


def pretrain_loss(model: nn.Module, z_loss: float = 0.0) -> LossFn:
    """Next-token cross-entropy. Batches: inputs, targets, segment_ids, positions [, loss_mask]."""

    def loss_fn(params: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"], batch["positions"])
        weights = batch["loss_mask"] if "loss_mask" in batch else batch["segment_ids"] > 0
        return cross_entropy_sums(logits, batch["targets"], weights, z_loss)

    return loss_fn


class PretrainTask:
    """Windows of the prepared corpus (prepared, and its tokenizer trained, on first use)."""

    def __init__(self, cfg: Config, mesh: Mesh, model: nn.Module, log: Log = print) -> None:
        self.cfg, self.mesh, self.model = cfg, mesh, model
        self.tokenizer, self.prepared_dir, self.data_meta = ensure_prepared(cfg.data, cfg.model.vocab_size, log)
        check_vocab(cfg, self.tokenizer)
        self.batch_spec = row_spec(cfg.train.batch_size, cfg.data.seq_len)
        self.tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
        self._eval_step: Callable | None = None

    def train_batches(self, start_step: int = 0) -> grain.IterDataset:
        cfg = self.cfg
        return pretrain_batches(
            self.prepared_dir,
            "train",
            cfg.data.seq_len,
            cfg.train.batch_size,
            seed=cfg.train.seed,
            packing=cfg.data.packing,
            rows=process_rows(step_batch_sharding(self.mesh), cfg.train.batch_size),
            start_step=start_step,
            num_threads=cfg.data.loader_threads,
        )

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        cfg = self.cfg
        if self._eval_step is None:
            byte_lengths = self.tokenizer.byte_lengths(cfg.model.vocab_size)
            self._eval_step = make_eval_step(self.model, self.mesh, cfg.mesh.rules, byte_lengths)
        batches = config_eval_batches(cfg, self.mesh, self.prepared_dir, "validation", max_batches)
        return evaluate(self._eval_step, params, batches, step_batch_sharding(self.mesh)).to_dict()

    def describe(self, m: Mapping[str, float]) -> str:
        return describe_lm_metrics(m)

    def summary(self) -> dict[str, Any]:
        train_tokens, _, _ = load_split(self.prepared_dir, "train")
        val_tokens, _, _ = load_split(self.prepared_dir, "validation")
        return {
            "unigram_loss": unigram_loss(train_tokens, val_tokens, self.cfg.model.vocab_size),
            "validation_utf8_bytes": self.data_meta["splits"]["validation"]["utf8_bytes"],
        }


def describe_lm_metrics(m: Mapping[str, float]) -> str:
    return (
        f"validation loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, "
        f"{m['bits_per_byte']:.4f} bits/byte over {int(m['tokens']):,} tokens"
    )


PRETRAIN = register(
    Objective(
        config_class=PretrainConfig,
        make_loss=lambda model, cfg: pretrain_loss(model, cfg.train.z_loss),
        make_task=lambda cfg, mesh, model, reference, log: PretrainTask(cfg, mesh, model, log),
        describe=describe_lm_metrics,
    )
)
