"""Updates through ``/v1/events``: the replay, the retention fallback and their counters.

Customers, subscriptions, invoices, products and prices change after they are created. For them
the cursor also holds an events position: each run first replays ``/v1/events`` of the
resource's types since that position (the latest version of each object wins), then lists the
new windows, whose listed versions are newer still. Stripe keeps events for 30 days; when the
saved position is older, the run says so and re-reads the whole object into a fresh copy of the
table instead of silently missing updates. The ``events`` object itself only exists for those 30
days, so that is where it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from dativo_dagster.errors import PaginationError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.stripe.client import StripeApi
from dativo_dagster.sources.stripe.cursor import CODEC, Reached, iso_time, latest
from dativo_dagster.sources.stripe.options import Target
from dativo_dagster.sources.stripe.resources import RESOURCES, list_params
from dativo_dagster.sources.stripe.windows import StripeSlice, created_windows

log = structlog.get_logger("dativo.sources.stripe")

EVENT_RETENTION_S = 30 * 86_400
"""Stripe keeps events for 30 days (``/v1/events`` lists nothing older)."""

RETENTION_MARGIN_S = 3_600
"""An events position this close to the retention edge counts as lost: the read happens later
than the check, and the worker's clock may differ from Stripe's."""

EVENTS_KEEPALIVE_S = 7 * 86_400
"""An events position older than this moves to the end of the window read even when no event
arrived, so a quiet object does not drift into the retention edge and a needless full refresh
(at most one commit without rows per object per week)."""


def retention_lost(events_position: int, now: float) -> bool:
    """True when events since ``events_position`` may already be gone (older than Stripe keeps)."""
    return events_position < int(now) - EVENT_RETENTION_S + RETENTION_MARGIN_S


@dataclass
class StripeStats(SourceStats):
    """The toolkit's counters plus what the events replay did (shown as ``dativo/...`` metadata)."""

    events_read: int = 0
    updates_from_events: int = 0
    events_retention_fallback: int = 0
    events_retention_gap: int = 0

    def as_metadata(self) -> dict[str, float]:
        """The counters; ``events_retention_fallback`` is 1 when the object was re-read in full."""
        out = super().as_metadata()
        with self._lock:
            out.update(
                events_read=self.events_read,
                updates_from_events=self.updates_from_events,
                events_retention_fallback=self.events_retention_fallback,
                events_retention_gap=self.events_retention_gap,
            )
        return out

    def absorb(self, other: SourceStats) -> None:
        """Add ``other``'s counters (requests made while planning count for the first slice)."""
        self.add(**{k: v for k, v in other.as_metadata().items() if hasattr(self, k)})
        for text in other.notes:
            self.note(text)


# --------------------------------------------------------------------------------------------
# planning


def replay_start(label: str, created: int | None, events: int | None, now: float) -> int | None:
    """Where a tracked object's events replay starts: its events position, else its ``created`` one.

    An object read without events until now (or from an initial value) replays from its
    ``created`` position, unless Stripe no longer keeps events that old: then updates are
    followed from now on, and the log says which ones are not replayed.
    """
    if events is None and created is not None:
        if not retention_lost(created, now):
            # Read without events until now (or from an initial value): replay from then.
            return created
        log.info(
            "events_tracking_started",
            detail=f"{label}: following updates from now on; changes to objects created before "
            f"{iso_time(created)} made earlier than Stripe keeps events are not replayed",
        )
    return events


def retention_refresh(label: str, events: int, hi: int, stats: StripeStats) -> StripeSlice:
    """The slice re-reading every object into a fresh table: updates since ``events`` are gone."""
    log.warning(
        "events_retention_exceeded",
        events_position=CODEC.display(events, "events"),
        retention_days=EVENT_RETENTION_S // 86_400,
        action="full refresh",
        detail=f"{label}: updates since the saved events position are no longer listed by "
        "Stripe; re-reading every object and replacing the table",
    )
    stats.add(events_retention_fallback=1)
    stats.note(
        f"events retention exceeded: updates since {CODEC.display(events, 'events')} are no longer "
        "listed by Stripe; the object was re-read in full and its table replaced"
    )
    return StripeSlice(None, hi, "full refresh (events retention)", kind="refresh", events_to=hi)


