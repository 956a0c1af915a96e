"""What a run trains on and how it is evaluated, by objective.

The training loop (lmx.train.loop) is the same for every objective; a task gives it the data:
batches for training (a Grain iterator whose state is checkpointed), the shapes of a batch, the
held-out evaluation, and the extra entries of ``summary.json``.

- `PretrainTask`: windows of the prepared corpus; validation loss, perplexity and bits per byte.
- `ChatTask` (``sft``, ``preference``, ``reward_model``): chat JSONL (lmx.data.chat) encoded with the
  tokenizer of the run it starts from; evaluation of the objective's own metrics on held-out files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.config import Config
from lmx.data.chat import ChatStats, ChatTemplate
from lmx.data.preference import PreferencePair, pair_record, preference_batches, read_preference
from lmx.data.prepare import ensure_prepared, load_split
from lmx.data.pretrain import pretrain_batches
from lmx.data.sft import read_sft, sequence_record, sft_batches
from lmx.data.tokenizer import Tokenizer
from lmx.errors import ConfigError, DataError
from lmx.evaluate import config_eval_batches, eval_batch_size, eval_batches, evaluate, make_eval_step, unigram_loss
from lmx.parallel.partitioner import partitioned
from lmx.parallel.rules import Rules
from lmx.train.objectives import OBJECTIVES, max_sequence_tokens
from lmx.train.preference_losses import NEEDS_REFERENCE
from lmx.train.setup import TrainSetup
from lmx.train.steps import Batch, LossFn, means_from_sums, sharded_sums, step_batch_sharding

BatchSpec = dict[str, tuple[tuple[int, ...], np.dtype]]  # key -> (global shape, dtype)

ROW_KEYS = {
    "inputs": np.int32,
    "targets": np.int32,
    "segment_ids": np.int32,
    "positions": np.int32,
    "loss_mask": np.float32,
}


class Task(Protocol):
    tokenizer: Tokenizer | None  # copied into the run directory
    batch_spec: BatchSpec
    tokens_per_step: int  # tokens the model processes per step (throughput and MFU)

    def train_batches(self) -> grain.IterDataset: ...

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]: ...

    def describe(self, metrics: Mapping[str, float]) -> str: ...

    def summary(self) -> dict[str, Any]: ...


def row_spec(batch: int, seq_len: int, prefix: str = "") -> BatchSpec:
    return {prefix + k: ((batch, seq_len), np.dtype(d)) for k, d in ROW_KEYS.items()}


class PretrainTask:
    """Windows of the prepared corpus (prepared, and its tokenizer trained, on first use)."""

    def __init__(self, cfg: Config, setup: TrainSetup, log: Callable[[str], None] = print) -> None:
        self.cfg, self.setup = cfg, setup
        self.tokenizer, self.prepared_dir, self.data_meta = ensure_prepared(cfg.data, cfg.model.vocab_size, log)
        check_vocab(cfg, self.tokenizer)
        self.batch_spec = row_spec(cfg.train.batch_size, cfg.data.seq_len)
        self.tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
        self._eval_step: Callable | None = None

    def train_batches(self) -> grain.IterDataset:
        cfg = self.cfg
        return pretrain_batches(
            self.prepared_dir,
            "train",
            cfg.data.seq_len,
            cfg.train.batch_size,
            seed=cfg.train.seed,
            packing=cfg.data.packing,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            num_threads=cfg.data.loader_threads,
        )

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        cfg, mesh = self.cfg, self.setup.mesh
        if self._eval_step is None:
            byte_lengths = self.tokenizer.byte_lengths(cfg.model.vocab_size)
            self._eval_step = make_eval_step(self.setup.model, mesh, cfg.mesh.rules, byte_lengths)
        batches = config_eval_batches(cfg, mesh, self.prepared_dir, "validation", max_batches)
        return evaluate(self._eval_step, params, batches, step_batch_sharding(mesh)).to_dict()

    def describe(self, m: Mapping[str, float]) -> str:
        return (
            f"validation loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, "
            f"{m['bits_per_byte']:.4f} bits/byte over {int(m['tokens']):,} tokens"
        )

    def summary(self) -> dict[str, Any]:
        train_tokens, _, _ = load_split(self.prepared_dir, "train")
        val_tokens, _, _ = load_split(self.prepared_dir, "validation")
        return {
            "unigram_loss": unigram_loss(train_tokens, val_tokens, self.cfg.model.vocab_size),
            "validation_utf8_bytes": self.data_meta["splits"]["validation"]["utf8_bytes"],
        }


def check_vocab(cfg: Config, tokenizer: Tokenizer) -> None:
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size}: smaller than the tokenizer's {tokenizer.vocab_size} ids"
        )


def chat_tokenizer(cfg: Config) -> Tokenizer:
    """The tokenizer of a post-training run: ``data.tokenizer`` if set, else the init_from run's."""
    from lmx.train.init_from import resolve_init_from

    if cfg.data.tokenizer:
        return Tokenizer.load(cfg.data.tokenizer)
    if not cfg.objective.init_from:
        raise ConfigError(
            f"objective.kind={cfg.objective.kind!r}: set objective.init_from (its run's tokenizer is used) "
            "or data.tokenizer"
        )
    path = resolve_init_from(cfg.objective.init_from).run_dir / "tokenizer.model"
    if not path.is_file():
        raise DataError(f"objective.init_from={cfg.objective.init_from!r}: {path} does not exist")
    return Tokenizer.load(path)


