"""Rows Arrow's parser could not split into the header's fields: collected, then parsed again.

:class:`MalformedRows` collects them from Arrow's parser thread (its ``invalid_row_handler``);
:class:`MalformedRowParser` turns them into text rows carrying a reason, so the writer
quarantines exactly those rows and loads the rest. A row with too many or too few fields becomes
one quarantined row; an unterminated quote runs on over the following lines, which are split off
and parsed one by one, so one stray quote does not swallow the rows after it.
"""

from __future__ import annotations

import csv
import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dativo_dagster.sources.csv.file_cut import printable
from dativo_dagster.sources.csv.options import CsvOptions

REASON_TEXT_CHARS = 200
"""How much of a malformed row's text its quarantine reason quotes."""

MalformedRow = tuple[int | None, int, int, str]
"""A row Arrow could not split: its line number (if known), the fields expected and found, its text."""


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

    def __init__(self, options: CsvOptions, header: list[str], included: list[str], cursor_header: str | None) -> None:
        self.options = options
        self.header = header
        self.included = included
        self.cursor_header = cursor_header
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
            return next(csv.reader([line], delimiter=delimiter, quotechar=quote), [])

        for number, expected, actual, text in rows:
            lines = [text]
            if text.count(quote) % 2 and ("\n" in text or "\r" in text):
                lines = text.splitlines()
                actual = len(split(lines[0]))
            where = f"line {number + self.line_shift}" if number is not None else "a line"
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

    def _field_at(self, text: str, position: int | None, expected: int, actual: int) -> str | None:
        """The field at ``position`` of a malformed line, where it can be trusted (else None).

        Fields before a missing one are where the header says. With extra fields, an unquoted
        delimiter may sit anywhere before the cursor's field, so only the first field is trusted.
        An unterminated quote swallows the rest of its line: only the fields before it count.
        """
        if position is None or not text:
            return None
        try:
            fields = next(csv.reader([text], delimiter=self.options.delimiter, quotechar=self.options.quote_char))
        except (csv.Error, StopIteration):
            return None
        usable = len(fields) - 1 if text.count(self.options.quote_char) % 2 else len(fields)
        if position >= usable or (actual > expected and position > 0):
            return None
        value = fields[position]
        return None if value in self.options.null_values else value
