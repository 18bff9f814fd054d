"""Stripe cursor positions and their codec.

A cursor is the ``created`` second every object before which is loaded (the newest object read
plus one second), or, for objects whose updates are replayed from ``/v1/events``, that and the
events position: ``{"created": C, "events": E}``. :class:`StripeCursorCodec` parses, orders,
merges and shows both forms; :class:`Reached` is what a read got to, the basis of the cursor it
commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dativo_dagster.sources.cursors import EpochSecondsCodec

Positions = tuple[int | None, int | None]
"""``(created, events)`` positions of a cursor (None: not there)."""


def _epoch(value: Any) -> int | None:
    """An epoch second from an int, a digit string or an ISO date/time (UTC when zone-less)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return int(when.timestamp())
    return None


def cursor_positions(value: Any) -> Positions:
    """``(created, events)`` of a cursor value: an epoch second, or ``{"created": .., "events": ..}``."""
    if isinstance(value, Mapping):
        return _epoch(value.get("created")), _epoch(value.get("events"))
    return _epoch(value), None


def cursor_value(created: int | None, events: int | None, *, tracking: bool) -> Any:
    """The cursor value to commit: the ``created`` second, with the events position when tracked."""
    if created is None:
        return None
    if tracking:
        return {"created": created, "events": events}
    return created


def latest(a: int | None, b: int | None) -> int | None:
    """The later of two positions (None stands for no position yet)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class StripeCursorCodec(EpochSecondsCodec):
    """Stripe cursors: an epoch second (``created``), or both positions for objects tracked by events.

    ``{"created": C, "events": E}`` means: every object created before ``C`` is loaded, and every
    change announced by an event created before ``E`` is applied. Neither may move backwards; the
    later of two cursors takes the later of each position.
    """

    def from_arrow(self, value: Any) -> Any:
        """Epoch seconds of a cursor-column value (timestamp, date or number); None for anything else.

        The committed cursor is computed by the read itself; this only tracks the column.
        """
        if isinstance(value, dt.datetime):
            return super().from_arrow(value)
        if isinstance(value, dt.date):
            return int(dt.datetime.combine(value, dt.time(), tzinfo=dt.timezone.utc).timestamp())
        return _epoch(value)

    def parse(self, value: Any) -> Any:
        """Normalise a stored or configured value (``initial_value`` may be an ISO date)."""
        created, events = cursor_positions(value)
        if isinstance(value, Mapping):
            return {"created": created, "events": events}
        return created if created is not None else value

    def order_key(self, value: Any) -> Any:
        """Created position first, events position second (missing: earliest)."""
        created, events = cursor_positions(value)
        return (created if created is not None else -1, events if events is not None else -1)

    def later(self, a: Any, b: Any) -> Any:
        """Each position at its later value."""
        if a is None:
            return b
        if b is None:
            return a
        if not isinstance(a, Mapping) and not isinstance(b, Mapping):
            return self.parse(b) if self.order_key(b) > self.order_key(a) else self.parse(a)
        (ca, ea), (cb, eb) = cursor_positions(a), cursor_positions(b)
        return {"created": latest(ca, cb), "events": latest(ea, eb)}

    def is_before(self, new: Any, previous: Any) -> bool:
        """True if either position of ``new`` lies before that of ``previous``."""
        (nc, ne), (pc, pe) = cursor_positions(new), cursor_positions(previous)
        if pc is not None and (nc is None or nc < pc):
            return True
        return pe is not None and ne is not None and ne < pe

    def display(self, value: Any, field: str | None = None) -> str:
        """``created<2024-05-01T00:00:00+00:00 events>=2024-05-01T00:00:00+00:00``."""
        created, events = cursor_positions(value)
        if created is None:
            return super().display(value, field)
        shown = f"{field or 'created'}<{iso_time(created)}"
        if isinstance(value, Mapping) and events is not None:
            shown += f" events>={iso_time(events)}"
        return shown

    def minus_lookback(self, value: Any, days: float) -> Any:
        """The ``created`` position moved back by ``days`` (where a re-read starts)."""
        created, _ = cursor_positions(value)
        if created is None:
            return super().minus_lookback(value, days)
        return created - int(days * 86_400)


def iso_time(epoch: int) -> str:
    """An epoch second as UTC ISO-8601 (the number itself when it is not a representable time)."""
    try:
        return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(epoch)


CODEC = StripeCursorCodec()
"""The codec of every Stripe object (it holds no state)."""


@dataclass
class Reached:
    """What a read got to: the basis of the cursor it commits."""

    created: int | None = None
    events: int | None = None
    events_to: int | None = None
