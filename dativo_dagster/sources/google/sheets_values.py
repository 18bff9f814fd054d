"""Pure helpers of the Sheets source: A1 notation, serial dates, header rows, and typing cells.

Cells are read with ``valueRenderOption=UNFORMATTED_VALUE`` and
``dateTimeRenderOption=SERIAL_NUMBER``, so a cell's value does not depend on how it is displayed:
a percentage is its fraction (``25%`` is ``0.25``), a currency amount its number, a date or time
its serial number (days since 1899-12-30, the fraction of a day for the time of day) in the
spreadsheet's time zone, a checkbox a boolean. :func:`typed_column` turns one column of such
values into the contract's type, exactly, or gives the reason a cell does not fit, with its A1
address.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dativo_dagster.types.converters import CONVERSION_ERRORS, excerpt, python_converter

SERIAL_EPOCH = dt.datetime(1899, 12, 30)
"""Day 0 of Sheets' serial numbers (as in Lotus 1-2-3 and Excel's 1900 system, minus its leap-year bug)."""

ERROR_VALUES = frozenset({"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#ERROR!", "#SPILL!"})
"""What a formula that failed shows; never a value, whatever the column's type."""

_A1_CELL = re.compile(r"^([A-Za-z]{0,3})([0-9]*)$")
_NUMBER_TEXT = re.compile(r"^([+-]?)[$€£¥]?([+-]?)((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.[0-9]*)?)(%?)$")


def column_letters(index: int) -> str:
    """``0`` → ``A``, ``25`` → ``Z``, ``26`` → ``AA``."""
    letters = ""
    number = index + 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def column_index(letters: str) -> int:
    """``A`` → ``0``, ``AA`` → ``26``."""
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number - 1


def address(column: int, row: int) -> str:
    """The A1 address of a cell (0-based column, 1-based row)."""
    return f"{column_letters(column)}{row}"


@dataclass(frozen=True)
class GridRange:
    """A block of a sheet: 0-based first column, 1-based first row, and optional (inclusive) ends."""

    first_column: int = 0
    first_row: int = 1
    last_column: int | None = None
    last_row: int | None = None


def parse_a1_range(text: str) -> GridRange:
    """``B2:F``, ``A:D``, ``A1:C100``, ``3:40`` as a :class:`GridRange` (no sheet name: the worksheet says it).

    Raises:
        ValueError: not an A1 range of this form.
    """
    if "!" in text:
        raise ValueError("must not name a sheet (use worksheet or gid)")
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r} is not an A1 range such as A1:F or B2:H100")
    start, end = (_A1_CELL.match(part.strip()) for part in parts)
    if start is None or end is None:
        raise ValueError(f"{text!r} is not an A1 range such as A1:F or B2:H100")
    first_column = column_index(start.group(1)) if start.group(1) else 0
    first_row = int(start.group(2)) if start.group(2) else 1
    last_column = column_index(end.group(1)) if end.group(1) else None
    last_row = int(end.group(2)) if end.group(2) else None
    if first_row < 1 or (last_row is not None and last_row < first_row):
        raise ValueError(f"{text!r}: rows are numbered from 1 and must not run backwards")
    if last_column is not None and last_column < first_column:
        raise ValueError(f"{text!r}: columns must not run backwards")
    return GridRange(first_column, first_row, last_column, last_row)


def quote_sheet(title: str) -> str:
    """A sheet name as A1 notation quotes it (``'Q1 Sales'``, ``'It''s'``)."""
    return "'" + title.replace("'", "''") + "'"


def block(title: str, first_column: int, last_column: int, first_row: int, last_row: int) -> str:
    """``'Sheet'!B2:F500``."""
    return f"{quote_sheet(title)}!{address(first_column, first_row)}:{address(last_column, last_row)}"


def is_empty(value: Any) -> bool:
    """Sheets leaves out trailing empty cells and answers ``""`` for an empty one in the middle."""
    return value is None or value == ""


def header_row(rows: Sequence[Sequence[Any]], first_row: int) -> int:
    """The 1-based row number of the header: the first row holding a value.

    Raises:
        ValueError: every row is empty.
    """
    for offset, row in enumerate(rows):
        if any(not is_empty(v) for v in row):
            return first_row + offset
    raise ValueError("holds no header row (every row read is empty)")


def header_names(row: Sequence[Any]) -> list[str]:
    """Header cells as names (a number heading a column is its text: ``2024`` not ``2024.0``)."""
    names = []
    for value in row:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        names.append("" if value is None else str(value).strip())
    return names


def serial_datetime(serial: float) -> dt.datetime:
    """The wall-clock time of a serial number, to the millisecond (Sheets' precision)."""
    millis = round(serial * 86_400_000)
    return SERIAL_EPOCH + dt.timedelta(milliseconds=millis)


