"""Preference data: (prompt, chosen, rejected) -> paired, fixed-shape padded batches through Grain.

Chosen and rejected share the identical prompt tokens (the prompt is encoded once), so a
preference loss compares the two responses in exactly the same context. A batch holds the SFT row
layout (lmx.data.sft) twice, under ``chosen_*`` and ``rejected_*`` keys, plus ``prompt_length``
``[B]``; each ``*_loss_mask`` covers that response and its EOS only.
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
from lmx.data.sft import sequence_record
from lmx.errors import DataError


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: np.ndarray  # [P] int32, shared by both responses
    chosen: np.ndarray  # [C] int32, ends with <eos> unless truncated
    rejected: np.ndarray  # [R] int32
    task: str = ""  # the record's "task" field, for per-task evaluation


def read_preference(
    patterns: str | Sequence[str],
    template: ChatTemplate,
    seq_len: int,
    truncation: Truncation = "drop",
    max_tokens: int | None = None,
) -> tuple[list[PreferencePair], ChatStats]:
    """Reads and encodes every pair. A pair is kept only if both sides fit (after truncation) in
    `max_tokens` tokens of prompt + response: by default ``seq_len + 1``, a language model's row
    (`pair_record`); a reward model reads whole sequences and needs them within ``seq_len``."""
    max_tokens = seq_len + 1 if max_tokens is None else max_tokens
    stats, pairs = ChatStats(), []
    for where, record in jsonl_records(patterns):
        stats.records += 1
        messages = parse_messages(record, where)
        if messages[-1].role == "assistant":
            raise DataError(f"{where}: the prompt must not end with an assistant message ('chosen' answers it)")
        prompt = template.prompt_ids(messages)
        texts = [response_field(record, field, where) for field in ("chosen", "rejected")]
        if texts[0] == texts[1]:
            raise DataError(
                f"{where}: 'chosen' and 'rejected' are identical (a pair must differ to teach a preference)"
            )
        sides = []
        for text in texts:
            side_stats = ChatStats()
            ids = fit_to_length(prompt, template.response_ids(text), max_tokens, truncation, side_stats)
            sides.append((ids, side_stats))
        if any(ids is None for ids, _ in sides):
            stats.dropped += 1
            continue
        stats.truncated += any(s.truncated for _, s in sides)
        stats.kept += 1
        stats.prompt_tokens += len(prompt)
        stats.response_tokens += sum(len(ids) for ids, _ in sides)
        pairs.append(PreferencePair(prompt, sides[0][0], sides[1][0], str(record.get("task", ""))))
    if not pairs:
        raise DataError(f"{patterns}: no usable preference pairs ({stats.records} records, {stats.dropped} dropped)")
    return pairs, stats


def pair_record(
    pair: PreferencePair, seq_len: int, pad_id: int, reference: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """Both rows of a pair; with `reference` (precomputed reference log-probs of chosen and
    rejected), also ``ref_chosen`` and ``ref_rejected``."""
    record: dict[str, np.ndarray] = {"prompt_length": np.int32(len(pair.prompt))}
    if reference is not None:
        record["ref_chosen"], record["ref_rejected"] = np.float32(reference[0]), np.float32(reference[1])
    for side, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        for key, value in sequence_record(pair.prompt, response, seq_len, pad_id).items():
            record[f"{side}_{key}"] = value
    return record


def preference_batches(
    pairs: Sequence[PreferencePair],
    seq_len: int,
    global_batch: int,
    seed: int,
    pad_id: int = 0,
    reference: np.ndarray | None = None,
    **kwargs: Any,
) -> grain.IterDataset:
    """Batches of paired rows (see the module docstring); `reference` ``[n_pairs, 2]`` adds the
    precomputed reference log-probs; `kwargs` as in `lmx.data.pretrain.record_batches`."""

    def record(i: int) -> dict[str, np.ndarray]:
        return pair_record(pairs[i], seq_len, pad_id, None if reference is None else tuple(reference[i]))

    return record_batches(len(pairs), record, global_batch, seed, **kwargs)
