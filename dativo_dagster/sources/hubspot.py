"""HubSpot CRM: contacts, companies, deals, tickets (and custom objects) and owners.

The official ``hubspot-api-client`` builds every request (paths, query strings, bodies); its HTTP
layer is replaced per object read by an adapter over the read's
:class:`~dativo_dagster.api.transport.ApiTransport` (see :mod:`dativo_dagster.compat.hubspot`),
so dativo's toolkit does the rate limiting (one token bucket per credential for general calls and
one for the search endpoints, which HubSpot limits to 5 requests per second per token), retries
honouring ``Retry-After`` and HubSpot's rate-limit headers, the breaker, the classification and
the counting. The client's own urllib3 retries are off: they would sleep through a ``Retry-After``
out of sight of the limiter and the counters.

Incremental reads go through the search endpoint, filtered on last-modified time
(``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` otherwise):

* The cursor is an epoch-millisecond instant meaning *every record modified before it is
  loaded*. A read covers ``[cursor - lookback, now - settle_lag)``: search results lag writes, so
  the newest instants are left for the next run. The new cursor is one millisecond past the
  newest modification loaded (never past the read's end), so a re-run with nothing new reads
  nothing and commits nothing: the cursor does not move only because time passed.
* Long reads commit in slices of ``incremental.slice_days`` (default 30): a killed backfill
  resumes at the last committed slice.
* HubSpot answers at most 10,000 results per query (paging past them is HTTP 400). A window whose
  ``total`` exceeds that is split by time at its 10,000th record (one request sorted by time,
  ``after=9999``, ``limit=1``): the part before holds fewer than 10,000 records, the rest is
  examined again. A single millisecond holding more (a bulk import stamps one time on every
  record) is paged by ``hs_object_id`` instead (filter ``GT`` the last id, sorted by id), which
  never pages by offset at all. Within a window results are sorted by id; if the window's total
  changes between pages (a record was modified and left it, shifting the offsets) the window
  continues by id from the last record read, so no record is skipped or read twice.

``full_refresh`` reads the list endpoint with ``after`` paging; owners are always read in full.
Associations (``options.associations``) are stored as one list of ids per associated object
type: the list endpoint returns them inline, search results are completed through the
associations v4 batch-read endpoint.
"""

from __future__ import annotations

import datetime as dt
import functools
import http
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode, urlsplit

import pyarrow as pa
import structlog
from pydantic import Field, field_validator

from dativo_dagster.api.limits import RateLimitSettings
from dativo_dagster.api.paging import items_at, next_after, parse_json_object
from dativo_dagster.api.source import ApiConnection, ApiSource
from dativo_dagster.api.transport import ApiTransport, HttpResponse, Sender
from dativo_dagster.config.models import ColumnType, Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.config.secrets import redact_text, register_secrets
from dativo_dagster.errors import AuthError, ConfigError, DativoError, PaginationError
from dativo_dagster.sources.base import Extraction, ReadRequest, Slice, SourceOptions, SourceStats
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound

log = structlog.get_logger("dativo.sources.hubspot")

SEARCH_CAP = 10_000
"""Results one search query can page through; ``after`` at or beyond it is HTTP 400."""
SEARCH_PAGE = 200
"""Largest search page HubSpot serves."""
LIST_PAGE = 100
"""Largest page of the CRM list endpoints."""
OWNERS_PAGE = 500
"""Largest page of the owners endpoint."""
DEFAULT_SLICE_DAYS = 30.0
"""Commit a long incremental read in windows of this many days unless ``incremental.slice_days`` says."""
BATCH_ROWS = 5_000
"""Rows per Arrow batch handed to the writer (several pages, bounded)."""
DAY_MS = 86_400_000

CRM_OBJECTS = ("contacts", "companies", "deals", "tickets")
OWNERS = "owners"
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate"}
"""The last-modified property per object type; every other type uses ``hs_lastmodifieddate``."""
ASSOCIATION_PREFIX = "associations_"
"""Column ``associations_<type>``: the ids of the records of ``<type>`` associated with the row
(``-`` in a type id such as ``2-1234`` becomes ``_``)."""

NUMBER_TYPE = pa.decimal128(38, 18)
"""HubSpot ``number`` properties: 20 integer and 18 fractional digits, exact; a value beyond that
is quarantined with the reason, never rounded (a double would round currency amounts)."""
_ID_PROPERTIES = {"hs_object_id"}


# ----------------------------------------------------------------------------- settings


class HubSpotConnection(ApiConnection):
    """How to reach HubSpot; the credential comes from ``credentials``.

    ``credentials: {access_token: "${HUBSPOT_TOKEN}"}`` for a private app, or
    ``{client_id, client_secret, refresh_token}`` for an OAuth app.
    """

    settle_lag_s: float = Field(
        default=300, ge=0, le=86_400, description="leave the newest seconds to the next run: search results lag writes"
    )
    search_rate_limit: RateLimitSettings | None = Field(
        default=None, description="requests per second for the search endpoints (default 4.7/s: HubSpot allows 5)"
    )


