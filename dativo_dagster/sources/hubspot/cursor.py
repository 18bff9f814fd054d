"""HubSpot times and the last-modified cursor.

HubSpot filters on epoch milliseconds and answers ISO-8601 text; :func:`parse_time_ms` and
:func:`iso_ms` convert between the two exactly, and :class:`HubSpotCursorCodec` stores a cursor
as epoch milliseconds meaning *every record modified before it is loaded*.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.cursors import CursorCodec

DAY_MS = 86_400_000
"""Milliseconds in a day (a lookback in days moves the cursor by whole milliseconds)."""


def parse_time_ms(value: Any) -> int:
    """Epoch milliseconds of a HubSpot time: ISO-8601 text (``...Z``), a date, or epoch-ms digits.

    Raises:
        ValueError: the value is not a time.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return int(stamp.timestamp() * 1000)
    if isinstance(value, dt.date):
        return parse_time_ms(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc))
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if len(text) == 10:
        text += "T00:00:00+00:00"
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    # Integer arithmetic on the parts: timestamp() is a float and can be off by a millisecond.
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as UTC ISO-8601 with milliseconds (``2024-01-02T03:04:05.678Z``)."""
    stamp = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class HubSpotCursorCodec(CursorCodec):
    """A last-modified cursor: epoch milliseconds meaning *every record modified before it is loaded*.

    Stored as an integer (HubSpot's own filter unit), shown as a UTC time; a lookback moves it back
    by whole milliseconds. ``incremental.initial_value`` may be given as a date, an ISO time or
    epoch milliseconds.
    """

    def __init__(self) -> None:
        super().__init__(unit="milliseconds")

    def from_arrow(self, value: Any) -> Any:
        """Times, ISO text and integers as epoch milliseconds."""
        try:
            return parse_time_ms(value)
        except (TypeError, ValueError, OverflowError):
            from dativo_dagster.errors import StateError

            raise StateError(f"a HubSpot cursor cannot hold {value!r}") from None

    def parse(self, value: Any) -> Any:
        """A stored value (or an ``initial_value``) as epoch milliseconds."""
        try:
            return parse_time_ms(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"HubSpot cursor value {value!r} is not a time (an ISO time or epoch ms)") from None

    def from_text(self, text: str, value_type: Any = None) -> Any:
        """Epoch milliseconds from an ISO time, a date or epoch-ms digits (``dativo reset --to``)."""
        try:
            return parse_time_ms(text)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{text!r} is not a time (an ISO-8601 time or date, or epoch milliseconds)") from None

    def order_key(self, value: Any) -> Any:
        """Milliseconds (so an ISO ``initial_value`` orders with stored integers)."""
        return self.parse(value)

    def minus_lookback(self, value: Any, days: float) -> Any:
        """The cursor moved back by ``days``, in whole milliseconds."""
        return int(self.parse(value) - round(days * DAY_MS))

    def display(self, value: Any, field: str | None = None) -> str:
        """``lastmodifieddate<2024-01-02T03:04:05.678Z`` (everything before it is loaded)."""
        try:
            shown = iso_ms(self.parse(value))
        except (ConfigError, OverflowError, ValueError):
            return super().display(value, field)
        return f"{field}<{shown}" if field else f"<{shown}"
