"""Rows Arrow's parser could not split into the header's fields: collected, then parsed again.

:class:`MalformedRows` collects them from Arrow's parser thread (its ``invalid_row_handler``);
:class:`MalformedRowParser` turns them into text rows carrying a reason, so the writer
quarantines exactly those rows and loads the rest. A row with too many or too few fields becomes
one quarantined row; an unterminated quote runs on over the following lines, which are split off
and parsed one by one, so one stray quote does not swallow the rows after it. A line the file cut
kept from Arrow (an unterminated quote at the end of a settled file, or a line longer than the
record limit) arrives as a placeholder row and is quarantined with its own text and reason.
Fields are split with Arrow's quoting rules (:func:`split_fields`), whatever their size.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pyarrow as pa

from dativo_dagster.sources.csv.file_cut import PLACEHOLDER_MARK, printable
from dativo_dagster.sources.csv.options import CsvFormat

REASON_TEXT_CHARS = 200
"""How much of a malformed row's text its quarantine reason quotes."""

MalformedRow = tuple[int | None, int, int, str]
"""A row Arrow could not split: its line number (if known), the fields expected and found, its text."""

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class UnreadLine:
    """A line the file cut kept from Arrow, for the placeholder row that stands for it."""

    kind: str
    """``unterminated`` (its quote never closes) or ``too_long`` (longer than the record limit)."""
    text: str
    """Its first bytes, decoded (invalid bytes as sentinels)."""
    length: int
    """Its length in bytes."""
    limit: int
    """The record limit, in bytes."""


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 and not count % (1 << 20) else f"{count:,} bytes"


@lru_cache(maxsize=64)
def _field_pattern(delimiter: str, quote: str) -> re.Pattern[str]:
    q, d = re.escape(quote), re.escape(delimiter)
    return re.compile(f"(?>{q}((?:[^{q}]|{q}{q})*+)(?:{q}([^{d}]*+))?|([^{d}]*+))")


def split_fields(text: str, delimiter: str, quote: str) -> list[str]:
    """The fields of one row as Arrow reads them; an unterminated quoted field runs to the end."""
    pattern = _field_pattern(delimiter, quote)
    fields: list[str] = []
    position = 0
    while True:
        match = pattern.match(text, position)
        assert match is not None  # the unquoted branch matches anywhere
        quoted, after, plain = match.groups()
        fields.append(plain if plain is not None else quoted.replace(quote * 2, quote) + (after or ""))
        position = match.end()
        if position >= len(text):
            return fields
        position += 1  # the delimiter


@dataclass
class MalformedRows:
    """Rows Arrow's parser could not split into the header's fields, collected from its thread."""

    rows: list[MalformedRow] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, row: Any) -> str:
        """``ParseOptions.invalid_row_handler``: remember the row and skip it."""
        with self.lock:
            self.rows.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def drain(self) -> list[MalformedRow]:
        """The rows collected since the last call."""
        with self.lock:
            rows, self.rows = self.rows, []
        return rows


