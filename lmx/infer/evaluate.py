"""Evaluation of a run directory's checkpoint: loss, perplexity and bits per byte on a split of its
corpus, on any text (a corpus spec) or on a file of token ids (`lmx eval RUN`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmx.data.corpus import Corpus, Split
from lmx.data.prepare import encode_documents, ensure_prepared
from lmx.data.pretrain import Packing, TokenWindows
from lmx.data.tokenizer import Tokenizer
from lmx.errors import DataError
from lmx.infer.runs import load_run
from lmx.objectives.lm_eval import EvalResult, config_eval_batches, evaluate, make_eval_step, source_eval_batches
from lmx.parallel.mapping import step_batch_sharding


def text_windows(spec: str, tokenizer: Tokenizer, seq_len: int, packing: Packing) -> TokenWindows:
    """Windows of every document of a corpus spec (``text:GLOB``, ``jsonl:GLOB@FIELD``, ``stdlib``),
    tokenized as in training: each document followed by EOS."""
    docs = [d.text for d in Corpus.parse(spec).documents(None)]
    tokens, lengths = encode_documents(tokenizer, docs, np.dtype(np.int32))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenWindows.from_tokens(tokens, offsets, seq_len, packing, f"corpus {spec!r}")


def token_file_windows(path: str | Path, vocab_size: int, seq_len: int) -> TokenWindows:
    """Windows of a 1-D integer array of token ids in a ``.npy`` file, read as one stream."""
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read a .npy token file ({e})") from None
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array of token ids, got {tokens.dtype} {tokens.shape}")
    if len(tokens):
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise DataError(
                f"{path}: token ids must lie in [0, {vocab_size}) (model.vocab_size={vocab_size}), found [{lo}, {hi}]"
            )
    return TokenWindows.from_tokens(tokens, np.array([0, len(tokens)]), seq_len, "concat", str(path))


def evaluate_run(
    run_dir: str | Path,
    split: Split = "validation",
    max_batches: int = 0,
    step: int | None = None,
    text: str | None = None,
    tokens_file: str | Path | None = None,
) -> tuple[int, EvalResult]:
    """Evaluates a run directory's checkpoint (the latest by default) with the run's own config:
    on a split of its corpus, or on any text (`text`, a corpus spec) or token file (`tokens_file`).

    Returns ``(step, EvalResult)``.
    """
    run = load_run(run_dir, step)
    cfg, mesh = run.cfg, run.mesh
    if text is not None or tokens_file is not None:
        tokenizer = run.require_tokenizer()
        if tokens_file is not None:
            source = token_file_windows(tokens_file, cfg.model.vocab_size, cfg.data.seq_len)
        else:
            source = text_windows(text, tokenizer, cfg.data.seq_len, cfg.data.packing)
        batches = source_eval_batches(cfg, mesh, source, max_batches)
    else:
        tokenizer, prepared_dir, _ = ensure_prepared(cfg.data, cfg.model.vocab_size)
        batches = config_eval_batches(cfg, mesh, prepared_dir, split, max_batches)
    eval_step = make_eval_step(run.model, mesh, cfg.mesh.rules, tokenizer.byte_lengths(cfg.model.vocab_size))
    return run.step, evaluate(eval_step, run.params, batches, step_batch_sharding(mesh))