class Records:
    """Examples as indexable batch records (the sequence `eval_batches` reads)."""

    def __init__(self, n: int, record: Callable[[int], dict[str, np.ndarray]]) -> None:
        self.n, self.record = n, record

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.record(int(i))


def make_objective_eval_step(loss_fn: LossFn, mesh: Mesh, rules: Rules) -> Callable[..., dict[str, jax.Array]]:
    """Compiled ``(params, batch, frozen=None) -> {loss, stats...}`` sums over a global batch."""

    def sums(params: Any, batch: Batch, *frozen: Any) -> dict[str, jax.Array]:
        loss, stats = loss_fn(params, batch, *frozen)
        return {"loss": loss, **stats}

    mapped = sharded_sums(sums, mesh, rules)

    def step(params: Any, batch: Batch, frozen: Any = None) -> dict[str, jax.Array]:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return mapped(params, batch, frozen)

    replicated = NamedSharding(mesh, PartitionSpec())
    return partitioned(jax.jit(step, in_shardings=(None, step_batch_sharding(mesh), None), out_shardings=replicated))


class ChatTask:
    """SFT examples or preference pairs from JSONL; see the module docstring.

    `reference` (the frozen reference parameters) is needed only to precompute reference log-probs
    (``objective.reference=precomputed``); with ``in_step`` the loop passes them to every step.
    """

    def __init__(
        self, cfg: Config, setup: TrainSetup, reference: Any = None, log: Callable[[str], None] = print
    ) -> None:
        self.cfg, self.setup, self.log = cfg, setup, log
        obj = cfg.objective
        self.tokenizer = chat_tokenizer(cfg)
        check_vocab(cfg, self.tokenizer)
        self.template = ChatTemplate(self.tokenizer)
        self.pad_id = self.template.pad_id
        self.kind = obj.kind
        self.examples: dict[str, list] = {}
        self.stats: dict[str, ChatStats] = {}
        for split, patterns in (("train", obj.train_files), ("eval", obj.eval_files)):
            if patterns:
                self.examples[split], self.stats[split] = self._read(patterns)
                log(f"{split} data {patterns}: {describe_stats(self.stats[split], self.kind)}")
        B, L = cfg.train.batch_size, cfg.data.seq_len
        self.reference_logps: dict[str, np.ndarray] = {}
        self.reference_files: dict[str, str] = {}
        if self.precomputed_reference:
            if reference is None:
                raise ValueError("precomputed reference log-probs need the reference parameters")
            self._precompute(reference)
        if self.kind == "sft":
            self.batch_spec = row_spec(B, L)
            self.tokens_per_step = B * L
        else:
            self.batch_spec = {**row_spec(B, L, "chosen_"), **row_spec(B, L, "rejected_")}
            self.batch_spec["prompt_length"] = ((B,), np.dtype(np.int32))
            if self.precomputed_reference:
                self.batch_spec["ref_chosen"] = self.batch_spec["ref_rejected"] = ((B,), np.dtype(np.float32))
            self.tokens_per_step = 2 * B * L
        self._eval_step: Callable | None = None

    @property
    def precomputed_reference(self) -> bool:
        obj = self.cfg.objective
        return self.kind == "preference" and NEEDS_REFERENCE[obj.loss] and obj.reference == "precomputed"

    def _read(self, patterns: str) -> tuple[list, ChatStats]:
        files = [p.strip() for p in patterns.split(",") if p.strip()]
        cfg = self.cfg
        if self.kind == "sft":
            return read_sft(files, self.template, cfg.data.seq_len, cfg.objective.truncation)
        return read_preference(
            files, self.template, cfg.data.seq_len, cfg.objective.truncation, max_sequence_tokens(cfg)
        )

    def _precompute(self, reference: Any) -> None:
        from lmx.train.init_from import resolve_init_from
        from lmx.train.reference_logps import cached_reference_logps, compute_reference_logps

        cfg, setup = self.cfg, self.setup
        source = resolve_init_from(cfg.objective.init_from)
        for split, patterns in (("train", cfg.objective.train_files), ("eval", cfg.objective.eval_files)):
            if split not in self.examples:
                continue
            pairs = self.examples[split]

            def compute(pairs: list[PreferencePair] = pairs) -> np.ndarray:
                return compute_reference_logps(
                    setup.model,
                    reference,
                    setup.mesh,
                    cfg.mesh.rules,
                    pairs,
                    cfg.data.seq_len,
                    self.pad_id,
                    eval_batch_size(cfg, setup.mesh),
                )

            values, path = cached_reference_logps(
                patterns, str(source.state_dir), cfg.data.seq_len, pairs, compute, self.log
            )
            self.reference_logps[split], self.reference_files[split] = values, str(path)

    def record(self, split: str, i: int) -> dict[str, np.ndarray]:
        example = self.examples[split][i]
        L = self.cfg.data.seq_len
        if self.kind == "sft":
            return sequence_record(example.prompt, example.response, L, self.pad_id)
        ref = self.reference_logps.get(split)
        return pair_record(example, L, self.pad_id, None if ref is None else tuple(ref[i]))

    def train_batches(self) -> grain.IterDataset:
        cfg = self.cfg
        kwargs = dict(
            seed=cfg.train.seed,
            pad_id=self.pad_id,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            num_threads=cfg.data.loader_threads,
        )
        examples = self.examples["train"]
        if len(examples) < cfg.train.batch_size:
            raise DataError(
                f"objective.train_files={cfg.objective.train_files!r}: {len(examples)} usable examples, fewer "
                f"than one batch (train.batch_size={cfg.train.batch_size})"
            )
        if self.kind == "sft":
            return sft_batches(examples, cfg.data.seq_len, cfg.train.batch_size, **kwargs)
        return preference_batches(
            examples, cfg.data.seq_len, cfg.train.batch_size, reference=self.reference_logps.get("train"), **kwargs
        )

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        """Means of the objective's loss and stats over the held-out examples ({} without any)."""
        if "eval" not in self.examples:
            return {}
        if self._eval_step is None:
            self._eval_step = objective_eval_step(self.cfg, self.setup)
        source = Records(len(self.examples["eval"]), lambda i: self.record("eval", i))
        return evaluate_objective(self._eval_step, self.cfg, self.setup.mesh, params, source, max_batches, frozen)

    def describe(self, m: Mapping[str, float]) -> str:
        return describe_objective_metrics(self.kind, m)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{split}_data": vars(stats) for split, stats in self.stats.items()}
        if self.reference_files:
            out["reference_logps"] = self.reference_files
        return out