class MalformedRowParser:
    """Parses one file's malformed rows again, as text rows under the header's names.

    Args:
        options: The object's options (dialect and null values).
        header: The file's header names, in file order.
        included: The header names the contract reads.
        cursor_header: The header name of the cursor column, if the object has one.
    """

    def __init__(
        self,
        options: CsvFormat,
        header: list[str],
        included: list[str],
        cursor_header: str | None,
        unread: Mapping[int, UnreadLine] | None = None,
    ) -> None:
        self.options = options
        self.header = header
        self.included = included
        self.cursor_header = cursor_header
        self.unread = unread or {}
        # Physical lines Arrow's row numbers are behind by in this file (see batch).
        self.line_shift = 0

    def batch(self, rows: list[MalformedRow]) -> tuple[pa.RecordBatch, list[str | None], list[bool]]:
        """Rows Arrow's parser could not split, as text rows under the header's names.

        Each malformed row becomes a row of nulls with its reason (and its cursor value, where the
        text shows it unambiguously, so the cursor moves past it and a later run does not offer it
        again). An unterminated quote runs on over the following lines; those lines are split off
        and parsed one by one, so one stray quote does not swallow the rows after it.

        Returns:
            The batch (columns named as in the header), a reason per row (None for a recovered
            row) and whether each row is malformed.
        """
        quote, delimiter = self.options.quote_char, self.options.delimiter
        header, included, cursor_header = self.header, self.included, self.cursor_header
        position = {name: header.index(name) for name in included}
        cursor_position = header.index(cursor_header) if cursor_header is not None else None
        values: dict[str, list[str | None]] = {name: [] for name in included}
        reasons: list[str | None] = []
        malformed: list[bool] = []

        def add(fields: list[str] | None, reason: str | None, cursor: str | None = None) -> None:
            for name in included:
                if fields is not None:
                    value: str | None = fields[position[name]]
                    values[name].append(None if value in self.options.null_values else value)
                else:
                    values[name].append(cursor if name == cursor_header else None)
            reasons.append(reason)
            malformed.append(fields is None)

        def split(line: str) -> list[str]:
            return split_fields(line, delimiter, quote)

        for number, expected, actual, text in rows:
            where = f"line {number + self.line_shift}" if number is not None else "a line"
            unread = self._unread(text)
            if unread is not None:
                fields = split(unread.text)
                shown = printable(unread.text)[:REASON_TEXT_CHARS]
                truncated = unread.kind == "too_long"
                if truncated:
                    reason = f"{where}: longer than {_size(unread.limit)} ({unread.length:,} bytes), not read: {shown}"
                elif len(fields) != expected:
                    reason = f"{where}: expected {expected} fields, found {len(fields)}: {shown}"
                else:
                    reason = f"{where}: unterminated quote: {shown}"
                cursor = self._field_at(unread.text, cursor_position, expected, len(fields), truncated=truncated)
                add(None, reason, cursor)
                continue
            lines = [text]
            if text.count(quote) % 2 and ("\n" in text or "\r" in text):
                lines = _LINE_END.split(text)
                if len(lines) > 1 and not lines[-1]:
                    lines.pop()
                actual = len(split(lines[0]))
            shown = printable(lines[0])[:REASON_TEXT_CHARS]
            cursor = self._field_at(lines[0], cursor_position, expected, actual)
            add(None, f"{where}: expected {expected} fields, found {actual}: {shown}", cursor)
            for offset, line in enumerate(lines[1:], 1):
                if not line:
                    continue
                fields = split(line)
                if line.count(quote) % 2 == 0 and len(fields) == expected:
                    add(fields, None)
                    continue
                line_number = f"line {number + self.line_shift + offset}" if number is not None else "a line"
                cursor = self._field_at(line, cursor_position, expected, len(fields))
                text_shown = printable(line)[:REASON_TEXT_CHARS]
                add(None, f"{line_number}: expected {expected} fields, found {len(fields)}: {text_shown}", cursor)
            # Arrow counted the swallowed lines as one row: later row numbers are behind by that many.
            self.line_shift += len(lines) - 1
        batch = pa.RecordBatch.from_arrays([pa.array(values[name], pa.string()) for name in included], names=included)
        return batch, reasons, malformed

    def _unread(self, text: str) -> UnreadLine | None:
        """The line a placeholder row stands for (None if ``text`` is not a placeholder)."""
        if not text.startswith(PLACEHOLDER_MARK):
            return None
        index, mark, _ = text[len(PLACEHOLDER_MARK) :].partition(PLACEHOLDER_MARK)
        return self.unread.get(int(index)) if mark and index.isdigit() else None

    def _field_at(
        self, text: str, position: int | None, expected: int, actual: int, *, truncated: bool = False
    ) -> str | None:
        """The field at ``position`` of a malformed line, where it can be trusted (else None).

        Fields before a missing one are where the header says. With extra fields, an unquoted
        delimiter may sit anywhere before the cursor's field, so only the first field is trusted.
        An unterminated quote swallows the rest of its line, and a line known only by its first
        bytes may end in a cut field: only the fields before those count.
        """
        if position is None or not text:
            return None
        fields = split_fields(text, self.options.delimiter, self.options.quote_char)
        odd = text.count(self.options.quote_char) % 2
        usable = len(fields) - 1 if odd or truncated else len(fields)
        if position >= usable or (actual > expected and position > 0):
            return None
        value = fields[position]
        return None if value in self.options.null_values else value