def localize(local: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """A wall-clock time in ``zone`` as a UTC instant.

    Raises:
        ValueError: the time does not exist in the zone (skipped by a daylight-saving change) or
            names two instants (repeated by one): which one was meant cannot be known.
    """
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        back = first.astimezone(dt.timezone.utc).astimezone(zone).replace(tzinfo=None)
        if back != local:
            raise ValueError(f"does not exist in {zone} (a daylight-saving change skips it)")
        raise ValueError(f"is ambiguous in {zone} (a daylight-saving change repeats it)")
    return first.astimezone(dt.timezone.utc)


def _number_from_text(text: str) -> decimal.Decimal | None:
    """A number written as text with a currency sign, thousands separators or a percent sign.

    ``$1,234.50`` → 1234.50, ``-12.5%`` → -0.125; None when the text is not such a number. Only
    the separators of numbers as the API writes them (``,`` for thousands, ``.`` for decimals).
    """
    match = _NUMBER_TEXT.match(text.strip())
    if match is None or not any(c.isdigit() for c in match.group(3)):
        return None
    sign_before, sign_after, digits, percent = match.groups()
    if sign_before and sign_after:
        return None
    number = decimal.Decimal(digits.replace(",", "") or "0")
    if "-" in (sign_before + sign_after):
        number = -number
    return number.scaleb(-2) if percent else number


def _normalise(value: Any, target: pa.DataType, zone: dt.tzinfo) -> Any:
    """A cell as the value :func:`python_converter` makes exact for ``target``.

    Raises:
        ValueError: the cell cannot be a value of ``target`` (an error value, a time in a date column).
    """
    if isinstance(value, str) and value.strip() in ERROR_VALUES:
        raise ValueError(f"holds the formula error {value.strip()}")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_timestamp(target):
        if numeric:
            local = serial_datetime(float(value))
        elif isinstance(value, str):
            try:
                local = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                return value  # the converter says why it is not a timestamp
            if local.tzinfo is not None:
                return value  # an explicit offset says which instant it is
        else:
            return value
        if target.tz is None:
            return local
        # A time written without a zone is a wall-clock time in the spreadsheet's zone, as the
        # sheet's own date cells are.
        return localize(local, zone)
    if pa.types.is_date(target):
        if numeric:
            if not float(value).is_integer():
                raise ValueError(f"is a date and time ({serial_datetime(float(value)).isoformat()}), not a date")
            return serial_datetime(float(value)).date()
        return value
    if pa.types.is_time(target):
        if numeric:
            if not 0 <= float(value) < 1:
                raise ValueError("is a date, not a time of day")
            return serial_datetime(float(value)).time()
        return value
    if (pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_decimal(target)) and isinstance(
        value, str
    ):
        number = _number_from_text(value)
        if number is not None:
            if pa.types.is_integer(target) and number == number.to_integral_value():
                return str(int(number))  # "$1,000.00" and "100%" are whole numbers
            return str(number)
        return value
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"  # as the sheet shows it
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    return value


def typed_column(
    values: Sequence[Any],
    target: pa.DataType,
    *,
    column: int,
    rows: Sequence[int],
    name: str,
    zone: dt.tzinfo,
) -> tuple[pa.Array, list[str | None] | None]:
    """One column of cells as ``target``, and a reason per row whose cell does not fit.

    Args:
        values: The unformatted cell values, one per row (None or "" for an empty cell).
        target: The contract column's Arrow type.
        column: The sheet column (0-based), for addresses.
        rows: The sheet row number of each value, for addresses.
        name: The contract column, for reasons.
        zone: The spreadsheet's time zone (serial date-times are wall-clock times in it).

    Returns:
        The typed array (null where a cell did not fit) and the reasons (None when all fit).
    """
    convert = python_converter(target)
    out: list[Any] = []
    reasons: list[str | None] | None = None
    for i, value in enumerate(values):
        if is_empty(value):
            out.append(None)
            continue
        try:
            converted = convert(_normalise(value, target, zone))
            pa.scalar(converted, target)  # range and precision, as the column will hold it
        except CONVERSION_ERRORS as exc:
            reasons = reasons or [None] * len(values)
            reasons[i] = f"{address(column, rows[i])}: {name}: cannot convert {excerpt(value)!r} ({exc})"
            out.append(None)
            continue
        out.append(converted)
    return pa.array(out, target), reasons


def time_zone(name: str | None) -> dt.tzinfo | None:
    """The spreadsheet's time zone (UTC when it names none; None when this system does not know it)."""
    if not name:
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
