"""Tokenize a corpus once into flat token files with a document index.

Layout of a prepared directory:
    {split}.tokens   the documents' tokens, each followed by EOS, concatenated (uint16 or uint32)
    {split}.index    int64 offsets: document i is tokens[index[i]:index[i + 1]]
    meta.json        written last: format, input fingerprint, dtype, and per split the documents,
                     tokens, raw UTF-8 bytes (the denominator of bits per byte) and the smallest
                     and largest token id (checked against the model's vocabulary on load)

Documents stream through in chunks, so memory stays bounded for corpora larger than RAM, and
SentencePiece encodes each chunk on all cores. Token and index files are written under temporary
names and renamed when complete; `meta.json` is removed before and written after, so a directory
whose meta.json is missing or disagrees with the files is never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lmx import atomic
from lmx.config import DataConfig
from lmx.data.corpus import SPLITS, Corpus, CorpusStats, Split
from lmx.data.tokenizer import Tokenizer, load_tokenizer, train_tokenizer
from lmx.errors import DataError

FORMAT_VERSION = 1
T = TypeVar("T")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def input_fingerprint(corpus: Corpus, tokenizer: Tokenizer) -> str:
    """Identifies the inputs: corpus files (name, size, mtime), split rule, tokenizer, format."""
    files = [(name, path.stat().st_size, path.stat().st_mtime_ns) for name, path in corpus.files()]
    payload = {
        "format": FORMAT_VERSION,
        "corpus": corpus.spec,
        "field": corpus.field,
        "validation_fraction": corpus.validation_fraction,
        "files": files,
        "tokenizer": tokenizer.fingerprint,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_meta(out_dir: Path) -> dict[str, Any] | None:
    """The metadata of a complete prepared directory, or None if it is missing or inconsistent."""
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    itemsize = np.dtype(meta.get("dtype", "uint16")).itemsize
    for split, info in meta.get("splits", {}).items():
        tokens, index = out_dir / f"{split}.tokens", out_dir / f"{split}.index"
        if not tokens.is_file() or tokens.stat().st_size != info["tokens"] * itemsize:
            return None
        if not index.is_file() or index.stat().st_size != (info["documents"] + 1) * 8:
            return None
    return meta


def encode_documents(tokenizer: Tokenizer, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, lengths)``: the documents' ids, each followed by EOS, in one flat array, and the
    length of each document with its EOS."""
    ids = tokenizer.encode_batch(texts)
    lengths = np.array([len(x) + 1 for x in ids], np.int64)
    flat = np.fromiter((t for x in ids for t in (*x, tokenizer.eos_id)), dtype, count=int(lengths.sum()))
    return flat, lengths


def _write_split(
    corpus: Corpus, split: Split, tokenizer: Tokenizer, out_dir: Path, dtype: np.dtype, chunk_docs: int
) -> dict:
    stats = CorpusStats()
    tokens_tmp, index_tmp = out_dir / f"{split}.tokens.partial", out_dir / f"{split}.index.partial"
    n_tokens = 0
    lo, hi = None, None
    with open(tokens_tmp, "wb") as tokens_file, open(index_tmp, "wb") as index_file:
        index_file.write(np.zeros(1, np.int64).tobytes())
        for chunk in _chunks(corpus.documents(split, stats), chunk_docs):
            flat, lengths = encode_documents(tokenizer, [doc.text for doc in chunk], dtype)
            tokens_file.write(flat.tobytes())
            index_file.write((n_tokens + np.cumsum(lengths)).tobytes())
            n_tokens += int(lengths.sum())
            if len(flat):
                lo = int(flat.min()) if lo is None else min(lo, int(flat.min()))
                hi = int(flat.max()) if hi is None else max(hi, int(flat.max()))
    os.replace(tokens_tmp, out_dir / f"{split}.tokens")
    os.replace(index_tmp, out_dir / f"{split}.index")
    return {
        "documents": stats.documents,
        "tokens": n_tokens,
        "utf8_bytes": stats.utf8_bytes,
        "invalid_utf8_documents": stats.invalid_utf8_documents,
        "empty_documents": stats.empty_documents,
        "min_id": lo,
        "max_id": hi,
        # The recorded ids describe the file as written: a file modified since (same size, which
        # read_meta checks, but another mtime) is scanned again instead (`token_id_range`).
        "tokens_mtime_ns": (out_dir / f"{split}.tokens").stat().st_mtime_ns,
    }


