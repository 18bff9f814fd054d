"""A consistent cut of one file, handed to Arrow as UTF-8 whatever the file's encoding.

A read never goes past the last line end the file had when the read started
(:func:`last_newline_end`), so a line still being written is never read half. :class:`FileCut`
streams the bytes up to that point, decoded from the file's encoding and encoded again as UTF-8;
bytes that are not valid text pass as private-use *sentinel* characters, which
:data:`SENTINEL_PATTERN` finds in Arrow's columns and :func:`printable` shows as ``\\xNN``.
"""

from __future__ import annotations

import codecs
import os
import re

from dativo_dagster.errors import ExtractError

_SENTINEL_BASE = 0x10FF00
"""Bytes 0x80-0xFF that are not valid text become U+10FF80-U+10FFFF (private use) on the way into
Arrow: the reader then only sees valid UTF-8 (its malformed-row handler cannot take anything else),
and the rows holding such a character are rejected with the column named."""
_ESCAPE_SURROGATES = {0xDC00 + b: _SENTINEL_BASE + b for b in range(0x80, 0x100)}
_SHOW_SENTINELS = {_SENTINEL_BASE + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}
_SURROGATE_RE = re.compile("[\udc80-\udcff]")

SENTINEL_PATTERN = "[\U0010ff80-\U0010ffff]"
"""Regular expression matching a sentinel character (for Arrow's ``match_substring_regex``)."""
SENTINEL_RE = re.compile(SENTINEL_PATTERN)
""":data:`SENTINEL_PATTERN`, compiled for Python strings."""


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


class FileCut:
    """The bytes ``[0, end)`` of an open file as UTF-8, for ``pyarrow.csv.open_csv``.

    Reads with ``os.pread`` (so several readers can share the descriptor), never past ``end``,
    in the size Arrow asks for: memory stays one block however large the file. Text that is not
    valid in ``encoding`` passes as private-use characters (see ``_SENTINEL_BASE``); ``dirty``
    tells whether any did.
    """

    def __init__(self, fd: int, end: int, encoding: str, *, label: str) -> None:
        self._fd = fd
        self._label = label
        self._end = end
        self._position = 0
        self._utf8 = _is_utf8(encoding)
        self._decoder = None if self._utf8 else codecs.getincrementaldecoder(encoding)("surrogateescape")
        self._carry = b""
        self._out = b""
        self._done = end <= 0
        self.closed = False
        self.dirty = False

    def readable(self) -> bool:
        """Arrow checks this."""
        return True

    def seekable(self) -> bool:
        """A forward-only stream."""
        return False

    def close(self) -> None:
        """The descriptor belongs to the caller; only this view closes."""
        self.closed = True

    def tell(self) -> int:
        """Bytes of the file consumed so far."""
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of UTF-8 (all that is left for a negative size)."""
        want = self._end if size is None or size < 0 else size
        while len(self._out) < want and not self._done:
            count = min(max(want - len(self._out), 1 << 16), self._end - self._position)
            raw = os.pread(self._fd, count, self._position)
            if not raw:
                raise ExtractError(f"{self._label}: the file was truncated while it was being read")
            self._position += len(raw)
            self._done = self._position >= self._end
            self._out += self._convert(raw, final=self._done)
        if len(self._out) <= want:
            data, self._out = self._out, b""
        else:
            data, self._out = self._out[:want], self._out[want:]
        return data

    def _convert(self, raw: bytes, *, final: bool) -> bytes:
        if self._decoder is None:
            data = self._carry + raw if self._carry else raw
            self._carry = b""
            if data.isascii():
                return data
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError:
                text, consumed = codecs.utf_8_decode(data, "surrogateescape", final)
                self._carry = data[consumed:]
                self.dirty = True
                return text.translate(_ESCAPE_SURROGATES).encode("utf-8")
            self._carry = data[consumed:]
            return data if consumed == len(data) else data[:consumed]
        text = self._decoder.decode(raw, final)
        if _SURROGATE_RE.search(text):
            self.dirty = True
            text = text.translate(_ESCAPE_SURROGATES)
        return text.encode("utf-8")


def last_newline_end(fd: int, size: int) -> int:
    """Offset just past the last line end (``\\n`` or ``\\r``) in the first ``size`` bytes; 0 if there is none."""
    position = size
    step = 1 << 16
    while position > 0:
        start = max(0, position - step)
        chunk = os.pread(fd, position - start, start)
        index = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def printable(text: str) -> str:
    """Text as a person should see it: invalid bytes written as ``\\xNN``."""
    return text.translate(_SHOW_SENTINELS)
