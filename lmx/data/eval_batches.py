"""Evaluation batches: every item of an indexable source once, in order, in batches of one shape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grain
import numpy as np


def eval_batches(
    source: Sequence[dict[str, np.ndarray]],
    global_batch: int,
    max_batches: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The items of `source` (windows, examples, pairs) in order, ``global_batch // process_count``
    per process and batch.

    All batches have one shape (one compilation): the last is padded with rows of zero weight.
    `max_batches` > 0 stops after that many (always the same ones, so evaluations compare).
    """
    per_process = global_batch // process_count
    n_batches = -(-len(source) // global_batch)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    ds = grain.MapDataset.range(len(source))[process_index::process_count].map(source.__getitem__)
    ds = ds.batch(per_process, drop_remainder=False)
    for i in range(min(n_batches, len(ds))):
        batch = ds[i]
        rows = len(next(iter(batch.values())))
        if rows < per_process:
            pad = per_process - rows
            batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
        yield batch