def prepare(corpus: Corpus, tokenizer: Tokenizer, out_dir: str | Path, chunk_docs: int = 256) -> dict[str, Any]:
    """Tokenizes every split of `corpus` into `out_dir`. Returns the metadata.

    Does nothing (and returns the existing metadata) when `out_dir` already holds a complete
    preparation of the same inputs.
    """
    out_dir = Path(out_dir)
    fingerprint = input_fingerprint(corpus, tokenizer)
    existing = read_meta(out_dir)
    if existing is not None and existing.get("fingerprint") == fingerprint:
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # from here on, the directory is not trusted
    dtype = token_dtype(tokenizer.vocab_size)
    splits = {split: _write_split(corpus, split, tokenizer, out_dir, dtype, chunk_docs) for split in SPLITS}
    meta = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "corpus": corpus.spec,
        "tokenizer": str(tokenizer.path) if tokenizer.path else None,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "dtype": dtype.name,
        "splits": splits,
    }
    atomic.write_json(out_dir / "meta.json", meta)
    return meta


def load_split(
    out_dir: str | Path, split: Split, vocab_size: int | None = None
) -> tuple[np.memmap, np.ndarray, dict[str, Any]]:
    """(tokens memmap, document offsets, metadata) of a prepared split. With `vocab_size`, raises
    DataError unless every token id lies in ``[0, vocab_size)`` (`check_token_ids`)."""
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    if meta is None:
        raise DataError(
            f"{out_dir}: no complete prepared data (meta.json missing or files incomplete); run `lmx data prepare`"
        )
    if split not in meta["splits"]:
        raise DataError(f"{out_dir}: no split {split!r}")
    tokens = np.memmap(out_dir / f"{split}.tokens", dtype=meta["dtype"], mode="r")
    offsets = np.fromfile(out_dir / f"{split}.index", dtype=np.int64)
    if vocab_size is not None:
        check_token_ids(out_dir, split, meta, vocab_size, tokens)
    return tokens, offsets, meta


# (path, size, mtime_ns) -> (min id, max id) of token files scanned by this process.
_scanned_ranges: dict[tuple[str, int, int], tuple[int, int] | None] = {}


def token_id_range(
    out_dir: str | Path, split: Split, meta: dict[str, Any], tokens: np.ndarray | None = None
) -> tuple[int, int] | None:
    """``(smallest, largest)`` token id of a prepared split (None when it has no tokens).

    The cheap path: the ids recorded by `prepare`, trusted while the token file has the size
    (checked by `read_meta`) and the mtime it had then. Otherwise (a meta.json written before the
    ids were recorded, or a file modified or copied since) the file is scanned: one pass over the
    memmap, done once per process and file version (the result is cached by path, size and mtime;
    meta.json is never rewritten by a reader).
    """
    path = Path(out_dir) / f"{split}.tokens"
    info = meta["splits"][split]
    stat = path.stat()
    if info.get("max_id") is not None and info.get("tokens_mtime_ns") == stat.st_mtime_ns:
        return int(info["min_id"]), int(info["max_id"])
    if info.get("tokens", 0) == 0:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _scanned_ranges:
        if tokens is None:
            tokens = np.memmap(path, dtype=meta["dtype"], mode="r")
        _scanned_ranges[key] = (int(tokens.min()), int(tokens.max())) if len(tokens) else None
    return _scanned_ranges[key]


