"""What the chat objectives (SFT, preference, reward model) share: their config fields, the
tokenizer of the run they start from, held-out evaluation of their own loss, and a task skeleton
over chat JSONL (lmx.data.chat) that each objective completes with how it reads and batches rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.checkpoint.init_from import resolve_init_from
from lmx.config import Config, ObjectiveConfig
from lmx.config.sections import DATACLASS, fail
from lmx.data.chat import ChatStats, ChatTemplate
from lmx.data.eval_batches import eval_batches
from lmx.data.tokenizer import Tokenizer, find_tokenizer, load_tokenizer
from lmx.errors import ConfigError, DataError
from lmx.objectives.base import BatchSpec, Log, LossFn, Objective, check_vocab
from lmx.objectives.lm_eval import check_finite_loss
from lmx.parallel.mapping import (
    Batch,
    eval_batch_size,
    means_from_sums,
    process_rows,
    sharded_sums,
    step_batch_sharding,
)
from lmx.parallel.rules import Rules


@dataclasses.dataclass(**DATACLASS)
class ChatObjectiveConfig(ObjectiveConfig):
    """Fields of every objective trained on chat JSONL (lmx.data.chat formats).

    Post-training starts from ``init_from`` (a run directory, or one of its checkpoint step
    directories): its parameters only, with a fresh optimizer, and its tokenizer.
    """

    KIND: ClassVar[str] = ""
    init_from: str = ""
    train_files: str = ""  # JSONL glob(s), comma-separated
    eval_files: str = ""  # held-out JSONL: evaluated every eval.every_steps and at the end
    truncation: Literal["drop", "truncate"] = "drop"  # examples longer than data.seq_len

    def init_from_run(self) -> str:
        return self.init_from

    def __post_init__(self) -> None:
        if not self.train_files:
            fail("objective", "train_files", self.train_files, f"objective.kind={self.kind!r} needs JSONL files")


def chat_tokenizer(cfg: Config) -> Tokenizer:
    """The tokenizer of a post-training run: ``data.tokenizer`` if set, else the init_from run's."""
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    if not cfg.objective.init_from:
        raise ConfigError(
            f"objective.kind={cfg.objective.kind!r}: set objective.init_from (its run's tokenizer is used) "
            "or data.tokenizer"
        )
    run_dir = resolve_init_from(cfg.objective.init_from).run_dir
    path = find_tokenizer(run_dir)
    if path is None:
        raise DataError(f"objective.init_from={cfg.objective.init_from!r}: {run_dir} holds no tokenizer")
    return load_tokenizer(path)


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
    return jax.jit(step, in_shardings=(None, step_batch_sharding(mesh), None), out_shardings=replicated)


def objective_sums(
    eval_step: Callable[..., dict[str, jax.Array]],
    cfg: Config,
    mesh: Mesh,
    params: Any,
    source: Records,
    max_batches: int = 0,
    frozen: Any = None,
) -> dict[str, float]:
    """Sums of an objective's loss and stats (``weight`` included) over `source`'s records, in
    order; they stay on the devices until the end. Sums, not means, so that the sums of parts (the
    tasks of a file) add up to the whole's exactly."""
    sharding = step_batch_sharding(mesh)
    batch_size = eval_batch_size(cfg, mesh)
    totals = None
    for batch in eval_batches(source, batch_size, max_batches, process_rows(sharding, batch_size)):
        batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
        out = eval_step(params, batch, frozen)
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    if totals is None:
        raise DataError("no examples to evaluate")
    return {k: float(v) for k, v in jax.device_get(totals).items()}


def objective_means(cfg: Config, totals: Mapping[str, float], evaluated: int, count_name: str) -> dict[str, float]:
    """Means of `objective_sums`' sums over their weight, which is kept as `count_name`.
    `evaluated`: the records summed, for the error a non-finite loss raises
    (`lmx.objectives.lm_eval.check_finite_loss`)."""
    totals = dict(totals)
    check_finite_loss(totals["loss"], evaluated, count_name)
    metrics = {k: float(v) for k, v in means_from_sums(totals.pop("loss"), totals).items()}
    metrics[count_name] = metrics.pop("tokens")
    if not cfg.train.z_loss:  # as in the training rows: no z-loss term, no z-loss metric
        metrics.pop("z_loss", None)
    return metrics


