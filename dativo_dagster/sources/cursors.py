"""Cursor codecs: how a source's cursor values are ordered, shown and moved back by a lookback.

A cursor is whatever a source needs to know where it stopped: the largest value of a column, an
epoch second, a page of file modification times, a pair of positions. Only the source knows its
shape, so every source hands out a :class:`CursorCodec` and nothing else in dativo looks inside a
cursor value: the extraction takes the later of two values through it, the forward-only check
compares through it, logs and the CLI show it through it, and a read's lower bound subtracts the
lookback through it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import TYPE_CHECKING, Any

from dativo_dagster.errors import ConfigError, StateError

if TYPE_CHECKING:
    import pyarrow as pa

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class CursorCodec:
    """Values of a cursor column: ISO-8601 timestamps and dates, numbers, or text.

    Timestamps are stored as ISO strings with microseconds (UTC when zone-aware) so that string
    order is time order. A numeric cursor moves back by a lookback only with a declared unit
    (``incremental.cursor_unit``): an integer is not known to be a time otherwise.

    Args:
        unit: ``seconds``, ``milliseconds`` or ``microseconds`` for numeric epoch cursors.
    """

    def __init__(self, unit: str | None = None) -> None:
        self.unit = unit

    # ------------------------------------------------------------------ values

    def from_arrow(self, value: Any) -> Any:
        """Normalise a scalar read from an Arrow column into a JSON-able, totally ordered value."""
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(dt.timezone.utc)
            return value.isoformat(timespec="microseconds")
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, decimal.Decimal):
            return int(value) if value == value.to_integral_value() else str(value)
        if isinstance(value, (int, float, str)):
            return value
        raise StateError(f"cursor values of type {type(value).__name__} are not supported")

    def order_key(self, value: Any) -> Any:
        """A key such that ``order_key(a) < order_key(b)`` when ``a`` comes before ``b``."""
        if isinstance(value, (str, int, float)):
            return value
        return str(value)

    def later(self, a: Any, b: Any) -> Any:
        """The later of two values (``None`` is earliest)."""
        if a is None:
            return b
        if b is None:
            return a
        try:
            return b if self.order_key(b) > self.order_key(a) else a
        except TypeError as exc:
            raise StateError(f"cursor values {a!r} and {b!r} cannot be compared") from exc

    def is_before(self, new: Any, previous: Any) -> bool:
        """True if ``new`` lies strictly before ``previous``."""
        try:
            return bool(self.order_key(new) < self.order_key(previous))
        except TypeError as exc:
            raise StateError(f"cursor {new!r} cannot be compared with {previous!r}") from exc

    def display(self, value: Any, field: str | None = None) -> str:
        """Short human form for logs and the CLI."""
        return f"{field}={value}" if field else str(value)

    # ------------------------------------------------------------------ typed by a person

    def from_text(self, text: str, value_type: pa.DataType | None = None) -> Any:
        """A cursor value a person typed (``dativo reset --to``), in the form this codec stores.

        Args:
            text: The value as typed: an ISO-8601 time or date, a number, or text.
            value_type: The cursor column's Arrow type in the table, when known; the value must be
                one that column can hold exactly (``1.5`` is not an integer, ``2024-13-01`` not a date).

        Raises:
            ConfigError: CFG001 when the text is not such a value.
        """
        import pyarrow as pa

        raw = text.strip()
        if not raw:
            raise ConfigError("an empty cursor value")
        shown = _described(value_type)
        try:
            if value_type is None:
                return self._guessed(raw)
            if pa.types.is_timestamp(value_type):
                return self.from_arrow(parse_iso_time(raw, aware=value_type.tz is not None))
            if pa.types.is_date(value_type):
                return dt.date.fromisoformat(raw).isoformat()
            if pa.types.is_integer(value_type):
                if self.unit is not None and not _INTEGER.fullmatch(raw):
                    return self._epoch(raw)
                if not _INTEGER.fullmatch(raw):
                    raise ValueError(raw)
                return int(raw)
            if pa.types.is_floating(value_type) or pa.types.is_decimal(value_type):
                number = decimal.Decimal(raw) if _NUMBER.fullmatch(raw) else None
                if number is None or not number.is_finite():
                    raise ValueError(raw)
                return self.from_arrow(number) if pa.types.is_decimal(value_type) else float(number)
            if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
                return text
        except (ValueError, ArithmeticError):
            raise ConfigError(f"{text!r} is not {shown}") from None
        raise ConfigError(f"a cursor column of type {value_type} cannot be set from text")

    def _guessed(self, raw: str) -> Any:
        """The column type is unknown: a number, else a time or date, else the text itself."""
        if _INTEGER.fullmatch(raw):
            return int(raw)
        if self.unit is not None:
            return self._epoch(raw)
        if _NUMBER.fullmatch(raw) and math.isfinite(float(raw)):
            return float(raw)
        if "T" in raw or " " in raw:
            try:
                return self.from_arrow(parse_iso_time(raw, aware=None))
            except ValueError:
                pass
        try:
            return dt.date.fromisoformat(raw).isoformat()
        except ValueError:
            return raw

    def _epoch(self, raw: str) -> int:
        """An ISO time as a number in the codec's epoch unit (UTC when no zone is given)."""
        if self.unit is None:
            raise ValueError(raw)
        when = parse_iso_time(raw, aware=True)
        scale = {"seconds": 1, "milliseconds": 1_000, "microseconds": 1_000_000}[self.unit]
        delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * scale + delta.microseconds * scale // 1_000_000

    # ------------------------------------------------------------------ reading

    def parse(self, value: Any) -> Any:
        """A stored value as a comparable Python value (ISO strings become datetimes or dates)."""
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                try:
                    return dt.date.fromisoformat(value)
                except ValueError:
                    return value
        return value

    def minus_lookback(self, value: Any, days: float) -> Any:
        """The parsed ``value`` moved back by ``days`` (the start of an inclusive re-read)."""
        parsed = self.parse(value)
        if not days:
            return parsed
        if isinstance(parsed, (dt.datetime, dt.date)):
            return parsed - dt.timedelta(days=days)
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
            if self.unit is None:
                raise ConfigError(
                    f"lookback_days on the numeric cursor value {parsed!r} needs incremental.cursor_unit "
                    "(seconds, milliseconds or microseconds): an integer is not known to be a time",
                )
            scale = {"seconds": 1, "milliseconds": 1_000, "microseconds": 1_000_000}[self.unit]
            moved = parsed - days * 86_400 * scale
            return int(moved) if isinstance(parsed, int) else moved
        raise ConfigError(f"lookback_days cannot move the cursor value {parsed!r} back (not a time)")


