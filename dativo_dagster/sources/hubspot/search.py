"""Search requests and the splitting of a time window into queries HubSpot answers in full.

HubSpot answers at most 10,000 results per query (paging past them is HTTP 400). A window whose
``total`` exceeds that is split by time at its 10,000th record (one request sorted by time,
``after=9999``, ``limit=1``): the part before holds fewer than 10,000 records, the rest is
examined again. A single millisecond holding more (a bulk import stamps one time on every
record) is paged by ``hs_object_id`` instead (filter ``GT`` the last id, sorted by id), which
never pages by offset at all. Within a window results are sorted by id; if the window's total
changes between pages (a record was modified and left it, shifting the offsets) the window
continues by id from the last record read, so no record is skipped or read twice.

Everything here is pure: :func:`window_pages` sends its requests through a :class:`Searcher`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dativo_dagster.errors import PaginationError
from dativo_dagster.sources.hubspot.cursor import iso_ms

SEARCH_CAP = 10_000
"""Results one search query can page through; ``after`` at or beyond it is HTTP 400."""
SEARCH_PAGE = 200
"""Largest search page HubSpot serves."""


def search_body(
    prop: str,
    start_ms: int,
    end_ms: int,
    properties: Sequence[str],
    *,
    after_id: int | None = None,
    after: str | None = None,
    limit: int = SEARCH_PAGE,
    by_time: bool = False,
) -> dict[str, Any]:
    """The search request for records with ``start_ms <= prop < end_ms``, sorted by id.

    Args:
        prop: The time property filtered on.
        start_ms: Inclusive lower bound (epoch ms).
        end_ms: Exclusive upper bound (epoch ms).
        properties: Properties to return.
        after_id: Only records with a larger ``hs_object_id`` (paging by id; no offset).
        after: The offset token of the next page (paging by offset inside a window).
        limit: Page size (at most 200).
        by_time: Sort by ``prop`` instead of by id (to find where to split a window).
    """
    filters: list[dict[str, Any]] = [
        {"propertyName": prop, "operator": "GTE", "value": str(start_ms)},
        {"propertyName": prop, "operator": "LT", "value": str(end_ms)},
    ]
    if after_id is not None:
        filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": str(after_id)})
    body: dict[str, Any] = {
        "filterGroups": [{"filters": filters}],
        # Sorted by id: ties on the time (bulk imports) stay in one stable order, and paging by
        # id continues exactly where an offset left off.
        "sorts": [prop if by_time else "hs_object_id"],
        "properties": list(properties),
        "limit": limit,
    }
    if after is not None:
        body["after"] = after
    return body


def oldest_body(prop: str) -> dict[str, Any]:
    """The search request for the record with the oldest ``prop`` (where a first read starts)."""
    return {
        "filterGroups": [{"filters": [{"propertyName": prop, "operator": "HAS_PROPERTY"}]}],
        "sorts": [prop],
        "properties": [prop],
        "limit": 1,
    }


def split_at(start_ms: int, end_ms: int, split_ms: int) -> list[tuple[int, int]]:
    """The windows ``[start_ms, end_ms)`` is read as, given the time of its record at rank ``cap``.

    Every record before ``split_ms`` ranks below the cap, so ``[start_ms, split_ms)`` fits one query.
    When the window's first millisecond alone holds the cap (a bulk import), it becomes a window
    of its own (read by id) and the rest follows.

    Raises:
        PaginationError: PAGE001 when ``split_ms`` lies outside the window (HubSpot ignored the filter).
    """
    if not start_ms <= split_ms < end_ms:
        raise PaginationError(
            f"search: the record used to split [{iso_ms(start_ms)}, {iso_ms(end_ms)}) lies outside it ({split_ms})"
        )
    if split_ms > start_ms:
        return [(start_ms, split_ms), (split_ms, end_ms)]
    return [(start_ms, start_ms + 1), (start_ms + 1, end_ms)]


def slice_windows(start_ms: int, end_ms: int, slice_ms: int) -> list[tuple[int, int]]:
    """``[start_ms, end_ms)`` cut into consecutive windows of at most ``slice_ms``."""
    if slice_ms <= 0:
        raise ValueError("slice_ms must be positive")
    windows = []
    cursor = start_ms
    while cursor < end_ms:
        windows.append((cursor, min(cursor + slice_ms, end_ms)))
        cursor += slice_ms
    return windows


@dataclass(frozen=True)
class SearchPage:
    """One answer of the search endpoint: the query's total, its items, the next offset token."""

    total: int
    items: list[dict[str, Any]]
    next_after: str | None