def events_object_slices(
    label: str, created: int | None, *, lookback: int, hi: int, size: int, now: float, stats: StripeStats
) -> list[StripeSlice]:
    """The events object itself: only the last 30 days exist, so that is where it starts."""
    floor = int(now) - EVENT_RETENTION_S + RETENTION_MARGIN_S
    if created is not None and created < floor:
        log.warning(
            "events_retention_exceeded",
            events_position=CODEC.display(created),
            retention_days=EVENT_RETENTION_S // 86_400,
            action="continue from the oldest event Stripe keeps",
            detail=f"{label}: events between {iso_time(created)} and {iso_time(floor)} are no longer listed by Stripe",
        )
        stats.add(events_retention_gap=1)
        stats.note(f"events between {iso_time(created)} and {iso_time(floor)} are no longer listed by Stripe")
    lo = max(created - lookback, floor) if created is not None else floor
    windows = created_windows(lo, hi, size)
    slices = [StripeSlice(a, b, f"{iso_time(a or lo)}..{iso_time(b)}", kind="created") for a, b in windows]
    return slices or [StripeSlice(hi, hi, "up to date", kind="created")]


# --------------------------------------------------------------------------------------------
# the replay


def event_items(
    api: StripeApi,
    label: str,
    target: Target,
    part: StripeSlice,
    events_position: int | None,
    reached: Reached,
    stats: StripeStats,
    *,
    page_size: int,
    now: Callable[[], float],
) -> Iterator[Mapping[str, Any]]:
    """Latest version of each object changed by events in ``[start, end)``.

    Events come newest first, so an object's first event carries its latest version. Stripe
    orders events by their ``created`` second only, so an object changed several times within
    one second is fetched again: its current version is newer than all of them.

    Args:
        api: The read's client.
        label: The object's label, for messages.
        target: The object resolved against its options.
        part: The ``events`` slice.
        events_position: The events position of the cursor the read started from.
        reached: Where the read got to; the events position moves with each event read.
        stats: The read's counters.
        page_size: Events per list request.
        now: The current epoch time (a quiet object's events position moves on when it is old).
    """
    resource = target.resource
    params = list_params(
        RESOURCES["events"],
        lo=part.start,
        hi=part.end,
        page_size=page_size,
        event_type=f"{resource.event_prefix}.*",
    )
    where = f"{label}: GET /v1/events"
    done: set[str] = set()
    second: int | None = None
    pending: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}  # this second's events by object

    def settle() -> Iterator[Mapping[str, Any]]:
        for object_id, versions in pending.items():
            done.add(object_id)
            stats.add(updates_from_events=1)
            yield _event_version(api, label, target, object_id, versions)
        pending.clear()

    for items in api.pages(label, RESOURCES["events"], params, stats):
        stats.add(events_read=len(items))
        for position, event in enumerate(items):
            at = int(event["created"])
            reached.events = latest(reached.events, at + 1)
            if at != second:
                yield from settle()
                second = at
            data = event.get("data")
            changed = data.get("object") if isinstance(data, Mapping) else None
            if not isinstance(changed, Mapping):
                raise PaginationError(f"{where}: event {position} ({event['id']}) has no data.object")
            object_id = changed.get("id")
            if changed.get("object") != resource.object or not isinstance(object_id, str):
                continue  # another object type under the prefix (customer.subscription.* for customers)
            if object_id in done:
                continue  # an older version: a newer second already gave this object
            created = changed.get("created")
            if part.skip_from is not None and isinstance(created, int) and created >= part.skip_from:
                continue  # listed by this run's windows, at a newer version
            pending.setdefault(object_id, []).append((str(event.get("type", "")), changed))
    yield from settle()
    quiet = reached.events is None and events_position is not None and part.end is not None
    if quiet and events_position is not None and events_position < int(now()) - EVENTS_KEEPALIVE_S:
        reached.events = part.end


def _event_version(
    api: StripeApi,
    label: str,
    target: Target,
    object_id: str,
    versions: list[tuple[str, Mapping[str, Any]]],
) -> dict[str, Any]:
    """The row for an object changed by ``versions`` (its events of one second, newest listed first).

    Fetched again when the events cannot tell (several in one second) or cannot carry the
    object's expansions; a ``*.deleted`` event (or Stripe's deletion stub) marks it deleted.
    """
    resource = target.resource
    version = dict(versions[0][1])
    deleted = resource.deletable and any(kind.endswith(".deleted") for kind, _ in versions)
    if not deleted and (target.expand or len(versions) > 1):
        current = api.retrieve(label, resource, target.expand, object_id)
        if current is not None and current.get("deleted"):
            deleted = resource.deletable
        elif current is not None:
            version = dict(current)
    if deleted:
        version["deleted"] = True
    return version
