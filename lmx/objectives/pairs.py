"""Preference pairs (a prompt with a chosen and a rejected response): what the preference and
reward-model objectives share. Both sides run through the model as one batch; rows whose responses
are empty (the padding rows of an evaluation batch) weigh nothing."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import grain
import jax.numpy as jnp
import numpy as np

from lmx.config import Config
from lmx.data.chat import ChatStats
from lmx.data.preference import PreferencePair, pair_record, preference_batches, read_preference
from lmx.objectives.base import Array, Objective, row_spec
from lmx.objectives.chat import ChatTask, Records, make_objective_eval_step, objective_means, objective_sums
from lmx.objectives.losses import response_logps
from lmx.parallel.mapping import Batch

SIDES = ("chosen", "rejected")


def paired_rows(batch: Batch) -> dict[str, Array]:
    """Chosen rows then rejected rows as one batch ``[2B, L]`` (one forward pass for both)."""
    keys = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
    return {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys}


def whole_sequences(rows: dict[str, Array]) -> tuple[Array, Array, Array]:
    """``(tokens, segment_ids, positions)`` ``[B, L]`` of each row's whole sequence: prompt,
    response and EOS.

    Rows hold a language model's layout, inputs = tokens[:-1] and targets = tokens[1:], which leaves
    out the last token. A reward model reads that one too (EOS: the response is complete), so it is
    put back after the inputs; there is room for it because reward-model data is read with
    sequences of at most ``seq_len`` tokens (`max_sequence_tokens`).
    """
    inputs_BxL, segments_BxL = rows["inputs"], rows["segment_ids"]
    n_B = jnp.sum(segments_BxL > 0, axis=1)
    index_1xL = jnp.arange(inputs_BxL.shape[1])[None, :]
    # Masked sums and selects rather than gathers: they partition cleanly when the batch is sharded.
    last_B = jnp.sum(jnp.where(index_1xL == n_B[:, None] - 1, rows["targets"], 0), axis=1)
    at_end_BxL = index_1xL == n_B[:, None]
    tokens_BxL = jnp.where(at_end_BxL, last_B[:, None], inputs_BxL)
    segment_ids_BxL = jnp.where(at_end_BxL, jnp.ones_like(segments_BxL), segments_BxL)
    return tokens_BxL, segment_ids_BxL, rows["positions"]


def max_sequence_tokens(cfg: Config, objective: Objective) -> int:
    """The most tokens a chat example (prompt + response) may hold: ``seq_len + 1`` for a language
    model's rows (n tokens make n - 1 predictions), ``seq_len`` for a model that reads every token
    (a reward model, `whole_sequences`)."""
    return cfg.data.seq_len + (not objective.reads_whole_sequences)


def pair_logps(model: nn.Module, params: Any, batch: Batch) -> tuple[Array, Array, Array, Array]:
    """``(logp chosen, logp rejected, tokens chosen, tokens rejected)``, each ``[B]``."""
    rows = paired_rows(batch)
    logits = model.apply({"params": params}, rows["inputs"], rows["segment_ids"], rows["positions"])
    logps_2B, tokens_2B = response_logps(logits, rows["targets"], rows["loss_mask"])
    b = logps_2B.shape[0] // 2
    return logps_2B[:b], logps_2B[b:], tokens_2B[:b], tokens_2B[b:]


class PairTask(ChatTask):
    """Preference pairs as chosen and rejected rows. With `reference` parameters (the frozen
    init_from model) and ``reference(cfg) == "precomputed"``, the reference log-probs of every pair
    are computed once (or read from their store, `lmx.objectives.reference_logps`) and travel in the
    batches as ``ref_chosen``/``ref_rejected``."""

    unit = "pairs"

    def __init__(
        self, cfg: Config, mesh: Any, model: nn.Module, objective: Objective, reference: Any, log: Any
    ) -> None:
        super().__init__(cfg, mesh, model, objective, log)
        self.reference_logps: dict[str, np.ndarray] = {}
        self.reference_files: dict[str, str] = {}
        precomputed = objective.reference(cfg) == "precomputed"
        if precomputed:
            if reference is None:
                raise ValueError("precomputed reference log-probs need the reference parameters")
            self._precompute(reference)
        B, L = cfg.train.batch_size, cfg.data.seq_len
        self.batch_spec = {**row_spec(B, L, "chosen_"), **row_spec(B, L, "rejected_")}
        self.batch_spec["prompt_length"] = ((B,), np.dtype(np.int32))
        if precomputed:
            self.batch_spec["ref_chosen"] = self.batch_spec["ref_rejected"] = ((B,), np.dtype(np.float32))
        self.tokens_per_step = 2 * B * L

    def read(self, files: list[str]) -> tuple[list, ChatStats]:
        cfg = self.cfg
        max_tokens = max_sequence_tokens(cfg, self.objective)
        return read_preference(files, self.template, cfg.data.seq_len, cfg.objective.truncation, max_tokens)

    def _precompute(self, reference: Any) -> None:
        from lmx.checkpoint.init_from import resolve_init_from
        from lmx.objectives.reference_logps import cached_reference_logps, compute_reference_logps
        from lmx.parallel.mapping import eval_batch_size

        cfg = self.cfg
        source = resolve_init_from(cfg.objective.init_from)
        for split, patterns in (("train", cfg.objective.train_files), ("eval", cfg.objective.eval_files)):
            if split not in self.examples:
                continue
            pairs = self.examples[split]

            def compute(pairs: list[PreferencePair] = pairs) -> np.ndarray:
                return compute_reference_logps(
                    self.model,
                    reference,
                    self.mesh,
                    cfg.mesh.rules,
                    pairs,
                    cfg.data.seq_len,
                    self.pad_id,
                    eval_batch_size(cfg, self.mesh),
                )

            values, path = cached_reference_logps(
                patterns, str(source.state_dir), cfg.data.seq_len, pairs, compute, self.log
            )
            self.reference_logps[split], self.reference_files[split] = values, str(path)

    def record(self, split: str, i: int) -> dict[str, np.ndarray]:
        ref = self.reference_logps.get(split)
        return pair_record(
            self.examples[split][i], self.cfg.data.seq_len, self.pad_id, None if ref is None else tuple(ref[i])
        )

    def batches(self, examples: list, **kwargs: Any) -> grain.IterDataset:
        cfg = self.cfg
        reference = self.reference_logps.get("train")
        return preference_batches(examples, cfg.data.seq_len, cfg.train.batch_size, reference=reference, **kwargs)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.reference_files:
            out["reference_logps"] = self.reference_files
        return out


def evaluate_pairs(
    cfg: Config,
    objective: Objective,
    mesh: Any,
    model: nn.Module,
    params: Any,
    pairs: list[PreferencePair],
    pad_id: int,
    frozen: Any = None,
) -> dict[str, Any]:
    """`objective`'s loss and stats (means over pairs) on `pairs`; `frozen`: reference parameters.

    ``per_task`` maps each task the pairs name (`PreferencePair.task`; "" names none) to the same
    metrics over its own pairs. Each task's sums are computed once and the overall metrics are
    their total, so the pair-weighted mean of the tasks' metrics is the overall one.
    """
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.task, []).append(i)
    eval_step = make_objective_eval_step(objective.make_loss(model, cfg), mesh, cfg.mesh.rules)
    sums: dict[str, dict[str, float]] = {}
    for task, indices in groups.items():
        source = Records(len(indices), lambda i, ix=indices: pair_record(pairs[ix[i]], cfg.data.seq_len, pad_id))
        sums[task] = objective_sums(eval_step, cfg, mesh, params, source, 0, frozen)
    total = {k: sum(s[k] for s in sums.values()) for k in next(iter(sums.values()))}

    def means(sums: dict[str, float], n: int) -> dict[str, Any]:
        metrics: dict[str, Any] = objective_means(cfg, sums, n, "pairs")
        metrics["pairs"] = round(metrics["pairs"])  # a count (summed as a float on the devices)
        return metrics

    per_task = {task: means(sums[task], len(groups[task])) for task in sorted(groups) if task}
    return {**means(total, len(pairs)), "per_task": per_task}
