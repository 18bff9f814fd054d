"""What a CSV recipe's connection and an object's ``options`` may say, checked when config loads.

:class:`CsvConnection` names the directory files are read from; :class:`CsvOptions` holds one
object's path or glob and its CSV dialect. The validators refuse, before any file is touched, a
path that could name anything outside ``base_path`` and an encoding the reader cannot cut at line
ends byte by byte.
"""

from __future__ import annotations

import codecs
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dativo_dagster.sources.base import ConnectionConfig, SourceOptions

_PROBE = "\n\r\t ,;|\"'abcXYZ019"
"""ASCII text an encoding must decode unchanged: line ends, separators, quotes, letters and digits."""


class CsvConnection(ConnectionConfig):
    """Where a tenant's files live."""

    base_path: str | None = Field(
        default=None,
        description="directory the object paths are relative to (relative to the project; default: the "
        "tenant's first data root); must lie inside the tenant's data roots",
    )


class CsvOptions(SourceOptions):
    """Per-object CSV settings."""

    path: str = Field(description="file name or glob relative to base_path, e.g. 'orders/*.csv' or '**/*.csv'")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = Field(default="utf8", description="any ASCII-compatible encoding: utf8, latin1, cp1252, ...")
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null"])
    missing_columns: Literal["error", "null"] = Field(
        default="error",
        description="a nullable contract column absent from a file's header: 'error' (CFG001, the default) "
        "or null (load it as NULL, with a warning)",
    )
    # Small blocks bound memory: Arrow parses blocks ahead of the consumer.
    block_size_bytes: int = Field(default=1 << 20, ge=1 << 16, le=256 << 20)

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

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        """An encoding Python knows in which newline, delimiters and quotes are the ASCII bytes."""
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        try:
            decoded = codecs.decode(_PROBE.encode("ascii"), info.name)
        except (UnicodeError, TypeError, LookupError):
            decoded = None
        if not getattr(info, "_is_text_encoding", True) or decoded != _PROBE:
            raise ValueError(
                f"encoding {value!r} is not ASCII-compatible (utf-16 and utf-32 files are not supported; "
                "convert them to utf8)"
            )
        return value

    @field_validator("missing_columns", mode="before")
    @classmethod
    def _yaml_null(cls, value: object) -> object:
        """``missing_columns: null`` in YAML arrives as None."""
        return "null" if value is None else value

    @model_validator(mode="after")
    def _separators(self) -> CsvOptions:
        for name, char in (("delimiter", self.delimiter), ("quote_char", self.quote_char)):
            if not char.isascii() or char in "\r\n":
                raise ValueError(f"{name} must be one ASCII character other than a line break (got {char!r})")
        if self.delimiter == self.quote_char:
            raise ValueError("delimiter and quote_char must differ")
        return self
