"""`lmx export hf`: a run's language model as a transformers checkpoint directory.

The directory loads with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
(Llama, or Qwen3 for a QK-norm model; `lmx.hf.convert`), so lm-evaluation-harness, vLLM and the
model hubs can read it. It is written under a temporary name and renamed when complete, so an
interrupted export leaves no half directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import jax
import ml_dtypes
import numpy as np

from lmx import atomic
from lmx.data.tokenizer import SentencePieceTokenizer
from lmx.errors import ConfigError
from lmx.hf.convert import check_exportable, hf_config, to_hf_tensors
from lmx.hf.safetensors_io import write_safetensors
from lmx.infer.runs import load_run, read_run_config
from lmx.model.transformer import Transformer, unstack_layers
from lmx.objectives.chat import trained_on_chat_template
from lmx.objectives.registry import objective_of

Dtype = Literal["float32", "bfloat16"]
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def export_hf(
    run_dir: str | Path,
    out_dir: str | Path,
    step: int | None = None,
    dtype: Dtype = "float32",
    max_shard_bytes: int = 2 << 30,
    log=print,
) -> Path:
    """Writes the run's model at `step` (the latest checkpoint by default) to `out_dir`, which must
    not exist yet (or be empty), in safetensors files of at most `max_shard_bytes`. Returns `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: one of {', '.join(DTYPES)}")
    atomic.require_new_directory(out_dir, "export")  # before loading anything
    cfg = read_run_config(run_dir)
    check_exportable(cfg.model)
    run = load_run(run_dir, step, devices=jax.devices()[:1])
    params = jax.device_get(run.params)
    # A model with parameters beyond the language model's (a reward model's head) is not a causal LM.
    extra = sorted(
        set(params) - {"embed", "layers", "final_norm", "unembed"} - {k for k in params if k.startswith("layer_")}
    )
    if not isinstance(run.model, Transformer) or extra:
        raise ConfigError(
            f"{run_dir}: objective.kind={cfg.objective.kind!r} trains a {type(run.model).__name__}"
            f"{' with ' + ', '.join(extra) if extra else ''}, not a causal language model; export its init_from "
            "run instead"
        )
    if cfg.model.scan_layers:
        params = unstack_layers(params, cfg.model.n_layers)
    tensors = {name: np.asarray(a).astype(DTYPES[dtype]) for name, a in to_hf_tensors(params, cfg.model).items()}
    tokenizer = run.tokenizer
    bos, eos, pad = (-1, -1, -1) if tokenizer is None else (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)

    with atomic.new_directory(out_dir, "export") as staging:
        written = write_safetensors(tensors, staging, max_shard_bytes)
        config = hf_config(cfg.model, bos, eos, pad, dtype)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        written += ["config.json", "generation_config.json"]
        chat_trained = trained_on_chat_template(objective_of(cfg))
        written += _tokenizer_files(run_dir, tokenizer, staging, cfg.model.max_seq_len, chat_trained, log)
    arch = config["architectures"][0]
    log(f"exported {run_dir} step {run.step} as {arch} ({dtype}) to {out_dir}: {', '.join(written)}")
    return out_dir


def _tokenizer_files(run_dir: Path, tokenizer, out: Path, max_length: int, chat_trained: bool, log) -> list[str]:
    """The run's tokenizer in transformers' files: a SentencePiece model converted (lmx.hf.tokenizer_files),
    an imported tokenizer.json copied with its config (whose chat template becomes lmx's when the run
    was trained on lmx's)."""
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
    from lmx.hf.tokenizer_files import CHAT_TEMPLATE, has_chat_roles

    shutil.copyfile(run_dir / "tokenizer.json", out / "tokenizer.json")
    config = dict(tokenizer.config)  # the run's tokenizer_config.json, as HFTokenizer read it
    if chat_trained and has_chat_roles(tokenizer):  # it now answers in lmx's template, not its source's
        config["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ["tokenizer.json", "tokenizer_config.json"]
