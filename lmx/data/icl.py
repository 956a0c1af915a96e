"""A generated in-context learning task: associative recall of ``key value`` lines.

The examples in the prompt determine the answer. A task file fixes one random mapping from keys to
values, and every key is asked several times; an item's context is the key, and its choices are
the true value and values the mapping never uses. With k shots (other items, solved), the query's
key appears among the shots with a probability that grows with k, and a model that retrieves from
its context (an induction head, Olsson et al. 2022) answers those correctly: accuracy rises with k.

The matching pretraining corpus is made of episodes, each with its own random mapping whose lines
repeat in random order, so a model learns retrieval rather than any fixed mapping. Everything is
drawn from a seeded generator: the same arguments write the same files.
"""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path

import numpy as np

from lmx import atomic

LETTERS = string.ascii_lowercase


def _word(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(LETTERS), size=length))


def _distinct_words(rng: np.random.Generator, n: int, length: int) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = _word(rng, length)
        if w not in words:
            words.append(w)
    return words


@functools.cache  # drawn once per process: 4,000 episodes redrew them in 8 s
def word_pools(size: int = 64) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The fixed pools that keys and values come from. Small pools make every word frequent enough
    to be one token, so retrieving a value is copying one token."""
    rng = np.random.default_rng(20221108)
    return tuple(_distinct_words(rng, size, 3)), tuple(_distinct_words(rng, size, 4))


def recall_episode(rng: np.random.Generator, n_keys: int = 6, n_lines: int = 24) -> str:
    """One pretraining document: a fresh mapping of `n_keys` keys, its lines repeated in random order."""
    key_pool, value_pool = word_pools()
    keys = list(rng.choice(key_pool, size=n_keys, replace=False))
    values = list(rng.choice(value_pool, size=n_keys))
    picks = rng.integers(0, n_keys, n_lines)
    return "".join(f"{keys[i]} {values[i]}\n" for i in picks)


def recall_items(rng: np.random.Generator, n_keys: int = 8, repeats: int = 12, n_choices: int = 4) -> list[dict]:
    """Multiple-choice items ``{context, choices, answer}`` over one fixed mapping; each key is
    asked `repeats` times. The wrong choices are values the mapping never uses, so a shot showing
    the key reveals the answer to a model that reads values from its context."""
    key_pool, value_pool = word_pools()
    keys = list(rng.choice(key_pool, size=n_keys, replace=False))
    values = list(rng.choice(value_pool, size=n_keys, replace=False))
    items = []
    for _ in range(repeats):
        for i, key in enumerate(keys):
            wrong = rng.choice([v for v in value_pool if v not in values], size=n_choices - 1, replace=False)
            choices = [values[i], *wrong]
            order = rng.permutation(n_choices)
            items.append(
                {
                    "context": key,
                    "choices": [f" {choices[o]}" for o in order],
                    "answer": int(np.argmax(order == 0)),
                }
            )
    return [items[i] for i in rng.permutation(len(items))]


def write_recall_task(out_dir: str | Path, documents: int = 4000, seed: int = 0) -> dict[str, Path]:
    """Writes ``corpus/episode-*.txt`` (pretraining documents, 100 per file) and ``task.jsonl``
    (the multiple-choice items; shots are joined by a newline,
    which makes a k-shot prompt look like an episode). Returns the paths."""
    out = Path(out_dir)
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = 100
    for f in range(-(-documents // per_file)):
        n = min(per_file, documents - f * per_file)
        # A blank line ends an episode inside a file; files are the corpus's documents.
        text = "\n".join(recall_episode(rng) for _ in range(n))
        atomic.write_text(corpus / f"episode-{f:04d}.txt", text)
    task = out / "task.jsonl"
    atomic.write_text(task, "".join(json.dumps(item) + "\n" for item in recall_items(rng)))
    return {"corpus": corpus, "task": task}
