"""What a CSV recipe's connection and an object's ``options`` may say, checked when config loads.

:class:`CsvConnection` names the directory files are read from; :class:`CsvOptions` holds one
object's path or glob and its CSV dialect. The validators refuse, before any file is touched, a
path that could name anything outside ``base_path`` and an encoding the reader cannot cut at line
ends byte by byte and recover row by row (:func:`check_encoding`).
"""

from __future__ import annotations

import codecs
import importlib
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dativo_dagster.sources.base import ConnectionConfig, SourceOptions

_ASCII = "".join(map(chr, range(128)))

_UNICODE = frozenset({"utf-8", "utf-8-sig", "ascii", "iso8859-1"})
"""Encodings (as :func:`codecs.lookup` names them) taken as they are: UTF-8 (with or without a BOM),
ASCII and Latin-1."""

MULTIBYTE_ASCII_FROM: dict[str, int] = {
    # every byte of a multibyte character is 0x80 or above: ASCII bytes are always ASCII text
    "euc_jp": 0x80,
    "euc_jis_2004": 0x80,
    "euc_jisx0213": 0x80,
    "euc_kr": 0x80,
    "gb2312": 0x80,
    # the second byte of a two-byte character may be an ASCII byte from here on
    "shift_jis": 0x40,
    "cp932": 0x40,
    "shift_jis_2004": 0x40,
    "shift_jisx0213": 0x40,
    "gbk": 0x40,
    "gb18030": 0x30,  # its four-byte characters hold the digits 0-9
    "big5": 0x40,
    "big5hkscs": 0x40,
    "cp950": 0x40,
    "cp949": 0x41,
    "johab": 0x31,
}
"""The multibyte (CJK) encodings accepted, each with the lowest ASCII byte that can also be part of a
multibyte character. They are stateless (no shift sequences), never use a byte below 0x30 inside a
character (so line ends, ``"``, ``'``, ``,``, ``;`` and tab always stand for themselves), and decode
a file row by row exactly as they decode it whole; ``quote_char`` must lie below that byte, since the
reader counts quotes in the file's bytes."""


def check_encoding(value: str) -> codecs.CodecInfo:
    """The codec of ``value`` if a file in it can be cut at line ends and recovered row by row.

    Accepted: UTF-8 (with or without a BOM), ASCII, Latin-1, every one-byte-one-character
    encoding whose bytes below 0x80 are ASCII (ISO-8859-*, Windows-125x, the cp* and mac_* code
    pages, KOI8, ...) and the CJK encodings of :data:`MULTIBYTE_ASCII_FROM`. Everything else is
    refused: utf-16/utf-32 (not ASCII-compatible), utf-7, hz and iso2022_* (shift sequences make a
    byte's meaning depend on what came before), ``*escape`` codecs (they rewrite backslash
    sequences), punycode, idna, and the bytes-to-bytes codecs (base64, hex, zlib, bz2, rot13, ...).

    Raises:
        ValueError: the encoding is unknown or not one of those.
    """
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r}") from None
    if info.name in _UNICODE or info.name in MULTIBYTE_ASCII_FROM or _is_ascii_single_byte(info):
        return info
    if info.name.startswith(("utf-16", "utf-32")):
        hint = "utf-16 and utf-32 files are not supported; convert them to utf8"
    else:
        hint = (
            "use utf8, an ISO-8859/Windows/cp single-byte encoding, or one of "
            f"{', '.join(sorted(MULTIBYTE_ASCII_FROM))}"
        )
    raise ValueError(
        f"encoding {value!r} cannot be read row by row: it is not a plain text encoding whose bytes below "
        f"0x80 are ASCII ({hint})"
    )


def _is_ascii_single_byte(info: codecs.CodecInfo) -> bool:
    """Whether ``info`` is a charmap codec (one byte, one character, no state) that keeps ASCII as ASCII."""
    if not getattr(info, "_is_text_encoding", True):
        return False
    try:
        module = importlib.import_module("encodings." + info.name.replace("-", "_"))
    except ImportError:
        return False
    table = getattr(module, "decoding_table", None)
    return isinstance(table, str) and len(table) == 256 and table[:128] == _ASCII


class CsvConnection(ConnectionConfig):
    """Where a tenant's files live."""

    base_path: str | None = Field(
        default=None,
        description="directory the object paths are relative to (relative to the project; default: the "
        "tenant's first data root); must lie inside the tenant's data roots",
    )


class CsvFormat(SourceOptions):
    """How a CSV file is written (shared by every source that reads CSV: local files, Drive files)."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = Field(
        default="utf8",
        description="utf8, or an encoding that keeps ASCII as ASCII: latin1, cp1252, iso-8859-15, shift_jis, gbk, ...",
    )
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null"])
    missing_columns: Literal["error", "null"] = Field(
        default="error",
        description="a nullable contract column absent from a file's header: 'error' (CFG001, the default) "
        "or null (load it as NULL, with a warning)",
    )
    # Small blocks bound memory: Arrow parses blocks ahead of the consumer.
    # A row longer than a block is read with a block that fits it (up to 64 MiB, or this if larger).
    block_size_bytes: int = Field(default=1 << 20, ge=1 << 16, le=256 << 20)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        """An encoding whose files can be cut at line ends and recovered row by row (see check_encoding)."""
        check_encoding(value)
        return value

    @field_validator("missing_columns", mode="before")
    @classmethod
    def _yaml_null(cls, value: object) -> object:
        """``missing_columns: null`` in YAML arrives as None."""
        return "null" if value is None else value

    @model_validator(mode="after")
    def _separators(self) -> CsvFormat:
        for name, char in (("delimiter", self.delimiter), ("quote_char", self.quote_char)):
            if not char.isascii() or char in "\r\n":
                raise ValueError(f"{name} must be one ASCII character other than a line break (got {char!r})")
        if self.delimiter == self.quote_char:
            raise ValueError("delimiter and quote_char must differ")
        trail = MULTIBYTE_ASCII_FROM.get(codecs.lookup(self.encoding).name, 0x80)
        if ord(self.quote_char) >= trail:
            raise ValueError(
                f"quote_char {self.quote_char!r} can be part of a multibyte character in {self.encoding}; "
                f"use one below {chr(trail)!r}, such as '\"' or \"'\""
            )
        return self


class CsvOptions(CsvFormat):
    """Per-object settings of local CSV files: where they are, and how they are written."""

    path: str = Field(description="file name or glob relative to base_path, e.g. 'orders/*.csv' or '**/*.csv'")
    settle_seconds: float = Field(
        default=60,
        ge=0,
        description="a last line without a line end (or a quoted value still open at the end) is read only "
        "once the file has not been modified for this long; until then it is left for a later run (0: read "
        "at once)",
    )

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        """A path that cannot name anything outside base_path, whatever the files are."""
        if not value.strip():
            raise ValueError("must name a file or glob relative to base_path")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
            raise ValueError(f"must be relative to base_path (got {value!r})")
        if ".." in re.split(r"[/\\]", value):
            raise ValueError(f"must not contain a '..' part (got {value!r}); files are read only under base_path")
        return value