def objective_eval_step(cfg: Config, setup: TrainSetup) -> Callable[..., dict[str, jax.Array]]:
    return make_objective_eval_step(OBJECTIVES[cfg.objective.kind](setup.model, cfg), setup.mesh, cfg.mesh.rules)


def evaluate_objective(
    eval_step: Callable[..., dict[str, jax.Array]],
    cfg: Config,
    mesh: Mesh,
    params: Any,
    source: Records,
    max_batches: int = 0,
    frozen: Any = None,
) -> dict[str, float]:
    """Means of an objective's loss and stats over `source`'s records, in order (``examples`` or
    ``pairs`` counts them); sums stay on the devices until the end."""
    sharding = step_batch_sharding(mesh)
    totals = None
    for batch in eval_batches(
        source, eval_batch_size(cfg, mesh), max_batches, jax.process_index(), jax.process_count()
    ):
        batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
        out = eval_step(params, batch, frozen)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        raise DataError("no examples to evaluate")
    totals = {k: float(v) for k, v in jax.device_get(totals).items()}
    metrics = {k: float(v) for k, v in means_from_sums(totals.pop("loss"), totals).items()}
    sft = cfg.objective.kind == "sft"
    metrics["examples" if sft else "pairs"] = metrics.pop("tokens")
    if sft:
        metrics["perplexity"] = math.exp(min(metrics["loss"], 700.0))
    return metrics


def describe_objective_metrics(kind: str, m: Mapping[str, float]) -> str:
    if not m:
        return "no held-out data (objective.eval_files)"
    if kind == "sft":
        return f"held-out response loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}"
    if kind == "reward_model":
        return (
            f"held-out loss {m['loss']:.4f}, pairwise accuracy {m['accuracy']:.3f}, margin {m['margin']:.3f} "
            f"over {int(m['pairs'])} pairs"
        )
    return (
        f"held-out loss {m['loss']:.4f}, reward accuracy {m['reward_accuracy']:.3f}, "
        f"margin {m['margin']:.3f} over {int(m['pairs'])} pairs"
    )


def describe_stats(stats: ChatStats, kind: str) -> str:
    unit = "examples" if kind == "sft" else "pairs"
    return (
        f"{stats.kept:,} {unit} kept of {stats.records:,} records ({stats.truncated} truncated, "
        f"{stats.dropped} dropped as too long), {stats.prompt_tokens:,} prompt and "
        f"{stats.response_tokens:,} response tokens"
    )


def make_task(cfg: Config, setup: TrainSetup, reference: Any = None, log: Callable[[str], None] = print) -> Task:
    """The task of `cfg`'s objective."""
    if cfg.objective.kind == "pretrain":
        return PretrainTask(cfg, setup, log)
    return ChatTask(cfg, setup, reference, log)


def needs_reference_params(cfg: Config) -> bool:
    """Whether a run loads the frozen reference (init_from) parameters: in every step, or once."""
    obj = cfg.objective
    return obj.kind == "preference" and NEEDS_REFERENCE[obj.loss]
