"""Prompts for online RL: chat JSONL records rendered through the chat template, with their
metadata for the rewards, served in a deterministic order that depends on the step alone.

A record is ``{"prompt": ...}`` (plus an optional ``system``) or ``{"messages": [...]}`` (lmx.data.chat),
with any other fields kept as metadata: the built-in rewards read ``answer``, and an SFT record's
``response`` stands in for it, so the generated tasks' SFT files (lmx.data.synth) are prompt files as
they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmx.data.chat import ChatTemplate, jsonl_records, parse_messages
from lmx.errors import DataError


@dataclasses.dataclass(frozen=True)
class Prompt:
    where: str  # file:line
    ids: np.ndarray  # [n] int32: the prompt through the chat template, ending with the assistant cue
    text: str  # the last message's text, what a reward function receives as the prompt
    metadata: dict[str, Any]  # the record's fields (``answer`` from ``response`` when it has none)


@dataclasses.dataclass(frozen=True)
class PromptStats:
    records: int
    kept: int
    dropped: int  # prompts too long to leave room for the completion


def read_prompts(
    patterns: str | Sequence[str], template: ChatTemplate, max_prompt_tokens: int
) -> tuple[list[Prompt], PromptStats]:
    """The prompts of `patterns` (comma-separated globs allowed) that hold at most `max_prompt_tokens`."""
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    prompts, records = [], 0
    for where, record in jsonl_records(patterns):
        records += 1
        messages = parse_messages(record, where)
        if messages[-1].role == "assistant":  # an SFT conversation: the last turn is the answer
            record = {**record, "answer": record.get("answer", messages[-1].content)}
            messages = messages[:-1]
            if not messages:
                raise DataError(f"{where}: no prompt before the assistant's message")
        ids = template.prompt_ids(messages)
        if len(ids) > max_prompt_tokens:
            continue
        metadata = {k: v for k, v in record.items() if k not in ("prompt", "messages", "system")}
        if "answer" not in metadata and "response" in metadata:
            metadata["answer"] = metadata["response"]
        prompts.append(Prompt(where, ids, messages[-1].content, metadata))
    return prompts, PromptStats(records, len(prompts), records - len(prompts))


def prompt_indices(n: int, per_step: int, step: int, seed: int) -> np.ndarray:
    """The `per_step` prompt indices of `step`: epochs of seeded permutations of ``range(n)``, laid
    end to end, read `per_step` at a time. A function of the step alone, so a resumed run reads
    exactly what an uninterrupted one would."""
    start = step * per_step
    out = []
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(order[offset : offset + per_step - len(out)].tolist())
    return np.asarray(out, np.int64)
