"""Tokenizers: the interface lmx reads text through, and SentencePiece models trained on a corpus.

Two kinds sit behind one interface (`Tokenizer`): SentencePiece models (``*.model``, what lmx trains)
and Hugging Face ``tokenizer.json`` files (`lmx.data.hf_tokenizer`, what imported models bring).
`load_tokenizer` picks by the file; a run directory holds ``tokenizer.model`` or ``tokenizer.json``.

SentencePiece training settings make source code round-trip exactly: identity normalisation, no whitespace
collapsing, whitespace-only pieces (indentation), newline as its own symbol, and byte fallback for
any character the vocabulary lacks. Special ids are fixed at training (pad 0, unk 1, bos 2, eos 3)
and always read back from the model, never assumed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import sentencepiece as spm

from lmx.errors import DataError

# Chat roles get single tokens, so the SFT template never splits them (see lmx.data.chat).
CHAT_SYMBOLS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


class Tokenizer(Protocol):
    """What lmx needs of a tokenizer: ids and text both ways, special ids, and each id's bytes."""

    path: Path | None

    @property
    def vocab_size(self) -> int: ...
    @property
    def pad_id(self) -> int: ...  # -1 when there is none
    @property
    def bos_id(self) -> int: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...  # changes whenever the ids of some text would
    def byte_lengths(self, size: int | None = None) -> np.ndarray: ...
    def piece_id(self, piece: str) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]: ...


# The names a tokenizer has in a run directory, by kind.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A SentencePiece model, or a Hugging Face ``tokenizer.json`` (by its suffix)."""
    if Path(path).suffix == ".json":
        from lmx.data.hf_tokenizer import HFTokenizer  # needs the `tokenizers` package (the hf extra)

        return HFTokenizer.load(path)
    return SentencePieceTokenizer.load(path)


def find_tokenizer(directory: str | Path) -> Path | None:
    """The tokenizer file a run directory holds, or None."""
    for name in TOKENIZER_FILES:
        if (Path(directory) / name).is_file():
            return Path(directory) / name
    return None


class SentencePieceTokenizer:
    """A loaded SentencePiece model."""

    def __init__(self, model_proto: bytes, path: Path | None = None) -> None:
        self.path = path
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def load(cls, path: str | Path) -> SentencePieceTokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer model {str(path)!r} does not exist")
        try:
            return cls(path.read_bytes(), path)
        except RuntimeError as e:
            raise DataError(f"tokenizer model {str(path)!r} cannot be loaded: {e}") from None

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the model: prepared data records it, so a changed tokenizer is noticed."""
        return hashlib.sha256(self.proto).hexdigest()

    def byte_lengths(self, size: int | None = None) -> np.ndarray:
        """UTF-8 bytes of text each id stands for: [size] int32 (default: the vocabulary size).

        Summed over a text's ids this gives the text's byte count exactly (byte-fallback pieces are
        one byte, control ids none), which makes bits per byte exact for any tokenizer. Ids past the
        vocabulary (a model's padded embedding) get 0.
        """
        lengths = np.zeros(size or self.vocab_size, np.int32)
        for i in range(min(len(lengths), self.vocab_size)):
            if self.sp.is_byte(i):
                lengths[i] = 1
            elif not (self.sp.is_control(i) or self.sp.is_unknown(i)):
                lengths[i] = len(self.sp.id_to_piece(i).replace("\u2581", " ").encode())
        return lengths

    def piece_id(self, piece: str) -> int:
        i = self.sp.piece_to_id(piece)
        if i == self.sp.unk_id() and piece != self.sp.id_to_piece(i):
            raise DataError(f"tokenizer has no piece {piece!r}")
        return i

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        """Encodes many texts at once; SentencePiece spreads them over `num_threads` (-1: all cores)."""
        return self.sp.encode(list(texts), num_threads=num_threads if num_threads > 0 else os.cpu_count() or 1)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self.sp.decode([list(ids) for ids in batch])


def _sample(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    total = 0
    for text in texts:
        yield text
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            return


def train_tokenizer(
    texts: Iterable[str],
    out: str | Path,
    vocab_size: int,
    model_type: Literal["bpe", "unigram"] = "bpe",
    user_symbols: Sequence[str] = CHAT_SYMBOLS,
    max_bytes: int = 10_000_000,
    source: str = "corpus",
) -> SentencePieceTokenizer:
    """Trains on up to `max_bytes` of `texts` and writes the model to `out` (atomically).

    A vocabulary the corpus cannot support (too large for its pieces, or too small for its
    characters and symbols) raises `DataError` with SentencePiece's reason.
    """
    out = Path(out)
    model = io.BytesIO()
    sample = list(_sample(texts, max_bytes))
    if not sample:
        raise DataError(f"{source}: no text to train a tokenizer on")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            add_dummy_prefix=False,
            split_digits=True,
            byte_fallback=True,
            max_sentence_length=1 << 24,  # documents are sentences here; keep whole files
            user_defined_symbols=["\n", *user_symbols],
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise DataError(f"{source}: cannot train a tokenizer with vocab size {vocab_size}: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model.getvalue())
    os.replace(tmp, out)
    return SentencePieceTokenizer(model.getvalue(), out)
