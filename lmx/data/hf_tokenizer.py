"""Hugging Face ``tokenizer.json`` tokenizers behind lmx's tokenizer interface (`lmx.data.tokenizer`).

Imported models (`lmx import hf`) bring their tokenizer as a ``tokenizer.json``, read here with the
`tokenizers` library (the ``hf`` extra). Its special tokens are named by the ``tokenizer_config.json``
beside it (``bos_token``, ``eos_token``, ``pad_token``), as `transformers` reads them. Text is encoded
as lmx's SentencePiece models encode it: no special tokens added (lmx adds BOS and EOS itself where
its formats want them), and a special token's spelling in text read as text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmx.errors import DataError


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character that stands for each byte.

    Byte-level BPE (GPT-2, Llama 3, Qwen) writes every byte as one printable character; bytes that
    print as themselves keep their character, the others take 256 + n in order (Radford et al. 2019,
    `bytes_to_unicode` in GPT-2's encoder.py).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _special_name(value: Any) -> str | None:
    """A tokenizer_config.json special-token entry: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """A ``tokenizer.json`` loaded with the `tokenizers` library."""

    def __init__(self, text: str, config: dict[str, Any], path: Path | None = None) -> None:
        from tokenizers import Tokenizer as BackendTokenizer

        self.path = path
        self.text = text
        self.config = config
        self.backend = BackendTokenizer.from_str(text)
        # A special token's spelling in text is text (as SentencePiece reads it): a document that
        # mentions "<|endoftext|>" must not end there. lmx places special ids itself.
        self.backend.encode_special_tokens = True
        self._special = {
            key: self._id_of(_special_name(config.get(f"{key}_token"))) for key in ("bos", "eos", "pad", "unk")
        }
        self._added = {token.content for token in self.backend.get_added_tokens_decoder().values() if token.special}

    @classmethod
    def load(cls, path: str | Path) -> HFTokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer {str(path)!r} does not exist")
        config_path = path.with_name("tokenizer_config.json")
        try:
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
            return cls(path.read_text(encoding="utf-8"), config, path)
        except ImportError:
            raise DataError(
                f"tokenizer {str(path)!r}: reading tokenizer.json needs the `tokenizers` package "
                "(pip install 'lmx[hf]')"
            ) from None
        except Exception as e:  # tokenizers raises a bare Exception for a malformed file
            raise DataError(f"tokenizer {str(path)!r} cannot be loaded: {e}") from None

    def _id_of(self, token: str | None) -> int:
        found = None if token is None else self.backend.token_to_id(token)
        return -1 if found is None else found

    @property
    def vocab_size(self) -> int:
        """The highest id + 1 (a vocabulary may leave ids unused)."""
        return max(self.backend.get_vocab(with_added_tokens=True).values()) + 1

    @property
    def pad_id(self) -> int:
        return self._special["pad"]

    @property
    def bos_id(self) -> int:
        return self._special["bos"]

    @property
    def eos_id(self) -> int:
        if self._special["eos"] < 0:
            raise DataError(
                f"{self.path or 'tokenizer'}: no eos_token in tokenizer_config.json (lmx ends texts with it)"
            )
        return self._special["eos"]

    @property
    def fingerprint(self) -> str:
        names = json.dumps({k: self.config.get(f"{k}_token") for k in ("bos", "eos", "pad", "unk")}, sort_keys=True)
        return hashlib.sha256((self.text + names).encode()).hexdigest()

    def byte_lengths(self, size: int | None = None) -> np.ndarray:
        """UTF-8 bytes of text each id stands for (see `SentencePieceTokenizer.byte_lengths`).

        Byte-level vocabularies spell bytes with GPT-2's alphabet; SentencePiece-style ones write a
        space as U+2581 and unknown bytes as ``<0xNN>``. Special tokens stand for no text.
        """
        lengths = np.zeros(size or self.vocab_size, np.int32)
        vocab = self.backend.get_vocab(with_added_tokens=True)
        byte_level = "ByteLevel" in json.dumps(json.loads(self.text).get("decoder"))
        bytes_of = _byte_decoder()
        for token, i in vocab.items():
            if i >= len(lengths) or token in self._added:
                continue
            if byte_level:
                lengths[i] = sum(1 if c in bytes_of else len(c.encode()) for c in token)
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                lengths[i] = 1
            else:
                lengths[i] = len(token.replace("\u2581", " ").encode())
        return lengths

    def piece_id(self, piece: str) -> int:
        found = self.backend.token_to_id(piece)
        if found is None:
            raise DataError(f"tokenizer has no piece {piece!r}")
        return found

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
        """Encodes many texts at once (`tokenizers` spreads them over its own thread pool, sized by
        RAYON_NUM_THREADS; `num_threads` is accepted for the interface)."""
        del num_threads
        if not texts:
            return []
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self.backend.decode_batch([list(ids) for ids in batch], skip_special_tokens=True)
