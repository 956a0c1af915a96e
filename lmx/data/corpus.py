"""Text corpora: streams of documents from text files, JSONL files, or the built-in `stdlib` corpus.

A corpus is named by a spec string:
- ``stdlib``: the `.py` sources of the running interpreter's standard library (found through
  `sysconfig`, third-party `site-packages` excluded). Every machine with Python has it, so the main
  job runs offline; nothing is copied into the repository.
- ``text:PATTERN[,PATTERN...]``: text files matched by glob patterns (``**`` recurses).
- ``jsonl:PATTERN[,PATTERN...]@FIELD``: one document per JSONL line, read from ``FIELD``.

Documents are split into ``train`` and ``validation`` deterministically by a hash of their name
(the file's path relative to the pattern's base, plus the line number for JSONL), so the split does
not depend on the order files are found in, or on which machine reads them.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from lmx.errors import DataError

Split = Literal["train", "validation"]
SPLITS: tuple[Split, ...] = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class Document:
    name: str  # stable identifier: relative path (and line for JSONL)
    text: str


@dataclasses.dataclass
class CorpusStats:
    """Counts gathered while a corpus is read (one object per pass)."""

    documents: int = 0
    utf8_bytes: int = 0  # bytes of the decoded text re-encoded as UTF-8 (the bits-per-byte denominator)
    invalid_utf8_documents: int = 0  # documents with undecodable bytes, replaced by U+FFFD
    empty_documents: int = 0  # skipped


def split_of(name: str, validation_fraction: float) -> Split:
    """The split of a document, from a hash of its name: stable across machines and orderings."""
    h = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big")
    return "validation" if h / 2**64 < validation_fraction else "train"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files() -> list[tuple[str, Path]]:
    root = stdlib_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Third-party packages installed into the base interpreter are not the standard library.
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for f in filenames:
            if f.endswith(".py"):
                path = Path(dirpath) / f
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def _glob_files(patterns: list[str]) -> list[tuple[str, Path]]:
    files = []
    for pattern in patterns:
        matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
        if not matches:
            raise DataError(f"corpus pattern {pattern!r} matches no files")
        base = Path(os.path.commonpath(matches)) if len(matches) > 1 else Path(matches[0]).parent
        files.extend((Path(m).relative_to(base).as_posix(), Path(m)) for m in matches)
    return files


def _decode(raw: bytes, stats: CorpusStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8_documents += 1
        return raw.decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A parsed corpus spec. `documents(split)` streams; nothing is held in memory."""

    spec: str
    kind: Literal["stdlib", "text", "jsonl"]
    patterns: tuple[str, ...] = ()
    field: str = "text"
    validation_fraction: float = 0.02

    @classmethod
    def parse(cls, spec: str, validation_fraction: float = 0.02) -> Corpus:
        if spec == "stdlib":
            return cls(spec, "stdlib", validation_fraction=validation_fraction)
        kind, sep, rest = spec.partition(":")
        if sep and kind == "text" and rest:
            return cls(spec, "text", tuple(rest.split(",")), validation_fraction=validation_fraction)
        if sep and kind == "jsonl" and rest:
            patterns, at, field = rest.rpartition("@")
            if not at or not field or not patterns:
                raise DataError(f"corpus {spec!r}: a JSONL corpus is jsonl:PATTERN@FIELD")
            return cls(spec, "jsonl", tuple(patterns.split(",")), field, validation_fraction)
        raise DataError(f"corpus {spec!r}: expected 'stdlib', 'text:PATTERN' or 'jsonl:PATTERN@FIELD'")

    def files(self) -> list[tuple[str, Path]]:
        """(name, path) of every input file, sorted: the corpus's identity for caching."""
        files = _stdlib_files() if self.kind == "stdlib" else _glob_files(list(self.patterns))
        if not files:
            raise DataError(f"corpus {self.spec!r} has no files")
        return files

    def documents(self, split: Split | None, stats: CorpusStats | None = None) -> Iterator[Document]:
        """The non-empty documents of `split` (all of them for None), in a fixed order."""
        stats = stats if stats is not None else CorpusStats()

        def keep(name: str) -> bool:
            return split is None or split_of(name, self.validation_fraction) == split

        for name, text in self._documents(keep, stats):
            if not text:
                stats.empty_documents += 1
                continue
            stats.documents += 1
            stats.utf8_bytes += len(text.encode("utf-8"))
            yield Document(name, text)
        if stats.documents == 0:
            where = f" in split {split!r}" if split else ""
            raise DataError(f"corpus {self.spec!r} has no non-empty documents{where}")

    def _documents(self, keep: Callable[[str], bool], stats: CorpusStats) -> Iterator[tuple[str, str]]:
        """(name, text) of the documents whose name `keep` accepts; only those are decoded."""
        for name, path in self.files():
            if self.kind != "jsonl":
                if keep(name):
                    yield name, _decode(path.read_bytes(), stats)
                continue
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    line_stats = CorpusStats()
                    try:
                        record = json.loads(_decode(raw, line_stats))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
                    if not isinstance(record, dict) or self.field not in record:
                        raise DataError(f"{path}:{lineno}: missing field {self.field!r}")
                    if not isinstance(record[self.field], str):
                        raise DataError(f"{path}:{lineno}: field {self.field!r} is not a string")
                    if keep(f"{name}:{lineno}"):
                        stats.invalid_utf8_documents += line_stats.invalid_utf8_documents
                        yield f"{name}:{lineno}", record[self.field]
