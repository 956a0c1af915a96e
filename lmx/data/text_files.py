"""Reading a user's text file whatever its encoding: UTF-8 (with or without a BOM) or UTF-16 (with a
BOM). Anything else, a binary file or another encoding, is one DataError naming the file and the
line of the first bad byte, instead of a UnicodeDecodeError or text silently garbled."""

from __future__ import annotations

import codecs
from pathlib import Path

from lmx.errors import DataError

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_ARCHIVES = {b"PK\x03\x04": "a zip archive (an .xlsx spreadsheet?)", b"\x1f\x8b": "gzip-compressed"}


def read_text(path: str | Path, kind: str = "text", hint: str = "") -> str:
    """The text of `path`: UTF-8, UTF-8 with a BOM, or UTF-16 with a BOM; anything else (a binary
    file, another encoding) is a DataError naming the file and the line of the first bad byte."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    for magic, what in _ARCHIVES.items():
        if data.startswith(magic):
            raise DataError(f"{path}: {what}, not {kind} text" + (f"; {hint}" if hint else ""))
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1 if encoding != "utf-16" else _utf16_line(data, e.start)
        raise DataError(
            f"{path}:{line}: not UTF-8/UTF-16 text (byte {data[e.start]:#04x} at offset {e.start}: a binary file, "
            "or another encoding? save it as UTF-8)"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{path}:{line}: not UTF-8/UTF-16 text (it holds NUL bytes: a binary file?)")
    return text


def _utf16_line(data: bytes, offset: int) -> int:
    """The line of byte `offset` in UTF-16 `data` (its decodable part)."""
    return data[: offset - offset % 2].decode("utf-16", errors="replace").count("\n") + 1
