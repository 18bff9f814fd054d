"""Paginators: pure functions from one page's body to the next request, and a loop that guards them.

Every API pages one of four ways, each a pure function here so it is tested with canned bodies:

* cursor after the last item (Stripe's ``starting_after``, newest first),
* an opaque token in the body (HubSpot's ``paging.next.after``, Google's ``nextPageToken``),
* offset and limit.

:func:`paginate` drives any of them and turns a broken page into PAGE001 naming the object and the
page: a body that is not a JSON object, a missing list, an item missing a required field, a cursor
that repeats (a loop), or more pages than the configured cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from dativo_dagster.errors import PaginationError

T = TypeVar("T")
Token = TypeVar("Token")


@dataclass(frozen=True)
class Page(Generic[Token]):
    """One page: its items and the token of the next page (None: this was the last)."""

    items: list[dict[str, Any]]
    next_token: Token | None


class Paginator(Protocol[Token]):
    """Reads the next page's token from a page body (raising PAGE001 on a malformed body)."""

    def __call__(self, body: dict[str, Any], *, where: str) -> Page[Token]: ...


def parse_json_object(raw: bytes, *, where: str) -> dict[str, Any]:
    """The body as a JSON object; PAGE001 when it is not one (truncated, HTML, not an object)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        shown = raw[:80].decode("utf-8", "replace").replace("\n", " ")
        reason = getattr(exc, "msg", str(exc))
        raise PaginationError(f"{where}: the response is not valid JSON ({reason}; starts with {shown!r})") from None
    if not isinstance(data, dict):
        raise PaginationError(f"{where}: the response is a JSON {type(data).__name__}, not an object")
    return data


def items_at(body: dict[str, Any], key: str, *, where: str, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``body[key]`` as a list of objects each holding ``required`` fields; PAGE001 otherwise."""
    items = body.get(key)
    if not isinstance(items, list):
        raise PaginationError(f"{where}: the response has no '{key}' list")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise PaginationError(f"{where}: item {position} of '{key}' is not an object")
        missing = [name for name in required if name not in item or item[name] is None]
        if missing:
            raise PaginationError(f"{where}: item {position} lacks the required field(s) {', '.join(missing)}")
    return items


def starting_after(body: dict[str, Any], *, where: str, data_key: str = "data", id_field: str = "id") -> Page[str]:
    """Stripe-style lists: ``{"data": [...], "has_more": bool}``; the next page starts after the last id."""
    items = items_at(body, data_key, where=where, required=(id_field,))
    has_more = body.get("has_more")
    if not isinstance(has_more, bool):
        raise PaginationError(f"{where}: the response has no boolean 'has_more'")
    if has_more and not items:
        raise PaginationError(f"{where}: 'has_more' is true on an empty page")
    return Page(items, str(items[-1][id_field]) if has_more else None)


def next_after(body: dict[str, Any], *, where: str, data_key: str = "results") -> Page[str]:
    """HubSpot-style: ``{"results": [...], "paging": {"next": {"after": "..."}}}``."""
    items = items_at(body, data_key, where=where, required=("id",))
    paging = body.get("paging")
    if paging is None:
        return Page(items, None)
    after = paging.get("next", {}).get("after") if isinstance(paging, dict) else None
    if paging and after is None:
        raise PaginationError(f"{where}: 'paging' has no next.after")
    return Page(items, str(after) if after is not None else None)


def page_token(body: dict[str, Any], *, where: str, data_key: str, token_key: str = "nextPageToken") -> Page[str]:
    """Google-style: the next page's token in the body; absent on the last page."""
    items = items_at(body, data_key, where=where) if data_key in body else []
    token = body.get(token_key)
    if token is not None and not isinstance(token, str):
        raise PaginationError(f"{where}: '{token_key}' is not a string")
    return Page(items, token or None)


def next_offset(offset: int, limit: int, returned: int, total: int | None = None) -> int | None:
    """Offset paging: the next offset, or None after a short page or past ``total``."""
    following = offset + returned
    if returned < limit or returned == 0:
        return None
    if total is not None and following >= total:
        return None
    return following


def paginate(
    fetch: Callable[[Token | None, int], Page[Token]],
    *,
    where: str,
    max_pages: int | None = None,
    on_page: Callable[[int, Page[Token]], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each page's items, following tokens until the last page.

    Args:
        fetch: Fetches page ``number`` (1-based) for a token (``None``: the first page); the number
            belongs in its PAGE001 messages.
        where: ``tenant/job/object`` and endpoint, for messages.
        max_pages: Refuse to go on after this many pages (PAGE001: a result cap or a runaway).
        on_page: Called with the page number and page (counting, logging).

    Raises:
        PaginationError: PAGE001 when a token repeats or the page cap is reached.
    """
    seen: set[Any] = set()
    token: Token | None = None
    number = 0
    while True:
        number += 1
        if max_pages is not None and number > max_pages:
            raise PaginationError(f"{where}: more than {max_pages} pages; stopping (raise max_pages if expected)")
        page = fetch(token, number)
        if on_page is not None:
            on_page(number, page)
        yield page.items
        if page.next_token is None:
            return
        if page.next_token in seen or page.next_token == token:
            raise PaginationError(f"{where}: page {number} points back to an earlier page (cursor loop)")
        seen.add(page.next_token)
        token = page.next_token