class HubSpotOptions(SourceOptions):
    """Per-object options."""

    object_type: str | None = Field(
        default=None, description="HubSpot object type (default: the object's name): contacts, 2-1234567, ..."
    )
    properties: list[str] | None = Field(
        default=None, description="properties to read (default: the contract's columns, else every property)"
    )
    associations: list[str] = Field(default_factory=list, description="associated object types to store as id lists")

    @field_validator("properties", "associations")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not name or not name.replace("_", "a").replace("-", "a").isalnum():
                raise ValueError(f"{name!r} is not a HubSpot property or object type name")
        if len(set(value)) != len(value):
            raise ValueError("names are listed twice")
        return value


# ----------------------------------------------------------------------------- pure helpers


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


def modified_property(object_type: str) -> str:
    """The last-modified property of an object type."""
    return MODIFIED_PROPERTY.get(object_type, "hs_lastmodifieddate")


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


_STRING_TYPES = {ColumnType.STRING, ColumnType.JSON}


def property_arrow_type(hubspot_type: str, name: str = "") -> pa.DataType:
    """Arrow type of a HubSpot property type (no contract given).

    ``number`` → decimal(38,18) (exact), ``datetime`` → timestamptz, ``date`` → date,
    ``bool`` → boolean; ``enumeration``, ``string`` and anything else → string (HubSpot sends
    every value as text, so text is always exact). ``hs_object_id`` is the record id: int64.
    """
    if name in _ID_PROPERTIES:
        return pa.int64()
    kind = hubspot_type.lower()
    if kind == "number":
        return NUMBER_TYPE
    if kind == "datetime":
        return pa.timestamp("us", tz="UTC")
    if kind == "date":
        return pa.date32()
    if kind in ("bool", "boolean"):
        return pa.bool_()
    return pa.string()


def association_column(object_type: str) -> str:
    """The column holding the ids of the associated records of ``object_type``."""
    return ASSOCIATION_PREFIX + object_type.replace("-", "_")


def association_ids(links: Any, *, where: str) -> list[int]:
    """Sorted unique ids of an association block (list endpoint ``{"results": [{"id"}]}``)."""
    if links is None:
        return []
    results = links.get("results") if isinstance(links, dict) else None
    if not isinstance(results, list):
        raise PaginationError(f"{where}: an association block has no 'results' list")
    ids = set()
    for link in results:
        try:
            ids.add(int(str(link["id"])))
        except (KeyError, TypeError, ValueError):
            raise PaginationError(f"{where}: an association lacks a numeric 'id'") from None
    return sorted(ids)


@dataclass(frozen=True)
class ErrorInfo:
    """What a HubSpot error body says."""

    category: str
    message: str
    scopes: tuple[str, ...] = ()


