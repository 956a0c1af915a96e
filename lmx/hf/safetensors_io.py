"""Reading and writing transformers' safetensors checkpoints with NumPy (no torch needed).

One file (``model.safetensors``) or shards with an index (``model.safetensors.index.json``), as
`transformers`' ``save_pretrained`` writes them. bfloat16 arrives and leaves as ``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmx.errors import CheckpointError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def write_safetensors(tensors: dict[str, np.ndarray], out_dir: Path, max_shard_bytes: int = 2 << 30) -> list[str]:
    """Writes `tensors` as shards of at most `max_shard_bytes` (one file when they fit); returns the
    files written. transformers needs ``{"format": "pt"}`` in each file's metadata."""
    from safetensors.numpy import save_file

    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        array = tensors[name]
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / SINGLE), metadata={"format": "pt"})
        return [SINGLE]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / file), metadata={"format": "pt"})
        files.append(file)
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX]


def read_safetensors(hf_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of a transformers checkpoint directory, by name."""
    from safetensors.numpy import load_file

    if (hf_dir / SINGLE).is_file():
        files = [hf_dir / SINGLE]
    elif (hf_dir / INDEX).is_file():
        try:
            weight_map = json.loads((hf_dir / INDEX).read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{hf_dir / INDEX}: not a safetensors index ({type(e).__name__}: {e})") from None
        files = [hf_dir / name for name in sorted(set(weight_map.values()))]
    else:
        raise CheckpointError(
            f"{hf_dir}: no {SINGLE} or {INDEX} (lmx reads safetensors checkpoints; convert .bin ones with "
            "transformers' save_pretrained)"
        )
    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"{file}: cannot read it ({type(e).__name__}: {e})") from e
    return tensors