def _described(value_type: pa.DataType | None) -> str:
    """What a value of ``value_type`` looks like, for messages."""
    import pyarrow as pa

    if value_type is None:
        return "a cursor value"
    if pa.types.is_timestamp(value_type):
        zone = "" if value_type.tz is None else ", UTC unless it names a zone"
        return f"an ISO-8601 time or date (the column is {value_type}{zone})"
    if pa.types.is_date(value_type):
        return "an ISO-8601 date (YYYY-MM-DD)"
    if pa.types.is_integer(value_type):
        return f"an integer (the column is {value_type})"
    return f"a number (the column is {value_type})"


def parse_iso_time(raw: str, *, aware: bool | None) -> dt.datetime:
    """An ISO-8601 time or date as a datetime: zone-aware in UTC (``aware``), naive, or as written (None).

    A time without a zone for a zone-aware column is taken as UTC.

    Raises:
        ValueError: the text is not a time or date.
    """
    text = raw.replace("Z", "+00:00") if raw.endswith("Z") else raw
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        day = dt.date.fromisoformat(raw)
        when = dt.datetime(day.year, day.month, day.day)
    if aware is True and when.tzinfo is None:
        return when.replace(tzinfo=dt.timezone.utc)
    if aware is False and when.tzinfo is not None:
        return when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


class EpochSecondsCodec(CursorCodec):
    """Integer epoch seconds (an API's ``created``), shown as UTC times; lookback in seconds."""

    def __init__(self) -> None:
        super().__init__(unit="seconds")

    def from_arrow(self, value: Any) -> Any:
        """Timestamps become epoch seconds; integers stay."""
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return int(value.timestamp())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        raise StateError(f"an epoch-seconds cursor cannot hold {value!r}")

    def from_text(self, text: str, value_type: pa.DataType | None = None) -> Any:
        """Epoch seconds from digits or an ISO time or date (UTC when no zone is given)."""
        raw = text.strip()
        try:
            return int(raw) if _INTEGER.fullmatch(raw) else self._epoch(raw)
        except (ValueError, OverflowError):
            raise ConfigError(f"{text!r} is not a time (an ISO-8601 time or date, or epoch seconds)") from None

    def parse(self, value: Any) -> Any:
        """Stored as an integer already."""
        return int(value) if isinstance(value, (int, float, str)) and str(value).lstrip("-").isdigit() else value

    def display(self, value: Any, field: str | None = None) -> str:
        """``created ≥ 2024-01-01T00:00:00+00:00``-style text."""
        try:
            when = dt.datetime.fromtimestamp(int(value), tz=dt.timezone.utc).isoformat(timespec="seconds")
        except (TypeError, ValueError, OverflowError):
            return super().display(value, field)
        return f"{field}={when}" if field else when


DEFAULT_CODEC = CursorCodec()
