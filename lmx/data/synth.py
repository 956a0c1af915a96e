"""Generated instruction and preference data whose answers can be checked: post-training without a hub.

Four small tasks over digits, each with one correct answer and a plausible wrong one:

- ``copy 3 1 4`` -> ``3 1 4``; wrong: one digit changed.
- ``reverse 3 1 4`` -> ``4 1 3``; wrong: the input unchanged, or one neighbouring pair swapped.
- ``sort 3 1 4`` -> ``1 3 4``; wrong: the input unchanged, or one neighbouring pair swapped.
- ``add 12 7`` -> ``19``; wrong: off by one or by ten.

SFT records are ``{"prompt", "response", "task"}`` and preference records ``{"prompt", "chosen",
"rejected", "task"}`` (chosen is correct, rejected wrong). Held-out prompts never appear in any
training file, so exact-match accuracy on them measures what was learnt, not what was memorised.
Everything is drawn from a seeded generator: the same arguments write the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from lmx import atomic
from lmx.data.chat import jsonl_records, text_field
from lmx.errors import DataError

Example = tuple[str, str, str]  # (prompt, correct answer, wrong answer)


def _digits(rng: np.random.Generator) -> list[int]:
    return [int(d) for d in rng.integers(0, 10, size=int(rng.integers(3, 6)))]


def _show(xs: Sequence[int]) -> str:
    return " ".join(str(x) for x in xs)


def _swap_neighbours(rng: np.random.Generator, xs: list[int]) -> list[int]:
    """`xs` with one pair of unequal neighbours swapped (xs itself when all are equal)."""
    spots = [i for i in range(len(xs) - 1) if xs[i] != xs[i + 1]]
    if not spots:
        return xs
    i = int(rng.choice(spots))
    out = list(xs)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _copy(rng: np.random.Generator) -> Example:
    xs = _digits(rng)
    wrong = list(xs)
    i = int(rng.integers(len(xs)))
    wrong[i] = (xs[i] + int(rng.integers(1, 10))) % 10
    return f"copy {_show(xs)}", _show(xs), _show(wrong)


def _reorder(name: str, order: Callable[[list[int]], list[int]]) -> Callable[[np.random.Generator], Example]:
    def make(rng: np.random.Generator) -> Example:
        while True:
            xs = _digits(rng)
            right = order(xs)
            wrong = xs if rng.random() < 0.5 else _swap_neighbours(rng, right)
            if wrong != right:
                return f"{name} {_show(xs)}", _show(right), _show(wrong)

    return make


def _add(rng: np.random.Generator) -> Example:
    a, b = (int(x) for x in rng.integers(0, 100, size=2))
    wrong = a + b + int(rng.choice([-10, -1, 1, 10]))
    if wrong < 0:
        wrong = a + b + 1
    return f"add {a} {b}", str(a + b), str(wrong)


TASKS: dict[str, Callable[[np.random.Generator], Example]] = {
    "copy": _copy,
    "reverse": _reorder("reverse", lambda xs: xs[::-1]),
    "sort": _reorder("sort", sorted),
    "add": _add,
}


def synth_examples(
    tasks: Sequence[str], n: int, seed: int, exclude: set[str] = frozenset()
) -> list[tuple[str, Example]]:
    """`n` examples with distinct prompts not in `exclude`, tasks in turn: ``(task, example)``."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise DataError(f"unknown synthetic task(s) {unknown or tasks}; choose from {sorted(TASKS)}")
    rng = np.random.default_rng(seed)
    seen, out = set(exclude), []
    attempts = 0
    while len(out) < n:
        task = tasks[len(out) % len(tasks)]
        example = TASKS[task](rng)
        attempts += 1
        if attempts > 20 * n + 1000:
            raise DataError(f"cannot draw {n} distinct prompts of tasks {list(tasks)}; ask for fewer")
        if example[0] in seen:
            continue
        seen.add(example[0])
        out.append((task, example))
    return out


def prompts_in(patterns: str | Sequence[str]) -> set[str]:
    """The ``prompt`` of every record in the JSONL files matching `patterns` (an `exclude` for
    `write_synth_tasks`); a record without one raises DataError naming file:line."""
    return {text_field(record, "prompt", where) for where, record in jsonl_records(patterns)}


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def write_synth_tasks(
    out: str | Path,
    train: int = 4000,
    heldout: int = 200,
    tasks: Sequence[str] = tuple(TASKS),
    seed: int = 0,
    exclude: Iterable[str] = (),
) -> dict[str, Path]:
    """Writes ``sft_{train,heldout}.jsonl`` and ``preference_{train,heldout}.jsonl`` under `out`.

    The held-out prompts are drawn first and excluded from both training files. No file holds a
    prompt of `exclude` (e.g. those of another set that a model was already trained on).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    excluded = set(exclude)
    held = synth_examples(tasks, 2 * heldout, seed, excluded)
    held_prompts = excluded | {example[0] for _, example in held}
    sft_train = synth_examples(tasks, train, seed + 1, held_prompts)
    pref_train = synth_examples(tasks, train, seed + 2, held_prompts)
    paths = {
        name: out / f"{name}.jsonl" for name in ("sft_train", "sft_heldout", "preference_train", "preference_heldout")
    }

    def sft(rows: list[tuple[str, Example]]) -> list[dict[str, str]]:
        return [{"prompt": p, "response": right, "task": t} for t, (p, right, _) in rows]

    def pref(rows: list[tuple[str, Example]]) -> list[dict[str, str]]:
        return [{"prompt": p, "chosen": right, "rejected": wrong, "task": t} for t, (p, right, wrong) in rows]

    _write_jsonl(paths["sft_train"], sft(sft_train))
    _write_jsonl(paths["sft_heldout"], sft(held[:heldout]))
    _write_jsonl(paths["preference_train"], pref(pref_train))
    _write_jsonl(paths["preference_heldout"], pref(held[heldout:]))
    return paths
