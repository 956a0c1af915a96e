"""Reference log-probs computed once over a preference dataset, and stored beside it.

With ``objective.reference=precomputed`` the reference model runs once over every pair before
training, instead of in every step: the steps then cost what an SFT step costs. The result ``[pairs,
2]`` (summed log-probs of chosen and rejected) is saved next to the data, in
``<data dir>/reference_logps/<first file>-<key>.npy``, where the key hashes the reference checkpoint,
the sequence length and the pairs' tokens: another run with the same reference and data reuses it,
and any change (a new checkpoint, another tokenizer or truncation) computes it afresh.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.data.eval_batches import eval_batches
from lmx.data.preference import PreferencePair, pair_record
from lmx.objectives.pairs import pair_logps
from lmx.parallel.mapping import process_rows, step_batch_sharding
from lmx.parallel.rules import Rules, activation_rules


class PairRecords:
    """Pairs as indexable records (the sequence `eval_batches` reads)."""

    def __init__(self, pairs: Sequence[PreferencePair], seq_len: int, pad_id: int) -> None:
        self.pairs, self.seq_len, self.pad_id = pairs, seq_len, pad_id

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return pair_record(self.pairs[i], self.seq_len, self.pad_id)


def make_logps_fn(model: nn.Module, mesh: Mesh, rules: Rules) -> Callable[[Any, dict], jax.Array]:
    """Compiled ``(params, pair batch) -> [B, 2]`` summed response log-probs, replicated."""

    def fn(params: Any, batch: dict) -> jax.Array:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), activation_rules(rules):
            chosen, rejected, _, _ = pair_logps(model, params, batch)
        return jax.numpy.stack([chosen, rejected], axis=1)

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(fn, in_shardings=(None, step_batch_sharding(mesh)), out_shardings=replicated)


def compute_reference_logps(
    model: nn.Module,
    params: Any,
    mesh: Mesh,
    rules: Rules,
    pairs: Sequence[PreferencePair],
    seq_len: int,
    pad_id: int,
    global_batch: int,
) -> np.ndarray:
    """``[len(pairs), 2]`` float32: log ref(chosen), log ref(rejected) summed over response tokens."""
    fn = make_logps_fn(model, mesh, rules)
    sharding = step_batch_sharding(mesh)
    rows = process_rows(sharding, global_batch)
    out = np.zeros((len(pairs), 2), np.float32)
    for i, batch in enumerate(eval_batches(PairRecords(pairs, seq_len, pad_id), global_batch, 0, rows)):
        batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
        values = np.asarray(jax.device_get(fn(params, batch)))  # replicated: the whole global batch
        # Row r of global batch i is item i * global_batch + r (`eval_batches`).
        first = i * global_batch
        out[first : first + global_batch] = values[: len(pairs) - first]
    return out


def pairs_key(source: str, seq_len: int, pairs: Sequence[PreferencePair]) -> str:
    digest = hashlib.sha1(f"{source}|{seq_len}".encode())
    for pair in pairs:
        for ids in (pair.prompt, pair.chosen, pair.rejected):
            digest.update(np.asarray(ids, np.int32).tobytes())
            digest.update(b"|")
    return digest.hexdigest()[:16]


def cache_path(patterns: str, key: str) -> Path:
    """Where the reference log-probs of the files `patterns` (comma-separated globs) are stored."""
    first = sorted(glob.glob(os.path.expanduser(patterns.split(",")[0].strip()), recursive=True))[0]
    first = Path(first)
    return first.parent / "reference_logps" / f"{first.stem}-{key}.npy"


def cached_reference_logps(
    patterns: str,
    source: str,
    seq_len: int,
    pairs: Sequence[PreferencePair],
    compute: Callable[[], np.ndarray],
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, Path]:
    """The stored reference log-probs of `pairs`, computed (and stored) when there are none yet."""
    path = cache_path(patterns, pairs_key(source, seq_len, pairs))
    if path.is_file():
        values = np.load(path)
        if values.shape == (len(pairs), 2):
            log(f"reference log-probs: read {path}")
            return values, path
    values = compute()
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.npy")
        np.save(tmp, values)
        os.replace(tmp, path)
        log(f"reference log-probs: computed over {len(pairs)} pairs, stored in {path}")
    return values, path
