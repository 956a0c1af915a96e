"""Multiple-choice evaluation by log-likelihood, with k in-context examples ("shots").

An item is a JSONL line ``{"context": str, "choices": [str, ...], "answer": int}``. Each choice is
scored by the summed log-probability of its tokens after the context (the context and the choice
are tokenized separately and joined, so every choice follows the same context tokens). The model's
answer is the best choice by the sum (``accuracy``), by the mean per token (``accuracy_per_token``)
and by the sum per UTF-8 byte of the choice (``accuracy_per_byte``, comparable across tokenizers).

With k shots, each item's prompt starts with k other items of the same file, each written as its
context followed by its correct choice, separated by ``separator``; the shots are drawn from a
seeded generator per item, so a given (file, k, seed) always builds the same prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from lmx.data.chat import jsonl_records, text_field
from lmx.data.tokenizer import Tokenizer
from lmx.errors import DataError
from lmx.model import Transformer
from lmx.objectives.losses import target_logits
from lmx.parallel.rules import Rules, activation_rules, mesh_axes_for

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ChoiceItem:
    context: str
    choices: tuple[str, ...]
    answer: int
    source: str  # file:line


@dataclasses.dataclass(frozen=True)
class ChoiceResult:
    accuracy: float
    accuracy_per_token: float
    accuracy_per_byte: float
    items: int
    shots: int
    predictions: tuple[int, ...]  # by summed log-prob, one per item

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["predictions"] = list(self.predictions)
        return out


def read_choice_items(path: str | Path) -> list[ChoiceItem]:
    """Reads and checks a multiple-choice JSONL file; a bad line raises DataError naming file:line."""
    items = []
    for where, record in jsonl_records(str(path)):
        context = text_field(record, "context", where)
        for key in ("choices", "answer"):
            if key not in record:
                raise DataError(f"{where}: missing field {key!r}")
        choices, answer = record["choices"], record["answer"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of at least two non-empty strings")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            raise DataError(f"{where}: 'answer' must be an index into choices (0..{len(choices) - 1}), got {answer!r}")
        items.append(ChoiceItem(context, tuple(choices), answer, where))
    if not items:
        raise DataError(f"{path}: no items")
    return items


def prompt_with_shots(items: Sequence[ChoiceItem], index: int, shots: int, seed: int, separator: str) -> str:
    """Item `index`'s context after `shots` solved examples drawn from the other items."""
    if shots >= len(items):
        raise DataError(f"{shots} shots need more than {len(items)} items")
    others = [i for i in range(len(items)) if i != index]
    chosen = np.random.default_rng([seed, index]).choice(others, size=shots, replace=False)
    examples = [items[i].context + items[i].choices[items[i].answer] for i in chosen]
    return separator.join([*examples, items[index].context])


class ChoiceScorer:
    """Summed log-probabilities of continuations after contexts, in fixed-shape sharded batches.

    Rows are ``context + continuation`` right-padded to `seq_len` tokens (longer contexts lose
    their oldest tokens); the batch is split over the mesh's batch axes like training batches.
    """

    def __init__(self, model: Transformer, params: Any, mesh: Mesh, rules: Rules, batch_size: int, seq_len: int):
        self.model, self.params, self.mesh, self.rules = model, params, mesh, rules
        self.batch_size, self.seq_len = batch_size, seq_len
        self._rows = NamedSharding(mesh, mesh_axes_for(("batch", "length"), (batch_size, seq_len), mesh, rules))
        out = NamedSharding(mesh, mesh_axes_for(("batch",), (batch_size,), mesh, rules))
        self._score = jax.jit(self._score_fn, out_shardings=out)

    def _score_fn(self, params: Any, inputs: Array, targets: Array, mask: Array) -> Array:
        with activation_rules(self.rules), jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            segment_ids = (mask >= 0).astype(jnp.int32)  # padding is -1
            logits_BxLxV = self.model.apply({"params": params}, inputs, segment_ids)
            log_probs_BxL = target_logits(logits_BxLxV, targets) - jax.nn.logsumexp(logits_BxLxV, axis=-1)
            return jnp.sum(jnp.where(mask > 0, log_probs_BxL, 0.0), axis=-1)

    def rows(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, np.ndarray]:
        """``inputs, targets, mask`` for (context, continuation) pairs: mask 1 on continuation
        targets, 0 on context targets, -1 on padding."""
        n, length = len(pairs), self.seq_len
        inputs = np.zeros((n, length), np.int32)
        targets = np.zeros((n, length), np.int32)
        mask = np.full((n, length), -1, np.int8)
        for r, (context, continuation) in enumerate(pairs):
            if not continuation:
                raise DataError(f"row {r}: empty continuation")
            if len(continuation) > length:
                raise DataError(f"row {r}: continuation of {len(continuation)} tokens exceeds the context {length}")
            sequence = (list(context) + list(continuation))[-(length + 1) :]
            m = len(sequence) - 1
            inputs[r, :m] = sequence[:-1]
            targets[r, :m] = sequence[1:]
            mask[r, :m] = 0
            mask[r, m - len(continuation) : m] = 1
        return {"inputs": inputs, "targets": targets, "mask": mask}

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> np.ndarray:
        """Summed log-probability (nats) of each continuation given its context."""
        out = []
        for start in range(0, len(pairs), self.batch_size):
            chunk = list(pairs[start : start + self.batch_size])
            chunk += [([0], [0])] * (self.batch_size - len(chunk))  # fixed shape; scores dropped
            host = self.rows(chunk)
            batch = [jax.device_put(host[k], self._rows) for k in ("inputs", "targets", "mask")]
            out.append(self._score(self.params, *batch))
        return np.concatenate([np.asarray(x) for x in out])[: len(pairs)]


def evaluate_choices(
    scorer: ChoiceScorer,
    tokenizer: Tokenizer,
    items: Sequence[ChoiceItem],
    shots: int = 0,
    seed: int = 0,
    separator: str = "\n",
) -> ChoiceResult:
    """k-shot multiple-choice accuracy of the scorer's model on `items`."""
    contexts = [prompt_with_shots(items, i, shots, seed, separator) for i in range(len(items))]
    context_ids = tokenizer.encode_batch(contexts)
    pairs = [
        (context_ids[i], choice_ids)
        for i, item in enumerate(items)
        for choice_ids in tokenizer.encode_batch(list(item.choices))
    ]
    lengths = np.array([len(c) for _, c in pairs], np.float64)
    byte_counts = np.array([len(c.encode("utf-8")) for item in items for c in item.choices], np.float64)
    scores = scorer.score(pairs)
    correct = {"sum": [], "token": [], "byte": []}
    predictions = []
    start = 0
    for item in items:
        end = start + len(item.choices)
        by = {
            "sum": scores[start:end],
            "token": scores[start:end] / lengths[start:end],
            "byte": scores[start:end] / byte_counts[start:end],
        }
        for name, values in by.items():
            correct[name].append(int(np.argmax(values)) == item.answer)
        predictions.append(int(np.argmax(by["sum"])))
        start = end
    return ChoiceResult(
        accuracy=float(np.mean(correct["sum"])),
        accuracy_per_token=float(np.mean(correct["token"])),
        accuracy_per_byte=float(np.mean(correct["byte"])),
        items=len(items),
        shots=shots,
        predictions=tuple(predictions),
    )