def check_token_ids(
    out_dir: str | Path, split: Split, meta: dict[str, Any], vocab_size: int, tokens: np.ndarray | None = None
) -> None:
    """Raises DataError, naming the token file, unless the split's ids lie in ``[0, vocab_size)``:
    an id beyond the model's embedding table would turn the loss into NaN, far from its cause."""
    found = token_id_range(out_dir, split, meta, tokens)
    if found is None or (found[0] >= 0 and found[1] < vocab_size):
        return
    path = Path(out_dir) / f"{split}.tokens"
    message = f"{path}: token ids must lie in [0, {vocab_size}) (model.vocab_size={vocab_size}), found {list(found)}"
    tokenizer_vocab = meta.get("vocab_size")
    if tokenizer_vocab is not None and tokenizer_vocab > vocab_size:
        message += (
            f"; it was prepared with a tokenizer of {tokenizer_vocab} ids ({meta.get('tokenizer')}): set "
            f"model.vocab_size to at least {tokenizer_vocab} or use a tokenizer of at most {vocab_size} ids"
        )
    elif tokenizer_vocab is not None:
        message += (
            f"; its tokenizer has {tokenizer_vocab} ids, so the file changed after `lmx data prepare`: delete "
            f"{Path(out_dir) / 'meta.json'} to prepare it again"
        )
    raise DataError(message)


def corpus_slug(spec: str) -> str:
    """A directory name for a corpus spec: readable for the built-in one, hashed otherwise."""
    return spec if spec == "stdlib" else "corpus-" + hashlib.sha1(spec.encode()).hexdigest()[:10]


def data_paths(cfg: DataConfig, vocab_size: int) -> tuple[Path, Path]:
    """(tokenizer model, prepared directory) for a data config and vocabulary size."""
    base = Path(cfg.dir) / corpus_slug(cfg.corpus)
    tokenizer = Path(cfg.tokenizer) if cfg.tokenizer else base / f"sp-{cfg.tokenizer_type}-{vocab_size}.model"
    name = tokenizer.stem
    if tokenizer.suffix == ".json":  # every imported run's is tokenizer.json: tell them apart by place
        name += "-" + hashlib.sha1(str(tokenizer.absolute()).encode()).hexdigest()[:8]
    return tokenizer, base / f"tokens-{name}"


def ensure_prepared(cfg: DataConfig, vocab_size: int, log=print) -> tuple[Tokenizer, Path, dict[str, Any]]:
    """Trains the tokenizer if missing and prepares the corpus if needed (a no-op when up to date).

    Then checks every split's token ids against `vocab_size` (the model's vocabulary): training and
    `lmx eval` open the prepared data here, so ids a model cannot embed fail here, naming the file.
    In a multi-process run (every process calls this) process 0 prepares while the others wait, then
    they read what it wrote: one writer per file on shared storage.
    """
    # Imported here: `lmx data prepare` uses this module without ever starting JAX.
    import jax

    from lmx.parallel.distributed import barrier

    if jax.process_count() > 1:
        if jax.process_index() == 0:
            _ensure_prepared(cfg, vocab_size, log)
        barrier("lmx/data-prepared")
    return _ensure_prepared(cfg, vocab_size, log)


def _ensure_prepared(cfg: DataConfig, vocab_size: int, log=print) -> tuple[Tokenizer, Path, dict[str, Any]]:
    corpus = Corpus.parse(cfg.corpus, cfg.validation_fraction)
    tokenizer_path, prepared_dir = data_paths(cfg, vocab_size)
    if tokenizer_path.is_file():
        tokenizer = load_tokenizer(tokenizer_path)
    elif cfg.tokenizer:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r}: no such file")
    else:
        log(f"training a {cfg.tokenizer_type} tokenizer (vocab {vocab_size}) on {cfg.corpus} -> {tokenizer_path}")
        texts = (d.text for d in corpus.documents("train"))
        tokenizer = train_tokenizer(
            texts,
            tokenizer_path,
            vocab_size,
            cfg.tokenizer_type,
            max_bytes=cfg.tokenizer_train_bytes,
            source=f"corpus {cfg.corpus!r}",
        )
    if read_meta(prepared_dir) is None:
        log(f"tokenizing {cfg.corpus} -> {prepared_dir}")
    meta = prepare(corpus, tokenizer, prepared_dir)
    for split in meta["splits"]:
        check_token_ids(prepared_dir, split, meta, vocab_size)
    return tokenizer, prepared_dir, meta