class Searcher(Protocol):
    """One search request over ``[low, high)``: sorted by id (or by time), from an id or an offset."""

    def __call__(
        self,
        low: int,
        high: int,
        *,
        after_id: int | None = None,
        after: str | None = None,
        by_time: bool = False,
        limit: int = SEARCH_PAGE,
    ) -> SearchPage: ...


def record_id(item: Mapping[str, Any], *, where: str) -> int:
    """The numeric id of a CRM record (PAGE001 when it is not one)."""
    try:
        return int(str(item["id"]))
    except (KeyError, TypeError, ValueError):
        raise PaginationError(f"{where}: record id {item.get('id')!r} is not a HubSpot id") from None


def window_pages(
    search: Searcher,
    start_ms: int,
    end_ms: int,
    *,
    time_of: Callable[[Mapping[str, Any]], int],
    cap: int = SEARCH_CAP,
) -> Iterator[list[dict[str, Any]]]:
    """Every record of ``[start_ms, end_ms)`` exactly once, page by page, never paging past ``cap``.

    A window whose total exceeds ``cap`` is split by time where its record of rank ``cap`` lies
    (one request, sorted by time, at offset ``cap - 1``): the part before holds fewer than ``cap``
    records, the rest is examined again. A single millisecond holding more than ``cap`` records
    is paged by id (``hs_object_id > last``), never by offset. Inside a window pages follow
    HubSpot's offset tokens while the window's total stays what the first page said; when it
    changes (a record left the window, shifting the offsets), the window continues by id from the
    last record read.

    Args:
        search: Sends one search request.
        start_ms: Inclusive start of the range.
        end_ms: Exclusive end of the range.
        time_of: The filtered time of a record (epoch ms).
        cap: Results one query can page through.

    Raises:
        PaginationError: PAGE001 when ids do not increase (HubSpot ignored the sort or filter),
            a page is empty while more results are announced, or a split point is impossible.
    """
    pending = [(start_ms, end_ms)]
    while pending:
        low, high = pending.pop()
        first = search(low, high)
        if first.total <= cap:
            yield from _pages_by_offset(search, low, high, first, cap)
        elif high - low <= 1:
            yield from _pages_by_id(search, low, high, first, None)
        else:
            probe = search(low, high, after=str(cap - 1), by_time=True, limit=1)
            if not probe.items:
                raise PaginationError(
                    f"search: [{iso_ms(low)}, {iso_ms(high)}) announced {first.total} results but none at rank {cap}"
                )
            pending.extend(reversed(split_at(low, high, time_of(probe.items[0]))))


def _last_id(items: list[dict[str, Any]], after_id: int | None) -> int | None:
    last = after_id
    for item in items:
        current = record_id(item, where="search")
        if last is not None and current <= last:
            raise PaginationError(
                f"search: record {current} came after {last}; results are not sorted by id (cursor loop)"
            )
        last = current
    return last


def _pages_by_id(
    search: Searcher, low: int, high: int, page: SearchPage, after_id: int | None
) -> Iterator[list[dict[str, Any]]]:
    while True:
        if not page.items:
            return
        after_id = _last_id(page.items, after_id)
        yield page.items
        if page.next_after is None:
            return
        page = search(low, high, after_id=after_id)


def _pages_by_offset(
    search: Searcher, low: int, high: int, first: SearchPage, cap: int
) -> Iterator[list[dict[str, Any]]]:
    page = first
    last: int | None = None
    seen_tokens: set[str] = set()
    while True:
        last = _last_id(page.items, last)
        if page.items:
            yield page.items
        token = page.next_after
        if token is None:
            return
        if not page.items:
            raise PaginationError(f"search: an empty page announces more results (after={token})")
        if token in seen_tokens or (token.isdigit() and int(token) >= cap):
            # A repeated token, or one HubSpot would refuse: finish the window by id instead.
            yield from _pages_by_id(search, low, high, search(low, high, after_id=last), last)
            return
        seen_tokens.add(token)
        page = search(low, high, after=token)
        if page.total != first.total:
            # The window changed under the offsets: continue by id from the last record read.
            yield from _pages_by_id(search, low, high, search(low, high, after_id=last), last)
            return
