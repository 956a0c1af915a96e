"""Evaluation of post-trained runs on chat JSONL: greedy exact match, and pairwise preference accuracy.

- `exact_match`: each prompt (chat template) is answered greedily with the KV cache until EOS; the
  answer counts when its text equals the reference ``response`` (surrounding whitespace ignored).
- `evaluate_pairs_run`: a held-out preference file scored by a run's own objective: Bradley-Terry
  loss and pairwise accuracy for a reward model; for a preference run, the loss, reward accuracy and
  margin of its implicit reward against its reference model (``objective.init_from``).

Both break their results down by the records' ``task`` field when they have one (``per_task``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmx.checkpoint.init_from import load_init_params
from lmx.data.chat import ChatTemplate, Message, jsonl_records, parse_messages, response_field
from lmx.data.preference import read_preference
from lmx.decode.generate import Generator
from lmx.errors import ConfigError, DataError
from lmx.infer.runs import load_run
from lmx.objectives.pairs import evaluate_pairs, max_sequence_tokens
from lmx.objectives.registry import objective_of


@dataclasses.dataclass(frozen=True)
class AnswerItem:
    where: str  # file:line
    messages: list[Message]
    response: str
    task: str  # the record's "task" field, or ""


@dataclasses.dataclass(frozen=True)
class ExactMatch:
    accuracy: float
    items: int
    per_task: dict[str, float]
    predictions: list[dict[str, Any]]  # where, expected, answer, correct

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_answer_items(patterns: str | Sequence[str]) -> list[AnswerItem]:
    """SFT-format records (``prompt``/``messages`` and ``response``) as items to answer."""
    items = []
    for where, record in jsonl_records(patterns):
        if "messages" in record and "response" not in record:
            messages = parse_messages(record, where)
            if messages[-1].role != "assistant":
                raise DataError(f"{where}: the last message must be the reference answer (role 'assistant')")
            messages, response = messages[:-1], messages[-1].content
        else:
            messages, response = parse_messages(record, where), response_field(record, "response", where)
        items.append(AnswerItem(where, messages, response, str(record.get("task", ""))))
    if not items:
        raise DataError(f"{patterns}: no items")
    return items


def exact_match(
    generator: Generator, template: ChatTemplate, items: Sequence[AnswerItem], max_new_tokens: int
) -> ExactMatch:
    """Greedy answers of `generator` compared with the references."""
    prompts = [template.prompt_ids(item.messages).tolist() for item in items]
    results = generator.generate(prompts, max_new_tokens, names=[item.where for item in items])
    tokenizer = template.tokenizer
    predictions, by_task = [], collections.defaultdict(list)
    for item, result in zip(items, results, strict=True):
        answer = tokenizer.decode(result.tokens)
        correct = result.finish_reason == "eos" and answer.strip() == item.response.strip()
        predictions.append({"where": item.where, "expected": item.response, "answer": answer, "correct": correct})
        by_task[item.task].append(correct)
    per_task = {task: float(np.mean(v)) for task, v in sorted(by_task.items()) if task}
    accuracy = float(np.mean([p["correct"] for p in predictions]))
    return ExactMatch(accuracy, len(items), per_task, predictions)


def exact_match_run(
    run_dir: str | Path,
    path: str,
    step: int | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 0,
    devices: Sequence[Any] | None = None,
    limit: int = 0,
) -> tuple[int, ExactMatch]:
    """`exact_match` of a run's checkpoint on the SFT-format file `path`. `max_new_tokens` 0: the
    longest reference answer plus its EOS (and a little room), within the model's context.
    `devices`: where to load the run (by default every device, which its mesh must fit). `limit`:
    only the file's first items (0: all)."""
    items = read_answer_items(path)[: limit or None]
    run = load_run(run_dir, step, devices)
    if not objective_of(run.cfg).generates:
        raise ConfigError(
            f"{run_dir}: objective.kind={run.cfg.objective.kind!r} is not a language model; it does not generate "
            "(a reward model: evaluate it with --pairs)"
        )
    template = ChatTemplate(run.require_tokenizer())
    if not max_new_tokens:
        longest = max(len(template.response_ids(item.response)) for item in items)
        longest_prompt = max(len(template.prompt_ids(item.messages)) for item in items)
        max_new_tokens = max(1, min(longest + 4, run.cfg.model.max_seq_len - longest_prompt))
    generator = Generator(
        run.model,
        run.params,
        run.mesh,
        run.cfg.mesh.rules,
        min(batch_size, len(items)),
        template.eos_id,
        template.pad_id,
    )
    return run.step, exact_match(generator, template, items, max_new_tokens)


def evaluate_pairs_run(
    run_dir: str | Path, path: str, step: int | None = None, devices: Sequence[Any] | None = None, limit: int = 0
) -> tuple[int, dict[str, Any]]:
    """A reward-model or preference run's own objective metrics on the preference file `path`
    (`lmx.objectives.pairs.evaluate_pairs`: means over the pairs, and ``per_task``: the same for
    each value of the records' ``task`` field, {} when they have none). `limit`: only the first
    pairs that fit (0: all)."""
    run = load_run(run_dir, step, devices)
    cfg = run.cfg
    objective = objective_of(cfg)
    if not objective.scores_pairs:
        raise ConfigError(
            f"{run_dir}: objective.kind={cfg.objective.kind!r}; --pairs scores reward-model and preference runs"
        )
    template = ChatTemplate(run.require_tokenizer())
    max_tokens = max_sequence_tokens(cfg, objective)
    pairs, _ = read_preference(path, template, cfg.data.seq_len, cfg.objective.truncation, max_tokens)
    pairs = pairs[: limit or None]
    frozen = None
    if objective.reference(cfg) != "none":
        # Precomputed or not in training, here the reference runs beside the policy.
        frozen, _, _ = load_init_params(cfg.objective.init_from, run.abstract_params())
    return run.step, evaluate_pairs(cfg, objective, run.mesh, run.model, run.params, pairs, template.pad_id, frozen)
