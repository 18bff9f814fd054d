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
from typing import Any

from dativo_dagster.errors import ConfigError, StateError


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