def evaluate_objective(
    eval_step: Callable[..., dict[str, jax.Array]],
    cfg: Config,
    mesh: Mesh,
    params: Any,
    source: Records,
    max_batches: int = 0,
    frozen: Any = None,
    count_name: str = "examples",
) -> dict[str, float]:
    """Means of an objective's loss and stats over `source`'s records (`count_name` holds the
    loss's total weight). A non-finite summed loss raises DataError."""
    totals = objective_sums(eval_step, cfg, mesh, params, source, max_batches, frozen)
    batch_size = eval_batch_size(cfg, mesh)
    evaluated = min(len(source), max_batches * batch_size) if max_batches else len(source)
    return objective_means(cfg, totals, evaluated, count_name)


def trained_on_chat_template(objective: Objective) -> bool:
    """Whether `objective` trains on chat JSONL through the chat template (its config section is a
    `ChatObjectiveConfig`: SFT, preference, reward model, or a user's own), so that its model
    expects prompts rendered through that template (`lmx generate --chat`)."""
    return issubclass(objective.config_class, ChatObjectiveConfig)


class ChatTask:
    """Chat JSONL examples of one objective: read with the init_from run's tokenizer, served as
    Grain batches, and evaluated with the objective's own loss on the held-out files.

    A subclass says what an example is: `unit` (what the logs count), `read`, `record` (an example
    as batch rows), `batches` (the training pipeline) and its `batch_spec`.
    """

    unit = "examples"  # what a row is, in the logs

    @property
    def weight_name(self) -> str:
        """The evaluation metric that counts the loss's total weight."""
        return self.unit

    def __init__(self, cfg: Config, mesh: Mesh, model: nn.Module, objective: Objective, log: Log = print) -> None:
        self.cfg, self.mesh, self.model, self.objective, self.log = cfg, mesh, model, objective, log
        obj = cfg.objective
        self.tokenizer = chat_tokenizer(cfg)
        check_vocab(cfg, self.tokenizer)
        self.template = ChatTemplate(self.tokenizer)
        self.pad_id = self.template.pad_id
        self.examples: dict[str, list] = {}
        self.stats: dict[str, ChatStats] = {}
        for split, patterns in (("train", obj.train_files), ("eval", obj.eval_files)):
            if patterns:
                files = [p.strip() for p in patterns.split(",") if p.strip()]
                self.examples[split], self.stats[split] = self.read(files)
                log(f"{split} data {patterns}: {self.describe_stats(self.stats[split])}")
        self._eval_step: Callable | None = None

    batch_spec: BatchSpec
    tokens_per_step: int

    def read(self, files: list[str]) -> tuple[list, ChatStats]:
        raise NotImplementedError

    def record(self, split: str, i: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def batches(self, examples: list, **kwargs: Any) -> grain.IterDataset:
        raise NotImplementedError

    def train_batches(self, start_step: int = 0) -> grain.IterDataset:
        cfg = self.cfg
        examples = self.examples["train"]
        if len(examples) < cfg.train.batch_size:
            raise DataError(
                f"objective.train_files={cfg.objective.train_files!r}: {len(examples)} usable examples, fewer "
                f"than one batch (train.batch_size={cfg.train.batch_size})"
            )
        return self.batches(
            examples,
            seed=cfg.train.seed,
            pad_id=self.pad_id,
            rows=process_rows(step_batch_sharding(self.mesh), cfg.train.batch_size),
            start_step=start_step,
            num_threads=cfg.data.loader_threads,
        )

    def evaluate(self, params: Any, max_batches: int, frozen: Any = None) -> dict[str, float]:
        """Means of the objective's loss and stats over the held-out examples ({} without any)."""
        if "eval" not in self.examples:
            return {}
        if self._eval_step is None:
            loss_fn = self.objective.make_loss(self.model, self.cfg)
            self._eval_step = make_objective_eval_step(loss_fn, self.mesh, self.cfg.mesh.rules)
        source = Records(len(self.examples["eval"]), lambda i: self.record("eval", i))
        return evaluate_objective(
            self._eval_step, self.cfg, self.mesh, params, source, max_batches, frozen, self.weight_name
        )

    def describe(self, m: Mapping[str, float]) -> str:
        return self.objective.describe(m)

    def describe_stats(self, stats: ChatStats) -> str:
        return (
            f"{stats.kept:,} {self.unit} kept of {stats.records:,} records ({stats.truncated} truncated, "
            f"{stats.dropped} dropped as too long), {stats.prompt_tokens:,} prompt and "
            f"{stats.response_tokens:,} response tokens"
        )

    def summary(self) -> dict[str, Any]:
        return {f"{split}_data": vars(stats) for split, stats in self.stats.items()}
