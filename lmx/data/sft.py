"""Supervised fine-tuning data: chat examples -> fixed-shape padded batches through Grain.

Each example is one sequence ``prompt + response`` (lmx.data.chat's template), padded to the batch
length. The batch has the pretraining layout, so the pretraining loss trains on it unchanged:
``inputs, targets, segment_ids, positions`` (int32) and ``loss_mask`` (float32), each ``[B, L]``.
``loss_mask`` is 1 exactly where the target is a response token or the closing EOS; prompt and
padding weigh nothing. Padding rows and columns have segment id 0, so attention ignores them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from lmx.data.chat import (
    ChatStats,
    ChatTemplate,
    Truncation,
    fit_to_length,
    jsonl_records,
    parse_messages,
    response_field,
)
from lmx.data.pretrain import record_batches
from lmx.errors import DataError


@dataclasses.dataclass(frozen=True)
class SftExample:
    prompt: np.ndarray  # [P] int32: <bos> ... <|assistant|>
    response: np.ndarray  # [R] int32: the answer and <eos> (cut short when truncated)


def read_sft(
    patterns: str | Sequence[str], template: ChatTemplate, seq_len: int, truncation: Truncation = "drop"
) -> tuple[list[SftExample], ChatStats]:
    """Reads and encodes every SFT record; too-long ones follow `truncation` and are counted."""
    stats, examples = ChatStats(), []
    for where, record in jsonl_records(patterns):
        stats.records += 1
        if "messages" in record:
            messages = parse_messages(record, where)
            if messages[-1].role != "assistant":
                raise DataError(f"{where}: the last message must be the assistant's response to train on")
            prompt_messages, response_text = messages[:-1], messages[-1].content
            if not response_text.strip():
                raise DataError(f"{where}: the assistant's response is empty (there is nothing to train on)")
            if not prompt_messages:
                raise DataError(f"{where}: 'messages' has a response but no prompt")
        else:
            prompt_messages, response_text = parse_messages(record, where), response_field(record, "response", where)
        prompt = template.prompt_ids(prompt_messages)
        response = fit_to_length(prompt, template.response_ids(response_text), seq_len + 1, truncation, stats)
        if response is not None:
            examples.append(SftExample(prompt, response))
            stats.kept += 1
            stats.prompt_tokens += len(prompt)
            stats.response_tokens += len(response)
    if not examples:
        raise DataError(f"{patterns}: no usable SFT examples ({stats.records} records, {stats.dropped} dropped)")
    return examples, stats


def sequence_record(prompt: np.ndarray, response: np.ndarray, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """One padded training row of ``prompt + response`` with the loss on the response only."""
    tokens = np.concatenate([prompt, response])
    n = len(tokens) - 1  # predictions in this row
    if n > seq_len or n < 1:
        raise ValueError(f"sequence of {len(tokens)} tokens does not fit seq_len {seq_len}")
    record = {
        "inputs": np.full(seq_len, pad_id, np.int32),
        "targets": np.full(seq_len, pad_id, np.int32),
        "segment_ids": np.zeros(seq_len, np.int32),
        "positions": np.arange(seq_len, dtype=np.int32),
        "loss_mask": np.zeros(seq_len, np.float32),
    }
    record["inputs"][:n] = tokens[:-1]
    record["targets"][:n] = tokens[1:]
    record["segment_ids"][:n] = 1
    # Target t is token t + 1: a response token from t + 1 = len(prompt) on.
    record["loss_mask"][len(prompt) - 1 : n] = 1.0
    return record


def sft_batches(
    examples: Sequence[SftExample], seq_len: int, global_batch: int, seed: int, pad_id: int = 0, **kwargs: Any
) -> grain.IterDataset:
    """Batches of padded SFT rows (see the module docstring); `kwargs` as in `record_batches`."""
    return record_batches(
        len(examples),
        lambda i: sequence_record(examples[i].prompt, examples[i].response, seq_len, pad_id),
        global_batch,
        seed,
        **kwargs,
    )
