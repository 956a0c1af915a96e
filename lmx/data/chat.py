"""The chat template, and reading chat examples from JSONL.

One template, applied at the token level (each message is encoded on its own, so a prompt always
becomes the same tokens, whatever follows it):

    <bos> <|system|> SYSTEM <|end|> <|user|> USER <|end|> <|assistant|> ... <|assistant|> RESPONSE <eos>
    `---------------------------- prompt ------------------------------------'`---- response ----'

Every message of the prompt is ``<|role|> content <|end|>`` (earlier assistant turns included), and
the prompt ends with ``<|assistant|>``, the cue to answer. The response is the answer's tokens and
EOS, which is where generation stops. Role tokens are single SentencePiece pieces (CHAT_SYMBOLS,
added when lmx trains a tokenizer), so text can never forge them.

JSONL records (one object per line):
- ``{"prompt": "...", "system": "..."}``: one user message, with an optional system message; or
- ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}``.
SFT records add ``"response"``, or end ``messages`` with the assistant message to train on;
preference records add ``"chosen"`` and ``"rejected"``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from lmx.data.text_files import read_text
from lmx.data.tokenizer import Tokenizer
from lmx.errors import DataError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
Truncation = Literal["drop", "truncate"]


@dataclasses.dataclass(frozen=True)
class Message:
    role: Role
    content: str


class ChatTemplate:
    """Token ids of prompts and responses under lmx's chat template (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        try:
            self.role_ids = {role: tokenizer.piece_id(f"<|{role}|>") for role in ROLES}
            self.end_id = tokenizer.piece_id("<|end|>")
        except DataError as e:
            where = tokenizer.path or "the tokenizer"
            raise DataError(
                f"{where}: {e}; chat data needs the chat role symbols (lmx tokenizer train adds them)"
            ) from None
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, max(tokenizer.pad_id, 0)

    def prompt_ids(self, messages: Sequence[Message]) -> np.ndarray:
        ids = [self.bos_id] if self.bos_id >= 0 else []  # some tokenizers have no BOS (Qwen's)
        for message, content in zip(messages, self.tokenizer.encode_batch([m.content for m in messages]), strict=True):
            ids += [self.role_ids[message.role], *content, self.end_id]
        ids.append(self.role_ids["assistant"])
        return np.asarray(ids, np.int32)

    def response_ids(self, text: str) -> np.ndarray:
        return np.asarray([*self.tokenizer.encode(text), self.eos_id], np.int32)


@dataclasses.dataclass
class ChatStats:
    """What reading a chat dataset did: examples kept, truncated and dropped, tokens kept."""

    records: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: int = 0  # too long under "drop", or no room for a single response token under "truncate"
    prompt_tokens: int = 0
    response_tokens: int = 0


def fit_to_length(
    prompt: np.ndarray, response: np.ndarray, max_tokens: int, truncation: Truncation, stats: ChatStats
) -> np.ndarray | None:
    """The response, cut so that prompt + response is at most `max_tokens` tokens (``seq_len + 1``
    for a language model's rows: a sequence of n tokens gives n - 1 predictions), or None when the
    example must be dropped. Counts in stats."""
    room = max_tokens - len(prompt)
    if len(response) <= room:
        return response
    if truncation == "drop" or room < 1:
        stats.dropped += 1
        return None
    stats.truncated += 1
    return response[:room]


def jsonl_records(patterns: str | Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for every line of the files matching `patterns`; `where` is ``file:line``.

    Malformed lines, non-object lines and patterns that match nothing raise DataError.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for pattern in patterns:
        files = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"JSONL pattern {pattern!r} matches no files")
        for path in files:
            # split("\n"), not splitlines(): a JSON string may hold U+2028 and other line breaks.
            for number, line in enumerate(read_text(path, "JSONL").split("\n"), 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
                yield where, record


def text_field(record: dict[str, Any], field: str, where: str) -> str:
    if field not in record:
        raise DataError(f"{where}: missing field {field!r} (fields: {sorted(record)})")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def response_field(record: dict[str, Any], field: str, where: str) -> str:
    """A response to train on (``response``, ``chosen``, ``rejected``): a non-empty string."""
    value = text_field(record, field, where)
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty (there is no response to train on)")
    return value


def parse_messages(record: dict[str, Any], where: str) -> list[Message]:
    """The messages of a record: ``messages``, or ``prompt`` (plus an optional ``system``)."""
    if "messages" in record:
        raw = record["messages"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        messages = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                raise DataError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
            role, content = text_field(m, "role", f"{where}: messages[{i}]"), m.get("content")
            if role not in ROLES:
                raise DataError(f"{where}: messages[{i}]: role {role!r} is not one of {list(ROLES)}")
            if not isinstance(content, str):
                raise DataError(f"{where}: messages[{i}]: 'content' must be a string")
            messages.append(Message(role, content))
        return messages
    if "prompt" not in record:
        raise DataError(f"{where}: missing field 'prompt' or 'messages' (fields: {sorted(record)})")
    messages = [Message("user", text_field(record, "prompt", where))]
    if "system" in record:
        messages.insert(0, Message("system", text_field(record, "system", where)))
    return messages