def error_info(body: bytes) -> ErrorInfo:
    """Category, message and required scopes of a HubSpot error body (empty when not JSON)."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body[:200].decode("utf-8", "replace").replace("\n", " ").strip()
        return ErrorInfo("", text)
    if not isinstance(data, dict):
        return ErrorInfo("", "")
    scopes: list[str] = []
    for entry in data.get("errors") or []:
        context = entry.get("context") if isinstance(entry, dict) else None
        if isinstance(context, dict):
            for key in ("requiredGranularScopes", "requiredScopes", "missingScopes"):
                found = context.get(key)
                if isinstance(found, list):
                    scopes += [str(s) for s in found]
    category = str(data.get("category") or data.get("errorType") or data.get("status") or "")
    return ErrorInfo(category, str(data.get("message") or "")[:300], tuple(dict.fromkeys(scopes)))


def classify_api_error(
    status: int, body: bytes, *, what: str, label: str, token_call: bool = False
) -> DativoError | None:
    """The coded error for an answer the client raised on (None: not recognised, a bug to surface).

    401/403/429/5xx never get here: the transport raises AUTH001 and retries the others.

    Args:
        status: HTTP status.
        body: The answer's body.
        what: ``GET /crm/v3/objects/contacts``-style, for messages.
        label: The object's label.
        token_call: The answer is to the OAuth token exchange.
    """
    info = error_info(body)
    detail = redact_text(f"{info.category}: {info.message}" if info.category else info.message)
    if token_call and status in (400, 401, 403):
        return AuthError(
            f"{label}: HubSpot refused to refresh the OAuth access token (HTTP {status} {detail})",
            hint="check client_id and client_secret, or re-authorize the app for a new refresh token",
        )
    if status == 404:
        return ConfigError(
            f"{label}: HubSpot answered 404 for {what} ({detail})",
            hint="the object type does not exist in this account, or HubSpot moved the endpoint to another API "
            "version; check options.object_type and the hubspot-api-client version",
        )
    if status == 400:
        return ConfigError(
            f"{label}: HubSpot refused {what} (HTTP 400 {detail})",
            hint="check the object's options (property names, object type)",
        )
    return None


# ----------------------------------------------------------------------------- authentication


class _TokenExpired(Exception):
    """HubSpot answered 401 EXPIRED_AUTHENTICATION: the OAuth access token needs a refresh."""


class MissingScopesError(AuthError):
    """AUTH001: the token is valid but lacks a scope the call needs (HTTP 403)."""


def hubspot_sender(inner: Sender, name: str) -> Sender:
    """``inner`` with HubSpot's 401/403 bodies read: an expired OAuth token becomes a refresh, a
    missing scope is named in the AUTH001 message."""

    def send(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float) -> HttpResponse:
        response = inner(method, url, headers, body, timeout_s)
        if response.status not in (401, 403):
            return response
        info = error_info(response.body)
        label = f"{method} {urlsplit(url).path}"
        if response.status == 401 and info.category == "EXPIRED_AUTHENTICATION":
            raise _TokenExpired(f"{name}: {label}: the access token expired")
        detail = redact_text(f"{info.category}: {info.message}" if info.category else info.message)
        if response.status == 403:
            scopes = f"; it needs the scope(s) {', '.join(info.scopes)}" if info.scopes else ""
            raise MissingScopesError(
                f"{name}: {label}: HTTP 403 {detail}{scopes}",
                hint="grant the scope(s) to the private app or OAuth app, then re-run",
            )
        raise AuthError(f"{name}: {label}: HTTP 401 {detail}", hint="check the access token or the OAuth credentials")

    return send


class _Tokens:
    """The access token of one credential: fixed (private app) or refreshed (OAuth), thread-safe.

    OAuth tokens are refreshed before they expire (HubSpot's ``expires_in``, less a margin) and
    when a call says the token expired, once per call.
    """

    MARGIN_S = 60.0

    def __init__(self, credentials: Mapping[str, str], *, label: str, clock: Callable[[], float]) -> None:
        token = credentials.get("access_token") or ""
        oauth = {k: credentials.get(k) or "" for k in ("client_id", "client_secret", "refresh_token")}
        if token and any(oauth.values()):
            raise ConfigError(
                f"{label}: credentials give both access_token and OAuth fields; give one or the other",
                hint="a private app needs access_token; an OAuth app needs client_id, client_secret, refresh_token",
            )
        if not token and not all(oauth.values()):
            missing = [k for k, v in oauth.items() if not v]
            raise ConfigError(
                f"{label}: credentials need access_token (private app) or client_id, client_secret and "
                f"refresh_token (OAuth app); missing {', '.join(missing)}",
            )
        self.oauth = not token
        self._static = token
        self._oauth = oauth
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    @property
    def fixed(self) -> str | None:
        """The private app's token (None for OAuth)."""
        return self._static or None

    def current(self, exchange: Callable[[Mapping[str, str]], tuple[str, float]]) -> str:
        """A token to send now, refreshing an OAuth token that is missing or about to expire."""
        if not self.oauth:
            return self._static
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._refresh(exchange)
            assert self._token is not None
            return self._token

    def renew(self, stale: str, exchange: Callable[[Mapping[str, str]], tuple[str, float]]) -> str:
        """A fresh token after ``stale`` was refused as expired (another thread may have renewed it)."""
        with self._lock:
            if self._token == stale or self._token is None:
                self._refresh(exchange)
            assert self._token is not None
            return self._token

    def _refresh(self, exchange: Callable[[Mapping[str, str]], tuple[str, float]]) -> None:
        token, expires_in = exchange(self._oauth)
        register_secrets([token])  # never logged, never in an error message
        self._token = token
        self._expires_at = self._clock() + max(0.0, expires_in - self.MARGIN_S)
        self.refreshes += 1


# ----------------------------------------------------------------------------- the client's HTTP


class TransportPool:
    """Stands in for the generated client's urllib3 pool: every request goes through ``transport``.

    It adds the current access token (refreshing an expired OAuth token once per call), picks the
    token bucket (``search`` for the search endpoints) and returns a ``urllib3.HTTPResponse`` the
    generated client reads as its own.
    """

    def __init__(self, transport: ApiTransport, tokens: _Tokens) -> None:
        self.transport = transport
        self.tokens = tokens
        self.exchange: Callable[[Mapping[str, str]], tuple[str, float]] | None = None

    def request(
        self,
        method: str,
        url: str,
        fields: Any = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        encode_multipart: bool = True,
        preload_content: bool = True,
        timeout: Any = None,
        **_: Any,
    ) -> Any:
        """Send one request the way ``urllib3.PoolManager.request`` would, through the transport."""
        import urllib3

        method = method.upper()
        sent_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        if fields:
            encoded = urlencode(list(fields.items()) if isinstance(fields, Mapping) else list(fields))
            if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
                url = url + ("&" if "?" in url else "?") + encoded
            else:
                body = encoded  # the OAuth token exchange: a form body
        data = body.encode("utf-8") if isinstance(body, str) else body
        path = urlsplit(url).path
        bucket = "search" if method == "POST" and path.rstrip("/").endswith("/search") else "default"
        token_call = "/oauth/" in path  # the token exchange authenticates with the refresh token itself
        token = None
        for attempt in (1, 2):
            if not token_call:
                token = self.tokens.current(self._exchange) if attempt == 1 else token
                sent_headers["Authorization"] = f"Bearer {token}"
            try:
                answer = self.transport.request(method, url, headers=sent_headers, body=data, bucket=bucket)
            except _TokenExpired as exc:
                if not self.tokens.oauth or attempt == 2 or token is None:
                    raise AuthError(
                        f"{exc}; "
                        + ("it was just refreshed" if attempt == 2 else "a private-app token does not expire"),
                        hint="re-authorize the app (OAuth) or rotate the private-app token",
                    ) from None
                token = self.tokens.renew(token, self._exchange)
                continue
            return urllib3.HTTPResponse(
                body=answer.body,
                headers=dict(answer.headers),
                status=answer.status,
                reason=_reason_phrase(answer.status),
                preload_content=True,
                decode_content=False,
                request_url=url,
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _exchange(self, oauth: Mapping[str, str]) -> tuple[str, float]:
        assert self.exchange is not None, "the OAuth exchange is set when the client is built"
        return self.exchange(oauth)


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def api_factory(
    api_client_package: Any, api_name: str, config: Mapping[str, Any], *, pool: TransportPool, host: str
) -> Any:
    """The ``api_factory`` of ``hubspot.HubSpot``: a generated API whose HTTP goes through ``pool``."""
    from dativo_dagster.compat.hubspot import set_pool_manager

    configuration = api_client_package.Configuration(host=host)
    configuration.access_token = config.get("access_token")
    # The generated pool would retry, and sleep through Retry-After, on its own; the transport
    # replaces it below, and no retry may happen outside the transport's count.
    configuration.retries = False
    api_client = api_client_package.ApiClient(configuration=configuration)
    api_client.user_agent = f"dativo hubspot-api-client/{package_version('hubspot-api-client')}"
    set_pool_manager(api_client, pool)
    return getattr(api_client_package, api_name)(api_client=api_client)


@functools.lru_cache(maxsize=1)
def api_exception_types() -> tuple[type[BaseException], ...]:
    """The ``ApiException`` classes of the generated packages dativo calls."""
    import hubspot.crm.associations.v4.exceptions as associations
    import hubspot.crm.objects.exceptions as objects
    import hubspot.crm.owners.exceptions as owners
    import hubspot.crm.properties.exceptions as properties
    import hubspot.oauth.exceptions as oauth

    return tuple(module.ApiException for module in (objects, properties, owners, associations, oauth))


# ----------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class _Column:
    """One column of the batches: its source name, what fills it, and how its text is read."""

    name: str
    kind: str  # "id", "property", "association"
    arrow_type: pa.DataType
    blank_is_null: bool = False
    time_kind: str | None = None  # "datetime" or "date": epoch-ms digits are rewritten as ISO text
    association: str | None = None  # the associated object type of an association column


@dataclass
class _Plan:
    """What one object read requests and how its records become rows."""

    object_type: str
    properties: list[str]
    associations: list[str]
    columns: list[_Column]
    schema: pa.Schema
    search_property: str | None = None
    cursor_alias: str | None = None  # the cursor column's table name when it differs from its property

    @property
    def batch_schema(self) -> pa.Schema:
        """Schema of the source batches: ids and association lists typed, property values as text."""
        fields = []
        for column in self.columns:
            if column.kind == "id":
                fields.append(pa.field(column.name, pa.int64()))
            elif column.kind == "association":
                fields.append(pa.field(column.name, pa.list_(pa.int64())))
            else:
                fields.append(pa.field(column.name, pa.string()))
        if self.cursor_alias:
            fields.append(pa.field(self.cursor_alias, pa.string()))
        return pa.schema(fields)


OWNER_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("email", pa.string()),
        pa.field("first_name", pa.string()),
        pa.field("last_name", pa.string()),
        pa.field("type", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("user_id_including_inactive", pa.int64()),
        pa.field("teams", pa.string()),
        pa.field("archived", pa.bool_()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Owners (``/crm/v3/owners``) as a table: HubSpot's camelCase fields in snake_case, teams as JSON."""
OWNER_BATCH_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string() if pa.types.is_timestamp(f.type) else f.type) for f in OWNER_SCHEMA]
)
"""Owners as read: times stay HubSpot's ISO text for the contract enforcer to convert."""
_OWNER_FIELDS = {
    "id": "id",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "type": "type",
    "user_id": "userId",
    "user_id_including_inactive": "userIdIncludingInactive",
    "archived": "archived",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
}


class _Rows:
    """Accumulates records as columns and hands out bounded Arrow batches."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.schema = plan.batch_schema
        self._values: list[list[Any]] = [[] for _ in self.schema]
        self.count = 0

    def add(self, record: Mapping[str, Any], associations: Mapping[str, list[int]] | None, *, where: str) -> None:
        properties = record.get("properties")
        if not isinstance(properties, dict):
            raise PaginationError(f"{where}: record {record.get('id')!r} has no 'properties' object")
        position = 0
        for column in self.plan.columns:
            if column.kind == "id":
                value: Any = record_id(record, where=where)
            elif column.kind == "association":
                value = (associations or {}).get(column.association or "", [])
            else:
                value = _text(properties.get(column.name), column)
            self._values[position].append(value)
            position += 1
        if self.plan.cursor_alias:
            assert self.plan.search_property is not None
            self._values[position].append(properties.get(self.plan.search_property))
        self.count += 1

    def take(self) -> pa.RecordBatch:
        batch = pa.RecordBatch.from_arrays(
            [pa.array(values, type=f.type) for values, f in zip(self._values, self.schema, strict=True)],
            schema=self.schema,
        )
        self._values = [[] for _ in self.schema]
        self.count = 0
        return batch


def _text(value: Any, column: _Column) -> str | None:
    """A property value as the text the contract enforcer converts (HubSpot sends text already)."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif not isinstance(value, str):
        value = str(value)
    if value == "" and column.blank_is_null:
        return None  # a cleared number, date or boolean: HubSpot sends "", which no type can hold
    if column.time_kind and value.isdigit():
        stamp = iso_ms(int(value))
        return stamp[:10] if column.time_kind == "date" else stamp
    return value


# ----------------------------------------------------------------------------- the source


class HubSpotSource(ApiSource):
    """HubSpot CRM objects and owners, through ``hubspot-api-client`` on dativo's transport."""

    type = "hubspot"
    vendor: ClassVar[str] = "HubSpot"
    default_base_url: ClassVar[str] = "https://api.hubapi.com"
    # HubSpot documents 100 requests per 10 s per private app on Free/Starter (190 on Professional
    # and Enterprise, 110 per account for OAuth apps), measured over a rolling window. A token
    # bucket lets through at most burst + rps x 10 requests in 10 s, so 9/s with a burst of 5
    # stays under the smallest of those (95); a job raises it with ``rate_limit``. The search
    # endpoints allow 5 per second per token: 4.7/s with no burst keeps any second at 5 with
    # ~60 ms to spare for arrival jitter.
    default_rate_limits: ClassVar[Mapping[str, RateLimitSettings]] = {
        "default": RateLimitSettings(rps=9, burst=5),
        "search": RateLimitSettings(rps=4.7, burst=1),
    }
    connection_model = HubSpotConnection
    options_model = HubSpotOptions
    supported_strategies = frozenset({Strategy.FULL_REFRESH, Strategy.UPDATED, Strategy.CREATED})

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: _Tokens | None = None
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._planning: dict[str, SourceStats] = {}

    # ------------------------------------------------------------------ settings

    @property
    def hubspot(self) -> HubSpotConnection:
        """The connection settings."""
        assert isinstance(self.connection, HubSpotConnection)
        return self.connection

    def buckets(self) -> dict[str, Any]:
        """The credential's buckets; ``rate_limit`` and ``search_rate_limit`` replace the defaults."""
        limits = dict(self.default_rate_limits)
        if self.settings.rate_limit is not None:
            limits["default"] = self.settings.rate_limit
        if self.hubspot.search_rate_limit is not None:
            limits["search"] = self.hubspot.search_rate_limit
        return {name: self.runtime.limits.bucket(self.fingerprint, name, limit) for name, limit in limits.items()}

    def transport(self, stats: SourceStats, *, name: str | None = None) -> ApiTransport:
        """The toolkit's transport with HubSpot's 401/403 bodies read (expiry, missing scopes)."""
        transport = super().transport(stats, name=name)
        transport.sender = hubspot_sender(transport.sender, transport.name)
        return transport

    def tokens(self) -> _Tokens:
        """The credential's access tokens (CFG001 when the credentials are incomplete)."""
        with self._lock:
            if self._tokens is None:
                self._tokens = _Tokens(self.credentials, label=f"{self.vendor} credentials", clock=self.clock)
            return self._tokens

    # ------------------------------------------------------------------ the client

    def client(self, transport: ApiTransport) -> Any:
        """A ``hubspot.HubSpot`` client for one object read, its HTTP going through ``transport``."""
        import hubspot

        tokens = self.tokens()
        pool = TransportPool(transport, tokens)
        client = hubspot.HubSpot(
            access_token=tokens.fixed, api_factory=functools.partial(api_factory, pool=pool, host=self.base_url)
        )
        pool.exchange = functools.partial(self._exchange, client, transport.name)
        return client

    def _exchange(self, client: Any, label: str, oauth: Mapping[str, str]) -> tuple[str, float]:
        """Trade the refresh token for an access token at ``/oauth/v1/token``."""
        where = f"{label}: POST /oauth/v1/token"
        response = self._call(
            lambda: client.oauth.tokens_api.create(
                grant_type="refresh_token",
                client_id=oauth["client_id"],
                client_secret=oauth["client_secret"],
                refresh_token=oauth["refresh_token"],
                _preload_content=False,
            ),
            what="POST /oauth/v1/token",
            label=label,
            token_call=True,
        )
        body = parse_json_object(response.data, where=where)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise AuthError(f"{where}: the answer has no access_token", hint="re-authorize the app")
        try:
            seconds = float(expires_in) if expires_in is not None else 1800.0
        except (TypeError, ValueError):
            seconds = 1800.0
        log.info("hubspot_token_refreshed", component=label, expires_in_s=seconds)
        return token, seconds

    @staticmethod
    def _call(fn: Callable[[], Any], *, what: str, label: str, token_call: bool = False) -> Any:
        """Run one client call; its ``ApiException`` becomes a coded error, or surfaces as a bug."""
        try:
            return fn()
        except api_exception_types() as exc:
            status = int(getattr(exc, "status", 0) or 0)
            body = getattr(exc, "body", b"") or b""
            raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
            coded = classify_api_error(status, raw, what=what, label=label, token_call=token_call)
            if coded is None:
                raise  # not a failure dativo knows: a bug to report, never retried or hidden
            raise coded from None

    # ------------------------------------------------------------------ Source interface

    def check_connection(self) -> None:
        """Authenticate (an OAuth refresh when needed) and make one cheap call.

        A 403 for a missing scope still proves the credential: the objects' checks name scopes.
        """
        stats = SourceStats()
        client = self.client(self.transport(stats))
        try:
            self._call(
                lambda: client.crm.owners.owners_api.get_page(limit=1, _preload_content=False),
                what="GET /crm/v3/owners",
                label=f"{self.vendor} connection",
            )
        except MissingScopesError:
            return

    def list_objects(self) -> list[str]:
        """The objects this source reads by name (custom objects through ``options.object_type``)."""
        return sorted([*CRM_OBJECTS, OWNERS])

    def check_object(self, obj: ObjectPlan) -> None:
        """CFG001 for an unknown object type or property, AUTH001 for a missing scope."""
        self._check_strategy(obj)
        self.discover_schema(obj)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """Owners: a fixed schema. CRM objects: ``id``, each selected property typed from HubSpot's
        property definitions, and one id list per association."""
        self._check_strategy(obj)
        if self._object_type(obj) == OWNERS:
            return OWNER_SCHEMA
        return self._plan(obj, discover=True).schema

    def cursor_codec(self, obj: ObjectPlan) -> CursorCodec:
        """Epoch milliseconds, shown as UTC times."""
        return HubSpotCursorCodec()

    def plan_slices(self, request: ReadRequest) -> list[Slice] | None:
        """Windows of ``slice_days`` from the cursor (less the lookback) to ``now - settle_lag``."""
        obj = request.obj
        if obj.strategy is Strategy.FULL_REFRESH or self._object_type(obj) == OWNERS:
            return None
        self._check_strategy(obj)
        stats = self._side_stats(obj)
        bounds = self._bounds(request, self.transport(stats), stats)
        if bounds is None:
            return None
        slice_ms = max(1, round((obj.config.incremental.slice_days or DEFAULT_SLICE_DAYS) * DAY_MS))
        return [
            Slice(start, end, label=f"{iso_ms(start)}..{iso_ms(end)}")
            for start, end in slice_windows(*bounds, slice_ms)
        ]

    def read(self, request: ReadRequest) -> Extraction:
        """Stream the object: a search window (incremental), the list endpoint (full refresh) or owners."""
        obj = request.obj
        self._check_strategy(obj)
        stats = SourceStats()
        with self._lock:
            planned = self._planning.pop(obj.label, None)
        if planned is not None:
            stats.add(**planned.as_metadata())
        transport = self.transport(stats)
        codec = HubSpotCursorCodec()
        if self._object_type(obj) == OWNERS:
            return Extraction(OWNER_BATCH_SCHEMA, self._owners(obj, transport, stats), request, stats, codec=codec)
        plan = self._plan(obj, discover=obj.contract is None, transport=transport)
        if obj.strategy is Strategy.FULL_REFRESH:
            batches = self._list(obj, plan, transport, stats)
            return Extraction(plan.batch_schema, batches, request, stats, codec=codec)
        reached: dict[str, int] = {}
        batches = self._search(request, plan, transport, stats, reached)
        previous = request.cursor.value if request.cursor is not None else None

        def cursor() -> Any:
            # One millisecond past the newest modification read, never past the window: every
            # record modified before it is loaded, and a re-run that finds nothing new keeps it.
            if "max" not in reached:
                return None
            return codec.later(previous, min(reached["max"] + 1, reached["end"]))

        return Extraction(plan.batch_schema, batches, request, stats, cursor_override=cursor, codec=codec)

    # ------------------------------------------------------------------ planning

    def _side_stats(self, obj: ObjectPlan) -> SourceStats:
        """Counters of calls made before the object's read (discovery, planning): its read adds them."""
        with self._lock:
            return self._planning.setdefault(obj.label, SourceStats())

    def _object_type(self, obj: ObjectPlan) -> str:
        options = HubSpotOptions.model_validate(obj.options)
        return options.object_type or obj.name

    def _check_strategy(self, obj: ObjectPlan) -> None:
        if self._object_type(obj) == OWNERS and obj.strategy is not Strategy.FULL_REFRESH:
            raise ConfigError(
                f"{obj.label}: incremental.strategy: owners can only be read in full (strategy 'full_refresh')",
                hint="HubSpot's owners endpoint cannot be searched by modification time",
            )

    def _plan(self, obj: ObjectPlan, *, discover: bool, transport: ApiTransport | None = None) -> _Plan:
        """The properties, associations and columns of a CRM object read (cached per run)."""
        options = HubSpotOptions.model_validate(obj.options)
        object_type = options.object_type or obj.name
        key = (obj.label, discover, object_type, tuple(options.properties or ()), tuple(options.associations))
        with self._lock:
            found = self._plans.get(key)
        if found is not None:
            return found
        search_property = self._search_property(obj, object_type)
        if discover:
            definitions = self._property_types(obj, object_type, transport)
            names = list(options.properties) if options.properties is not None else sorted(definitions)
            unknown = [n for n in names if n not in definitions]
            if unknown:
                raise ConfigError(
                    f"{obj.label}: options.properties: {', '.join(unknown)} not among the properties of {object_type}",
                    hint=f"GET /crm/v3/properties/{object_type} lists them",
                )
            if search_property is not None and definitions.get(search_property) not in ("datetime", "date"):
                kind = definitions.get(search_property)
                raise ConfigError(
                    f"{obj.label}: incremental.cursor_field: '{search_property}' is "
                    + (f"a {kind} property" if kind else f"not a property of {object_type}")
                    + ", not a time HubSpot can search by",
                    hint=f"use {modified_property(object_type)} (last modified) or createdate",
                )
            typed = {n: property_arrow_type(definitions[n], n) for n in names}
        else:
            assert obj.contract is not None
            columns = [c for c in obj.contract.columns if (c.source_name or c.name) != "id"]
            columns = [c for c in columns if not (c.source_name or c.name).startswith(ASSOCIATION_PREFIX)]
            from dativo_dagster.types import arrow_type

            typed = {(c.source_name or c.name): arrow_type(c) for c in columns}
            if options.properties is not None:
                typed = {n: typed.get(n, pa.string()) for n in options.properties}
            string_like = {(c.source_name or c.name) for c in columns if c.type in _STRING_TYPES}
            typed = {n: (pa.string() if n in string_like else t) for n, t in typed.items()}
            names = list(typed)
        if search_property and search_property not in typed:
            names.append(search_property)
            typed[search_property] = pa.timestamp("us", tz="UTC")
        columns_out = [_Column("id", "id", pa.int64())]
        for name in names:
            arrow = typed[name]
            time_kind = "datetime" if pa.types.is_timestamp(arrow) else "date" if pa.types.is_date(arrow) else None
            columns_out.append(
                _Column(name, "property", arrow, blank_is_null=not pa.types.is_string(arrow), time_kind=time_kind)
            )
        for other in options.associations:
            columns_out.append(
                _Column(association_column(other), "association", pa.list_(pa.int64()), association=other)
            )
        schema = pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.kind != "id") for c in columns_out],
            metadata={"dativo.source": f"hubspot/{object_type}"},
        )
        cursor_field = obj.cursor_field
        alias = cursor_field if cursor_field and search_property and cursor_field not in names else None
        plan = _Plan(
            object_type=object_type,
            properties=names,
            associations=list(options.associations),
            columns=columns_out,
            schema=schema,
            search_property=search_property,
            cursor_alias=alias,
        )
        with self._lock:
            self._plans[key] = plan
        return plan

    def _search_property(self, obj: ObjectPlan, object_type: str) -> str | None:
        """The property an incremental read filters on: the cursor column's source property."""
        if obj.strategy is Strategy.FULL_REFRESH or obj.cursor_field is None:
            return None
        if obj.contract is not None:
            for column in obj.contract.columns:
                if column.name == obj.cursor_field:
                    return column.source_name or column.name
        return obj.cursor_field

    def _property_types(self, obj: ObjectPlan, object_type: str, transport: ApiTransport | None) -> dict[str, str]:
        """``name → type`` of every property of ``object_type`` (``/crm/v3/properties/{type}``)."""
        transport = transport or self.transport(self._side_stats(obj))
        client = self.client(transport)
        what = f"GET /crm/v3/properties/{object_type}"
        response = self._call(
            lambda: client.crm.properties.core_api.get_all(object_type, archived=False, _preload_content=False),
            what=what,
            label=obj.label,
        )
        where = f"{obj.label}: {what} page 1"
        transport.stats.add(pages=1)
        body = parse_json_object(response.data, where=where)
        definitions = items_at(body, "results", where=where, required=("name", "type"))
        return {str(d["name"]): str(d["type"]) for d in definitions}

    def _bounds(self, request: ReadRequest, transport: ApiTransport, stats: SourceStats) -> tuple[int, int] | None:
        """``[start, end)`` of an incremental read: the cursor less the lookback (or the oldest
        record) up to ``now - settle_lag``; None when there is nothing to read."""
        obj = request.obj
        codec = HubSpotCursorCodec()
        start, _ = lower_bound(obj.strategy, request.cursor, obj.config.incremental.lookback_days, codec)
        end = int((self.clock() - self.hubspot.settle_lag_s) * 1000)
        if start is None:
            plan = self._plan(obj, discover=obj.contract is None, transport=transport)
            assert plan.search_property is not None
            start = self._oldest(obj, plan, transport, stats)
            if start is None:
                return None
        return (int(start), end) if int(start) < end else None

    def _oldest(self, obj: ObjectPlan, plan: _Plan, transport: ApiTransport, stats: SourceStats) -> int | None:
        prop = plan.search_property
        assert prop is not None
        client = self.client(transport)
        search = client.crm.objects.search_api
        what = f"POST /crm/v3/objects/{plan.object_type}/search"
        response = self._call(
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

    # ------------------------------------------------------------------ reading

    def _search(
        self,
        request: ReadRequest,
        plan: _Plan,
        transport: ApiTransport,
        stats: SourceStats,
        reached: dict[str, int],
    ) -> Iterator[pa.RecordBatch]:
        obj = request.obj
        assert plan.search_property is not None
        if request.window is not None:
            bounds: tuple[int, int] | None = (int(request.window.start), int(request.window.end))
        else:
            bounds = self._bounds(request, transport, stats)
        if bounds is None:
            return
        reached["end"] = bounds[1]
        client = self.client(transport)
        search_api = client.crm.objects.search_api
        what = f"POST /crm/v3/objects/{plan.object_type}/search"
        pages = {"n": 0}
        max_pages = self.settings.max_pages
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
            body = search_body(
                prop, low, high, properties, after_id=after_id, after=after, limit=limit, by_time=by_time
            )
            response = self._call(
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

        rows = _Rows(plan)
        for items in window_pages(search, *bounds, time_of=time_of):
            where = f"{obj.label}: {what} page {pages['n']}"
            links = self._associations(obj, plan, client, items, stats) if plan.associations else None
            for item in items:
                stamp = time_of(item)
                reached["max"] = max(reached.get("max", stamp), stamp)
                rows.add(item, links.get(record_id(item, where=where)) if links is not None else None, where=where)
            if rows.count >= BATCH_ROWS:
                yield rows.take()
        if rows.count:
            yield rows.take()

    def _associations(
        self, obj: ObjectPlan, plan: _Plan, client: Any, items: list[dict[str, Any]], stats: SourceStats
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
                response = self._call(
                    functools.partial(
                        api.get_page, plan.object_type, other, {"inputs": inputs}, _preload_content=False
                    ),
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

    def _list(
        self, obj: ObjectPlan, plan: _Plan, transport: ApiTransport, stats: SourceStats
    ) -> Iterator[pa.RecordBatch]:
        client = self.client(transport)
        api = client.crm.objects.basic_api
        what = f"GET /crm/v3/objects/{plan.object_type}"
        rows = _Rows(plan)
        after: str | None = None
        seen: set[str] = set()
        number = 0
        while True:
            number += 1
            if self.settings.max_pages is not None and number > self.settings.max_pages:
                raise PaginationError(f"{obj.label}: {what}: more than {self.settings.max_pages} pages (max_pages)")
            where = f"{obj.label}: {what} page {number}"
            arguments: dict[str, Any] = {"limit": LIST_PAGE, "archived": False, "_preload_content": False}
            if after is not None:
                arguments["after"] = after
            if plan.properties:
                arguments["properties"] = plan.properties
            if plan.associations:
                arguments["associations"] = plan.associations
            response = self._call(
                functools.partial(api.get_page, plan.object_type, **arguments), what=what, label=obj.label
            )
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

    def _owners(self, obj: ObjectPlan, transport: ApiTransport, stats: SourceStats) -> Iterator[pa.RecordBatch]:
        """Active owners, then archived ones (deals and tickets still point at those)."""
        client = self.client(transport)
        api = client.crm.owners.owners_api
        what = "GET /crm/v3/owners"
        columns: dict[str, list[Any]] = {f.name: [] for f in OWNER_SCHEMA}
        number = 0
        for archived in (False, True):
            after: str | None = None
            seen: set[str] = set()
            while True:
                number += 1
                where = f"{obj.label}: {what} page {number}"
                arguments: dict[str, Any] = {"limit": OWNERS_PAGE, "archived": archived, "_preload_content": False}
                if after is not None:
                    arguments["after"] = after
                response = self._call(functools.partial(api.get_page, **arguments), what=what, label=obj.label)
                stats.add(pages=1)
                page = next_after(parse_json_object(response.data, where=where), where=where)
                for item in page.items:
                    for column, key in _OWNER_FIELDS.items():
                        value = item.get(key)
                        if column in ("id", "user_id", "user_id_including_inactive") and value is not None:
                            try:
                                value = int(str(value))
                            except ValueError:
                                raise PaginationError(f"{where}: owner {key} {value!r} is not a number") from None
                        if column == "archived":
                            value = archived if value is None else bool(value)
                        columns[column].append(value)
                    teams = item.get("teams")
                    columns["teams"].append(None if teams is None else json.dumps(teams, separators=(",", ":")))
                if page.next_token is None:
                    break
                if page.next_token in seen:
                    raise PaginationError(f"{where}: the next page points back to an earlier one (cursor loop)")
                seen.add(page.next_token)
                after = page.next_token
        if columns["id"]:
            yield pa.RecordBatch.from_arrays(
                [pa.array(columns[f.name], type=f.type) for f in OWNER_BATCH_SCHEMA], schema=OWNER_BATCH_SCHEMA
            )


__all__ = [
    "HubSpotConnection",
    "HubSpotCursorCodec",
    "HubSpotOptions",
    "HubSpotSource",
    "MissingScopesError",
    "SearchPage",
    "Searcher",
    "TransportPool",
    "api_factory",
    "association_column",
    "classify_api_error",
    "error_info",
    "iso_ms",
    "modified_property",
    "oldest_body",
    "parse_time_ms",
    "property_arrow_type",
    "search_body",
    "slice_windows",
    "split_at",
    "window_pages",
]
