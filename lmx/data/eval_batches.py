"""Evaluation batches: every item of an indexable source once, in order, in batches of one shape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def eval_batches(
    source: Sequence[dict[str, np.ndarray]],
    global_batch: int,
    max_batches: int = 0,
    rows: tuple[int, int] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's `rows` ``[start, stop)`` (all by default) of each global batch of the items
    of `source` (windows, examples, pairs) in order: global batch i holds items
    ``[i * global_batch, (i + 1) * global_batch)``, the same however many processes read it.

    All batches have one shape (one compilation): rows past the end are zeros, of zero weight.
    `max_batches` > 0 stops after that many (always the same ones, so evaluations compare).
    """
    start, stop = rows or (0, global_batch)
    n_batches = -(-len(source) // global_batch)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    for i in range(n_batches):
        first = i * global_batch
        items = [source[j] for j in range(first + start, min(first + stop, len(source)))]
        template = {k: np.asarray(v) for k, v in (items[0] if items else source[0]).items()}
        pad = (stop - start) - len(items)
        batch = {}
        for k, v in template.items():
            rows = [np.asarray(item[k], v.dtype) for item in items] + [np.zeros(v.shape, v.dtype)] * pad
            batch[k] = np.stack(rows)
        yield batch
