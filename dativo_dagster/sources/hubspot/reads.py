"""The requests that read CRM records: search windows, the list endpoint and associations.

Incremental reads go through the search endpoint, filtered on the cursor's time property and
split into queries HubSpot answers in full (:mod:`~dativo_dagster.sources.hubspot.search`); their
associations are completed through the associations v4 batch-read endpoint. ``full_refresh``
reads the list endpoint with ``after`` paging, associations inline. Each function takes the
read's ``hubspot.HubSpot`` client and counts its pages into the read's stats.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from dativo_dagster.api.paging import items_at, next_after, parse_json_object
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import PaginationError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.hubspot.cursor import parse_time_ms
from dativo_dagster.sources.hubspot.errors import call_api
from dativo_dagster.sources.hubspot.properties import ReadPlan, association_ids
from dativo_dagster.sources.hubspot.rows import RowBuffer
from dativo_dagster.sources.hubspot.search import (
    SEARCH_PAGE,
    SearchPage,
    oldest_body,
    record_id,
    search_body,
    window_pages,
)

LIST_PAGE = 100
"""Largest page of the CRM list endpoints."""
BATCH_ROWS = 5_000
"""Rows per Arrow batch handed to the writer (several pages, bounded)."""


def oldest_modified(client: Any, obj: ObjectPlan, plan: ReadPlan, stats: SourceStats) -> int | None:
    """The time of the record with the oldest search property (where a first read starts); None: no record."""
    prop = plan.search_property
    assert prop is not None
    search = client.crm.objects.search_api
    what = f"POST /crm/v3/objects/{plan.object_type}/search"
    response = call_api(
        functools.partial(search.do_search, plan.object_type, oldest_body(prop), _preload_content=False),
        what=what,
        label=obj.label,
    )
    where = f"{obj.label}: {what} (oldest record) page 1"
    stats.add(pages=1)
    body = parse_json_object(response.data, where=where)
    items = items_at(body, "results", where=where, required=("id",))
    if not items:
        return None
    properties = items[0].get("properties") or {}
    try:
        return parse_time_ms(properties.get(plan.search_property) or items[0].get("updatedAt"))
    except (TypeError, ValueError):
        raise PaginationError(f"{where}: the oldest record has no readable {plan.search_property}") from None


def search_batches(
    client: Any,
    obj: ObjectPlan,
    plan: ReadPlan,
    bounds: tuple[int, int],
    stats: SourceStats,
    reached: dict[str, int],
    *,
    max_pages: int | None,
) -> Iterator[pa.RecordBatch]:
    """The records modified in ``bounds``, each exactly once, with their associations.

    ``reached["max"]`` follows the newest modification read (the basis of the new cursor).
    """
    assert plan.search_property is not None
    search_api = client.crm.objects.search_api
    what = f"POST /crm/v3/objects/{plan.object_type}/search"
    pages = {"n": 0}
    modified = plan.search_property

    def search(
        low: int,
        high: int,
        *,
        after_id: int | None = None,
        after: str | None = None,
        by_time: bool = False,
        limit: int = SEARCH_PAGE,
    ) -> SearchPage:
        pages["n"] += 1
        if max_pages is not None and pages["n"] > max_pages:
            raise PaginationError(f"{obj.label}: {what}: more than {max_pages} pages; stopping (max_pages)")
        where = f"{obj.label}: {what} page {pages['n']}"
        prop = plan.search_property or ""
        # A split probe needs only the time of one record.
        properties = [prop] if by_time else plan.properties
        body = search_body(prop, low, high, properties, after_id=after_id, after=after, limit=limit, by_time=by_time)
        response = call_api(
            functools.partial(search_api.do_search, plan.object_type, body, _preload_content=False),
            what=what,
            label=obj.label,
        )
        stats.add(pages=1)
        data = parse_json_object(response.data, where=where)
        page = next_after(data, where=where)
        total = data.get("total")
        if not isinstance(total, int) or isinstance(total, bool):
            raise PaginationError(f"{where}: the response has no integer 'total'")
        for item in page.items:
            record_id(item, where=where)
        return SearchPage(total, page.items, page.next_token)

    def time_of(item: Mapping[str, Any]) -> int:
        try:
            return parse_time_ms((item.get("properties") or {}).get(modified) or item.get("updatedAt"))
        except (TypeError, ValueError):
            where = f"{obj.label}: {what} page {pages['n']}"
            raise PaginationError(f"{where}: record {item.get('id')!r} has no readable {modified}") from None

    rows = RowBuffer(plan)
    for items in window_pages(search, *bounds, time_of=time_of):
        where = f"{obj.label}: {what} page {pages['n']}"
        links = search_associations(client, obj, plan, items, stats) if plan.associations else None
        for item in items:
            stamp = time_of(item)
            reached["max"] = max(reached.get("max", stamp), stamp)
            rows.add(item, links.get(record_id(item, where=where)) if links is not None else None, where=where)
        if rows.count >= BATCH_ROWS:
            yield rows.take()
    if rows.count:
        yield rows.take()


def search_associations(
    client: Any, obj: ObjectPlan, plan: ReadPlan, items: list[dict[str, Any]], stats: SourceStats
) -> dict[int, dict[str, list[int]]]:
    """``id → {type: [ids]}`` for a page of search results (associations v4 batch read)."""
    api = client.crm.associations.v4.batch_api
    ids = [record_id(item, where=obj.label) for item in items]
    found: dict[int, dict[str, list[int]]] = {i: {} for i in ids}
    for other in plan.associations:
        what = f"POST /crm/v4/associations/{plan.object_type}/{other}/batch/read"
        linked: dict[int, set[int]] = {i: set() for i in ids}
        inputs: list[dict[str, str]] = [{"id": str(i)} for i in ids]
        number = 0
        while inputs:
            number += 1
            where = f"{obj.label}: {what} page {number}"
            response = call_api(
                functools.partial(api.get_page, plan.object_type, other, {"inputs": inputs}, _preload_content=False),
                what=what,
                label=obj.label,
            )
            stats.add(pages=1)
            body = parse_json_object(response.data, where=where)
            results = items_at(body, "results", where=where, required=("from",))
            inputs = []
            for result in results:
                try:
                    source = int(str(result["from"]["id"]))
                    targets = {int(str(link["toObjectId"])) for link in result.get("to") or []}
                except (KeyError, TypeError, ValueError):
                    raise PaginationError(f"{where}: an association result lacks from.id or toObjectId") from None
                linked.setdefault(source, set()).update(targets)
                after = ((result.get("paging") or {}).get("next") or {}).get("after")
                if after:
                    # More than one page of associations for this record: ask for the next.
                    inputs.append({"id": str(source), "after": str(after)})
            if number > 1000:
                raise PaginationError(f"{where}: association paging does not end (cursor loop)")
        for source, targets in linked.items():
            found.setdefault(source, {})[other] = sorted(targets)
    return found


def list_batches(
    client: Any, obj: ObjectPlan, plan: ReadPlan, stats: SourceStats, *, max_pages: int | None
) -> Iterator[pa.RecordBatch]:
    """Every record through the list endpoint (``after`` paging), associations inline."""
    api = client.crm.objects.basic_api
    what = f"GET /crm/v3/objects/{plan.object_type}"
    rows = RowBuffer(plan)
    after: str | None = None
    seen: set[str] = set()
    number = 0
    while True:
        number += 1
        if max_pages is not None and number > max_pages:
            raise PaginationError(f"{obj.label}: {what}: more than {max_pages} pages (max_pages)")
        where = f"{obj.label}: {what} page {number}"
        arguments: dict[str, Any] = {"limit": LIST_PAGE, "archived": False, "_preload_content": False}
        if after is not None:
            arguments["after"] = after
        if plan.properties:
            arguments["properties"] = plan.properties
        if plan.associations:
            arguments["associations"] = plan.associations
        response = call_api(functools.partial(api.get_page, plan.object_type, **arguments), what=what, label=obj.label)
        stats.add(pages=1)
        page = next_after(parse_json_object(response.data, where=where), where=where)
        for item in page.items:
            links = None
            if plan.associations:
                blocks = item.get("associations") or {}
                if not isinstance(blocks, dict):
                    raise PaginationError(f"{where}: record {item.get('id')!r} has a malformed 'associations'")
                links = {other: association_ids(blocks.get(other), where=where) for other in plan.associations}
            rows.add(item, links, where=where)
        if rows.count >= BATCH_ROWS:
            yield rows.take()
        if page.next_token is None:
            break
        if page.next_token in seen:
            raise PaginationError(f"{where}: the next page points back to an earlier one (cursor loop)")
        seen.add(page.next_token)
        after = page.next_token
    if rows.count:
        yield rows.take()
