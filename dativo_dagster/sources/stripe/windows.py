"""Windows of ``created`` times and the slices a Stripe read commits one by one.

Stripe lists newest first and filters on ``created``; a window ``created[gte]=lo&created[lt]=hi``
is paged with ``starting_after`` until ``has_more`` is false. A long extraction is planned as
several windows (``slice_days``), each one Iceberg commit with its own cursor, so a killed
backfill resumes at the last committed window. A first backfill starts at the account's history,
found by bisection (:func:`oldest_window_start`), not at an arbitrary date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dativo_dagster.sources.base import Slice
from dativo_dagster.sources.stripe.cursor import iso_time

EARLIEST_CREATED = 1_262_304_000
"""2010-01-01: before any Stripe object; where the search for an object's oldest window starts."""


def created_windows(lo: int | None, hi: int, size: int, *, open_start: bool = False) -> list[tuple[int | None, int]]:
    """Consecutive ``[lo, hi)`` windows of at most ``size`` seconds, oldest first.

    Args:
        lo: Inclusive start (None: one window without a lower bound).
        hi: Exclusive end.
        size: Window length in seconds.
        open_start: The first window has no lower bound (nothing older is missed even if an
            object predates ``lo``).
    """
    if lo is None:
        return [(None, hi)]
    if lo >= hi:
        return []
    windows: list[tuple[int | None, int]] = []
    start = lo
    while start < hi:
        end = min(start + size, hi)
        windows.append((None if open_start and not windows else start, end))
        start = end
    return windows


def oldest_window_start(exists_before: Callable[[int], bool], floor: int, hi: int, resolution: int) -> int | None:
    """Where an object's first window starts: within ``resolution`` seconds below its oldest item.

    A bisection over ``exists_before(t)`` ("is any item created before t?"), so a first backfill
    starts at the account's history, not at an arbitrary date, in about log2((hi - floor) /
    resolution) requests. Returns None when nothing exists before ``hi``; the result is always
    below ``hi``.
    """
    if not exists_before(hi):
        return None
    lo = min(floor, hi - resolution)
    while hi - lo > resolution:
        mid = (lo + hi) // 2
        if exists_before(mid):
            hi = mid
        else:
            lo = mid
    return lo


SliceKind = Literal["created", "events", "refresh", "full"]


@dataclass(frozen=True)
class StripeSlice(Slice):
    """One committed part of a read.

    * ``created``: objects created in ``[start, end)``;
    * ``events``: changes announced by events created in ``[start, end)``; objects created at or
      after ``skip_from`` are listed later in the same run, whose versions are newer, so their
      events are passed over;
    * ``refresh``: every object, replacing the table (the events position was past retention);
    * ``full``: every object (strategy ``full_refresh``).

    ``events_to`` is the events position this slice commits (first runs and refreshes: the end of
    the events the listing already reflects).
    """

    kind: SliceKind = "created"
    events_to: int | None = None
    skip_from: int | None = None


def plan_windows(
    created: int | None,
    events: int | None,
    *,
    hi: int,
    lookback: int,
    size: int,
    tracking: bool,
    oldest: Callable[[], int | None],
) -> list[StripeSlice]:
    """The slices of an incremental read up to ``hi``: the events replay first, then ``created`` windows.

    Args:
        created: The cursor's ``created`` position (None: a first read, from ``oldest()`` on).
        events: Where the events replay starts (None: none; the windows of a tracked object then
            commit ``hi`` as its events position, as the listing already reflects those events).
        hi: Exclusive end of the read (``settle_lag_s`` before now).
        lookback: Seconds the windows start before ``created``.
        size: Window length in seconds.
        tracking: The object's updates are replayed from ``/v1/events``.
        oldest: Where a first backfill starts (None: nothing exists); asked only on a first read.
    """
    slices: list[StripeSlice] = []
    lo = created - lookback if created is not None else None
    if tracking and events is not None and events < hi:
        slices.append(
            StripeSlice(
                events, hi, f"events since {iso_time(events)}", kind="events", skip_from=lo if lo is not None else 0
            )
        )
    events_to = hi if tracking and events is None else None
    if lo is None:
        start_at = oldest()
        windows = [] if start_at is None else created_windows(start_at, hi, size, open_start=True)
    else:
        windows = created_windows(lo, hi, size)
    for start, end in windows:
        label = f"{iso_time(start) if start is not None else 'beginning'}..{iso_time(end)}"
        slices.append(StripeSlice(start, end, label, kind="created", events_to=events_to))
    if not slices:
        # Nothing to read: one empty window keeps the engine's plan non-empty (no request made).
        slices.append(StripeSlice(hi, hi, "up to date", kind="created"))
    return slices
