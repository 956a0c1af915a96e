"""The pretraining pipeline: fixed-length windows of a prepared token file, through Grain.

Window i holds tokens[i * L : i * L + L + 1] (inputs and their next-token targets). Windows are
shuffled from a seed, reshuffled every epoch (Grain combines the seed with the epoch), and cut into
global batches; each JAX process reads its rows of each. Two layouts:

- ``concat``: the window is one stream; documents (each ending in EOS) attend across boundaries.
- ``document``: segment ids and positions restart at each document boundary, so attention stays
  inside a document, and the target that would cross into the next document is masked out.

Batches: ``inputs, targets, segment_ids, positions`` (int32) and ``loss_mask`` (float32), each
``[rows of this process, L]``. Where the reading starts is the step alone (`record_batches`), so a
resumed run sees exactly the batches it would have seen, on any number of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import grain
import numpy as np

from lmx.data.corpus import Split
from lmx.data.prepare import load_split
from lmx.errors import DataError

Packing = Literal["concat", "document"]


class TokenWindows:
    """Random access to the windows of one split (a Grain data source)."""

    def __init__(
        self,
        prepared_dir: str | Path,
        split: Split,
        seq_len: int,
        packing: Packing = "document",
        vocab_size: int | None = None,
    ) -> None:
        """With `vocab_size` (the model's), token ids outside ``[0, vocab_size)`` raise DataError."""
        tokens, offsets, _ = load_split(prepared_dir, split, vocab_size)
        self._init(tokens, offsets, seq_len, packing, f"{prepared_dir}: split {split!r}")

    @classmethod
    def from_tokens(
        cls, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, packing: Packing, name: str
    ) -> TokenWindows:
        """Windows of a token array whose documents start at `offsets` (ending with its length)."""
        windows = cls.__new__(cls)
        windows._init(tokens, offsets, seq_len, packing, name)
        return windows

    def _init(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, packing: Packing, name: str) -> None:
        self.tokens, self.offsets = tokens, offsets
        self.seq_len, self.packing = seq_len, packing
        self.n_windows = (len(self.tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(f"{name} has {len(self.tokens)} tokens, fewer than one window of {seq_len + 1}")

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        L = self.seq_len
        start = int(i) * L
        window = np.asarray(self.tokens[start : start + L + 1], np.int32)
        record = {"inputs": window[:-1], "targets": window[1:]}
        if self.packing == "concat":
            record["segment_ids"] = np.ones(L, np.int32)
            record["positions"] = np.arange(L, dtype=np.int32)
            record["loss_mask"] = np.ones(L, np.float32)
            return record
        doc = np.searchsorted(self.offsets, start + np.arange(L + 1), side="right") - 1
        record["segment_ids"] = (doc[:-1] - doc[0] + 1).astype(np.int32)
        record["positions"] = (start + np.arange(L) - self.offsets[doc[:-1]]).astype(np.int32)
        record["loss_mask"] = (doc[1:] == doc[:-1]).astype(np.float32)
        return record


def window_order(n_windows: int, seed: int, shuffle: bool = True, epochs: int | None = None) -> grain.MapDataset:
    """The global order of the windows: shuffled per epoch from `seed`, repeated `epochs` times."""
    ds = grain.MapDataset.range(n_windows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(epochs)


def record_batches(
    n_records: int,
    record: Callable[[int], dict[str, Any]],
    global_batch: int,
    seed: int,
    shuffle: bool = True,
    epochs: int | None = None,
    rows: tuple[int, int] | None = None,
    start_step: int = 0,
    num_threads: int = 2,
) -> grain.IterDataset:
    """This process's rows of the global batches of ``record(i)``, from batch `start_step` on.

    The shared batching of every lmx pipeline (pretraining windows, SFT rows, preference pairs).
    Global batch s holds the records at positions ``[s * global_batch, (s + 1) * global_batch)``
    of `window_order`; a process reads only its `rows` ``[start, stop)`` of each (all of them by
    default; `lmx.parallel.mapping.process_rows` says which). So the global batch of a step is a
    pure function of (seed, step, global batch): the same however many processes read it, and a
    resumed run (on any number of processes) starts at its step with nothing else to restore.
    """
    start, stop = rows or (0, global_batch)
    if not 0 <= start < stop <= global_batch:
        raise ValueError(f"rows {rows} are not within a batch of {global_batch}")
    order = window_order(n_records, seed, shuffle, epochs)
    n_batches = len(order) // global_batch
    if n_batches < 1:
        raise DataError(f"{n_records} records x {epochs} epochs are fewer than one batch of {global_batch}")
    per_process = stop - start

    def read(k: int) -> dict[str, Any]:  # the k-th row this process reads, over all batches
        step, row = divmod(k, per_process)
        return record(order[step * global_batch + start + row])

    ds = grain.MapDataset.range(start_step * per_process, n_batches * per_process).map(read)
    ds = ds.batch(per_process, drop_remainder=True)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads))


def pretrain_batches(
    prepared_dir: str | Path,
    split: Split,
    seq_len: int,
    global_batch: int,
    seed: int,
    packing: Packing = "document",
    shuffle: bool = True,
    epochs: int | None = None,
    rows: tuple[int, int] | None = None,
    start_step: int = 0,
    num_threads: int = 2,
    vocab_size: int | None = None,
) -> grain.IterDataset:
    """This process's `rows` of each global batch of `global_batch` windows, from `start_step` on
    (`record_batches`). Iterate it with `iter()`. With `vocab_size`, token ids outside
    ``[0, vocab_size)`` raise DataError first."""
    source = TokenWindows(prepared_dir, split, seq_len, packing, vocab_size)
    return record_batches(
        len(source), source.__getitem__, global_batch, seed, shuffle, epochs, rows, start_step, num_threads
    )
