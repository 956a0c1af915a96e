"""`lmx export hf`: a run's language model as a transformers checkpoint directory.

The directory loads with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
(Llama, or Qwen3 for a QK-norm model; `lmx.hf.convert`), so lm-evaluation-harness, vLLM and the
model hubs can read it. It is written under a temporary name and renamed when complete, so an
interrupted export leaves no half directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import jax
import ml_dtypes
import numpy as np

from lmx.data.tokenizer import SentencePieceTokenizer
from lmx.errors import ConfigError
from lmx.hf.convert import check_exportable, hf_config, to_hf_tensors
from lmx.hf.safetensors_io import write_safetensors
from lmx.infer.runs import load_run, read_run_config
from lmx.model.transformer import Transformer, unstack_layers

Dtype = Literal["float32", "bfloat16"]
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def export_hf(
    run_dir: str | Path, out_dir: str | Path, step: int | None = None, dtype: Dtype = "float32", log=print
) -> Path:
    """Writes the run's model at `step` (the latest checkpoint by default) to `out_dir`, which must
    not exist yet (or be empty). Returns `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir}: exists and is not empty; export into a new directory")
    cfg = read_run_config(run_dir)
    check_exportable(cfg.model)
    run = load_run(run_dir, step, devices=jax.devices()[:1])
    if not isinstance(run.model, Transformer):
        raise ConfigError(
            f"{run_dir}: objective.kind={cfg.objective.kind!r} trains a {type(run.model).__name__}, not a causal "
            "language model; export its init_from run instead"
        )
    params = jax.device_get(run.params)
    if cfg.model.scan_layers:
        params = unstack_layers(params, cfg.model.n_layers)
    tensors = {name: np.asarray(a).astype(DTYPES[dtype]) for name, a in to_hf_tensors(params, cfg.model).items()}
    tokenizer = run.tokenizer
    bos, eos, pad = (-1, -1, -1) if tokenizer is None else (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = write_safetensors(tensors, staging)
        config = hf_config(cfg.model, bos, eos, pad, dtype)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": eos,
            "pad_token_id": config["pad_token_id"],
        }
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        written += ["config.json", "generation_config.json"]
        written += _tokenizer_files(run_dir, tokenizer, staging, cfg.model.max_seq_len, log)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    arch = config["architectures"][0]
    log(f"exported {run_dir} step {run.step} as {arch} ({dtype}) to {out_dir}: {', '.join(written)}")
    return out_dir


def _tokenizer_files(run_dir: Path, tokenizer, out: Path, max_length: int, log) -> list[str]:
    """The run's tokenizer in transformers' files: a SentencePiece model converted (lmx.hf.tokenizer_files),
    an imported tokenizer.json copied with its config."""
    if tokenizer is None:
        log(f"note: {run_dir} holds no tokenizer; the export has none (AutoTokenizer will not load it)")
        return []
    if isinstance(tokenizer, SentencePieceTokenizer):
        from lmx.hf.tokenizer_files import UNIGRAM, model_type, write_tokenizer_files

        if model_type(tokenizer) == UNIGRAM:
            log(
                "note: a unigram tokenizer: transformers' ids can differ from lmx's on ties between equally scored "
                "segmentations (long whitespace runs); BPE tokenizers (lmx's default) export exactly"
            )
        return write_tokenizer_files(tokenizer, out, max_length)
    names = []
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
            names.append(name)
    return names
