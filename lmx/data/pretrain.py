"""The pretraining pipeline: fixed-length windows of a prepared token file, through Grain.

Window i holds tokens[i * L : i * L + L + 1] (inputs and their next-token targets). Windows are
shuffled from a seed, reshuffled every epoch (Grain combines the seed with the epoch), sliced per
JAX process, and batched to the per-process batch. Two layouts:

- ``concat``: the window is one stream; documents (each ending in EOS) attend across boundaries.
- ``document``: segment ids and positions restart at each document boundary, so attention stays
  inside a document, and the target that would cross into the next document is masked out.

Batches: ``inputs, targets, segment_ids, positions`` (int32) and ``loss_mask`` (float32), each
``[per_process_batch, L]``. The iterator's state (`get_state`/`set_state`) is saved by the
trainer through Orbax, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import grain
import numpy as np

from lmx.data.corpus import Split
from lmx.data.prepare import load_split
from lmx.errors import ConfigError, DataError

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


def window_order(
    n_windows: int,
    seed: int,
    shuffle: bool = True,
    epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """The window indices this process reads, in order: shuffled per epoch, then sliced."""
    ds = grain.MapDataset.range(n_windows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(epochs)
    return ds[process_index::process_count]


def record_batches(
    n_records: int,
    record: Callable[[int], dict[str, Any]],
    global_batch: int,
    seed: int,
    shuffle: bool = True,
    epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
) -> grain.IterDataset:
    """Per-process batches of ``record(i)`` for i in the order of `window_order`.

    The shared batching of every lmx pipeline (pretraining windows, SFT rows, preference pairs):
    shuffled from `seed` and reshuffled each epoch, sliced per process, `global_batch //
    process_count` rows per batch; the iterator's state saves and restores through Orbax.
    """
    if global_batch % process_count:
        raise ConfigError(f"train.batch_size={global_batch}: not divisible by the {process_count} processes")
    per_process = global_batch // process_count
    if epochs is not None and n_records * epochs // process_count < per_process:
        raise DataError(f"{n_records} records x {epochs} epochs are fewer than one batch of {global_batch}")
    ds = window_order(n_records, seed, shuffle, epochs, process_index, process_count)
    ds = ds.map(record).batch(per_process, drop_remainder=True)
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
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 2,
    vocab_size: int | None = None,
) -> grain.IterDataset:
    """Per-process batches of `global_batch // process_count` windows. Iterate it with `iter()`.
    With `vocab_size`, token ids outside ``[0, vocab_size)`` raise DataError first."""
    source = TokenWindows(prepared_dir, split, seq_len, packing, vocab_size)
    return record_batches(
        len(source), source.__getitem__, global_batch, seed, shuffle, epochs, process_index, process_count, num_threads
    )
