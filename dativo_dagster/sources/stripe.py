"""Stripe: list endpoints read by ``created`` windows, updates caught through ``/v1/events``.

The official ``stripe`` client builds the requests and parses the answers (its typed errors
included); its HTTP layer is replaced by :class:`~dativo_dagster.api.transport.ApiTransport`, so
dativo's token bucket per credential, retries honouring ``Retry-After``, circuit breaker and error
classification apply to every call, and every call is counted into the object's stats.

How an object is read:

* **Windows of ``created`` times.** Stripe lists newest first and filters on ``created``; a window
  ``created[gte]=lo&created[lt]=hi`` is paged with ``starting_after`` until ``has_more`` is false.
  The newest window ends ``settle_lag_s`` before now, so an object created while the run reads is
  not skipped for ever. A long extraction is planned as several windows (``slice_days``), each one
  Iceberg commit with its own cursor: a killed backfill resumes at the last committed window.
* **The cursor** is the ``created`` second every object before which is loaded (the newest object
  read plus one second: a re-run with nothing new leaves it, and the table, as they are).
* **Updates.** Customers, subscriptions, invoices, products and prices change after they are
  created. For them the cursor also holds an events position: each run first replays
  ``/v1/events`` of the resource's types since that position (the latest version of each object
  wins), then lists the new windows, whose listed versions are newer still. Stripe keeps events
  for 30 days; when the saved position is older, the run says so and re-reads the whole object
  into a fresh copy of the table instead of silently missing updates.

Rows are flattened per the object's schema contract: a column takes a top-level field, or a
nested one through ``source_name: billing_details.address.country``; a ``json`` column keeps an
object as JSON text; a string column holding an expanded object keeps its id.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

import pyarrow as pa
import structlog
from pydantic import Field, model_validator

from dativo_dagster.api.limits import RateLimitSettings
from dativo_dagster.api.paging import Page, items_at, paginate, parse_json_object, starting_after
from dativo_dagster.api.source import ApiConnection, ApiSource
from dativo_dagster.config.models import ColumnType, Strategy
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, PaginationError, unexpected
from dativo_dagster.sources.base import (
    ConnectionConfig,
    Extraction,
    ReadRequest,
    Slice,
    Source,
    SourceOptions,
    SourceStats,
)
from dativo_dagster.sources.cursors import EpochSecondsCodec
from dativo_dagster.types import arrow_type

if TYPE_CHECKING:
    from dativo_dagster.api.transport import ApiTransport

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

EARLIEST_CREATED = 1_262_304_000
"""2010-01-01: before any Stripe object; where the search for an object's oldest window starts."""

BATCH_ROWS = 1_000
"""Rows per Arrow batch (ten full pages)."""

MAX_EXPAND_DEPTH = 4
"""Stripe expands at most four levels below the list's ``data``."""


# --------------------------------------------------------------------------------------------
# resources


@dataclass(frozen=True)
class StripeResource:
    """A Stripe list endpoint dativo reads.

    Attributes:
        name: URL segment and the client's service name (``payment_intents``).
        object: The ``object`` value of its items (``payment_intent``).
        expandable: The object's ``x-expandableFields`` in Stripe's OpenAPI spec.
        event_prefix: Event type prefix of its changes (``customer.subscription``); None if none.
        mutable: Updates are caught through events unless ``options.track_updates`` says otherwise.
        list_defaults: Parameters every list request sends (subscriptions: ``status=all``, as the
            list otherwise hides canceled subscriptions).
        deletable: Deleted objects vanish from the list; a ``*.deleted`` event marks the row
            ``deleted = true``.
    """

    name: str
    object: str
    expandable: frozenset[str]
    event_prefix: str | None = None
    mutable: bool = False
    list_defaults: Mapping[str, str] = field(default_factory=dict)
    deletable: bool = False


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


RESOURCES: dict[str, StripeResource] = {
    r.name: r
    for r in (
        StripeResource(
            "customers",
            "customer",
            _fields(
                "address", "cash_balance", "default_source", "discount", "invoice_settings", "shipping", "sources",
                "subscriptions", "tax", "tax_ids", "test_clock",
            ),
            "customer",
            mutable=True,
            deletable=True,
        ),
        StripeResource(
            "charges",
            "charge",
            _fields(
                "application", "application_fee", "balance_transaction", "billing_details", "customer",
                "failure_balance_transaction", "fraud_details", "invoice", "on_behalf_of", "outcome",
                "payment_intent", "payment_method_details", "radar_options", "refunds", "review", "shipping",
                "source_transfer", "transfer", "transfer_data",
            ),
            "charge",
        ),
        StripeResource(
            "invoices",
            "invoice",
            _fields(
                "account_tax_ids", "application", "automatic_tax", "charge", "custom_fields", "customer",
                "customer_address", "customer_shipping", "customer_tax_ids", "default_payment_method",
                "default_source", "default_tax_rates", "discount", "discounts", "from_invoice",
                "last_finalization_error", "latest_revision", "lines", "on_behalf_of", "payment_intent",
                "payment_settings", "quote", "rendering_options", "shipping_cost", "shipping_details",
                "status_transitions", "subscription", "subscription_details", "test_clock", "threshold_reason",
                "total_discount_amounts", "total_tax_amounts", "transfer_data",
            ),
            "invoice",
            mutable=True,
        ),
        StripeResource(
            "subscriptions",
            "subscription",
            _fields(
                "application", "automatic_tax", "billing_thresholds", "cancellation_details", "customer",
                "default_payment_method", "default_source", "default_tax_rates", "discount", "items",
                "latest_invoice", "on_behalf_of", "pause_collection", "payment_settings",
                "pending_invoice_item_interval", "pending_setup_intent", "pending_update", "schedule",
                "test_clock", "transfer_data", "trial_settings",
            ),
            "customer.subscription",
            mutable=True,
            list_defaults={"status": "all"},
        ),
        StripeResource(
            "payment_intents",
            "payment_intent",
            _fields(
                "amount_details", "application", "automatic_payment_methods", "customer", "invoice",
                "last_payment_error", "latest_charge", "next_action", "on_behalf_of", "payment_method",
                "payment_method_options", "processing", "review", "shipping", "transfer_data",
            ),
            "payment_intent",
        ),
        StripeResource(
            "products",
            "product",
            _fields("default_price", "features", "package_dimensions", "tax_code"),
            "product",
            mutable=True,
            deletable=True,
        ),
        StripeResource(
            "prices",
            "price",
            _fields("currency_options", "custom_unit_amount", "product", "recurring", "tiers", "transform_quantity"),
            "price",
            mutable=True,
        ),
        StripeResource("balance_transactions", "balance_transaction", _fields("fee_details", "source")),
        StripeResource(
            "refunds",
            "refund",
            _fields(
                "balance_transaction", "charge", "failure_balance_transaction", "next_action", "payment_intent",
                "source_transfer_reversal", "transfer_reversal",
            ),
        ),
        StripeResource("events", "event", _fields("data", "request")),
    )
}  # fmt: skip

ResourceName = Literal[
    "customers",
    "charges",
    "invoices",
    "subscriptions",
    "payment_intents",
    "products",
    "prices",
    "balance_transactions",
    "refunds",
    "events",
]


# --------------------------------------------------------------------------------------------
# configuration


class StripeConnection(ApiConnection):
    """How to read a Stripe account; the key comes from ``credentials.api_key``."""

    settle_lag_s: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="the newest window ends this many seconds before now (objects still settling are read next run)",
    )
    slice_days: float = Field(
        default=30, gt=0, le=3650, description="window per commit when the object sets no incremental.slice_days"
    )
    page_size: int = Field(default=100, ge=1, le=100, description="objects per list request (Stripe allows 100)")
    api_version: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$",
        description="Stripe-Version header (default: the client library's pinned version)",
    )


class StripeOptions(SourceOptions):
    """Per-object settings (recipe ``objects:`` defaults merged with the job's ``options``)."""

    resource: ResourceName | None = Field(default=None, description="list endpoint (default: the object name)")
    expand: list[str] = Field(
        default_factory=list, max_length=20, description="fields to expand, e.g. customer or invoice.subscription"
    )
    track_updates: bool | None = Field(
        default=None,
        description="replay /v1/events so updated objects are reloaded (default: on for mutable resources)",
    )

    @model_validator(mode="after")
    def _check_against_resource(self) -> StripeOptions:
        if self.resource is not None:
            resource = RESOURCES[self.resource]
            expand_params(resource, self.expand)
            if self.track_updates and resource.event_prefix is None:
                raise ValueError(f"track_updates: Stripe sends no update events for {resource.name}")
        return self


# --------------------------------------------------------------------------------------------
# pure helpers: parameters, windows, cursor positions


def expand_params(resource: StripeResource, expand: Sequence[str]) -> list[str]:
    """``expand[]`` values for a list request: ``customer`` → ``data.customer``.

    Only the first level is checked here (against the resource's expandable fields); deeper
    levels name fields of other objects, and Stripe answers 400 (CFG001) for a wrong one.

    Raises:
        ValueError: a field the list endpoint cannot expand, or deeper than Stripe allows.
    """
    out: list[str] = []
    for raw in expand:
        path = raw.strip()
        parts = path.split(".")
        if parts and parts[0] == "data":
            parts = parts[1:]
        if not parts or any(not p for p in parts):
            raise ValueError(f"expand: {raw!r} is not a field path (e.g. 'customer' or 'invoice.subscription')")
        if parts[0] not in resource.expandable:
            allowed = ", ".join(sorted(resource.expandable))
            raise ValueError(f"expand: {resource.name} cannot expand '{parts[0]}' (expandable: {allowed})")
        if len(parts) > MAX_EXPAND_DEPTH:
            raise ValueError(f"expand: {raw!r} is deeper than the {MAX_EXPAND_DEPTH} levels Stripe expands")
        value = "data." + ".".join(parts)
        if value not in out:
            out.append(value)
    return out


def list_params(
    resource: StripeResource,
    *,
    lo: int | None,
    hi: int | None,
    page_size: int,
    expand: Sequence[str] = (),
    after: str | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Parameters of one list request: ``created[gte]=lo&created[lt]=hi``, newest first.

    Args:
        resource: The endpoint.
        lo: Inclusive lower bound of ``created`` (None: none).
        hi: Exclusive upper bound of ``created`` (None: none).
        page_size: ``limit``.
        expand: ``expand[]`` values (already ``data.``-prefixed).
        after: ``starting_after``: the id of the last object of the previous page.
        event_type: ``type`` of ``/v1/events`` (a prefix with a ``*`` wildcard).
    """
    params: dict[str, Any] = {"limit": page_size, **resource.list_defaults}
    created = {k: v for k, v in (("gte", lo), ("lt", hi)) if v is not None}
    if created:
        params["created"] = created
    if expand:
        params["expand"] = list(expand)
    if event_type is not None:
        params["type"] = event_type
    if after is not None:
        params["starting_after"] = after
    return params


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


Positions = tuple[int | None, int | None]


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


def _latest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def retention_lost(events_position: int, now: float) -> bool:
    """True when events since ``events_position`` may already be gone (older than Stripe keeps)."""
    return events_position < int(now) - EVENT_RETENTION_S + RETENTION_MARGIN_S


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
        return {"created": _latest(ca, cb), "events": _latest(ea, eb)}

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
        shown = f"{field or 'created'}<{_iso(created)}"
        if isinstance(value, Mapping) and events is not None:
            shown += f" events>={_iso(events)}"
        return shown

    def minus_lookback(self, value: Any, days: float) -> Any:
        """The ``created`` position moved back by ``days`` (where a re-read starts)."""
        created, _ = cursor_positions(value)
        if created is None:
            return super().minus_lookback(value, days)
        return created - int(days * 86_400)


def _iso(epoch: int) -> str:
    try:
        return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(epoch)


# --------------------------------------------------------------------------------------------
# flattening


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the batches: where its value is in a Stripe object, and its Arrow type.

    Attributes:
        name: Column name in the batch (the contract's ``source_name``, else its name).
        path: Field path in the object (empty: the whole object).
        type: Arrow type the value is converted to.
        json: Keep the value as JSON text.
    """

    name: str
    path: tuple[str, ...]
    type: pa.DataType
    json: bool = False


DISCOVERED_COLUMNS = (
    ColumnSpec("id", ("id",), pa.string()),
    ColumnSpec("created", ("created",), pa.timestamp("us", tz="UTC")),
    ColumnSpec("data", (), pa.string(), json=True),
)
"""Columns of an object without a contract: its id, its creation time, and the object as JSON."""


def column_specs(obj: ObjectPlan) -> list[ColumnSpec]:
    """The batch columns for ``obj``: one per contract column (or the discovered three).

    The cursor column is always there, so the extraction can track it.
    """
    specs: list[ColumnSpec] = []
    if obj.contract is None:
        specs = list(DISCOVERED_COLUMNS)
    else:
        seen: set[str] = set()
        for column in obj.contract.columns:
            name = column.source_name or column.name
            if name in seen:
                continue  # two contract columns reading one field share its batch column
            seen.add(name)
            path = tuple(name.split(".")) if column.source_name else (column.name,)
            specs.append(ColumnSpec(name, path, arrow_type(column), json=column.type is ColumnType.JSON))
    cursor = obj.cursor_field
    if cursor is not None and cursor not in {s.name for s in specs}:
        specs.append(ColumnSpec(cursor, ("created",), pa.timestamp("us", tz="UTC")))
    return specs


def value_at(item: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path`` in ``item`` (None where a level is missing or not an object)."""
    value: Any = item
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cell(value: Any, spec: ColumnSpec) -> Any:
    """``value`` shaped for ``spec``'s column (the enforcer casts what is left and quarantines the rest)."""
    if value is None:
        return None
    if spec.json:
        return _json_text(value)
    target = spec.type
    if pa.types.is_string(target):
        if isinstance(value, Mapping) and isinstance(value.get("id"), str):
            return value["id"]  # an expanded object stands for its id
        if isinstance(value, (Mapping, list)):
            return _json_text(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if not isinstance(value, str) else value
    if (pa.types.is_timestamp(target) or pa.types.is_date(target)) and isinstance(value, (int, float)):
        if isinstance(value, bool):
            return value
        when = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
        if pa.types.is_date(target):
            return when.date()
        return when if target.tz else when.replace(tzinfo=None)
    return value


def to_batch(items: Sequence[Mapping[str, Any]], specs: Sequence[ColumnSpec]) -> pa.RecordBatch:
    """One Arrow batch of ``items`` flattened per ``specs``.

    A column whose values do not all fit its type is handed over as text instead, so the
    contract enforcer converts what it can and quarantines the rest with a reason per row.
    """
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for spec in specs:
        values = [cell(value_at(item, spec.path) if spec.path else item, spec) for item in items]
        try:
            array = pa.array(values, type=spec.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            array = pa.array([None if v is None else _as_text(v) for v in values], type=pa.string())
        arrays.append(array)
        fields.append(pa.field(spec.name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return _json_text(value)


# --------------------------------------------------------------------------------------------
# stats and slices


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


@dataclass
class _Reached:
    """What a read got to: the basis of the cursor it commits."""

    created: int | None = None
    events: int | None = None
    events_to: int | None = None


# --------------------------------------------------------------------------------------------
# the official client on dativo's transport


class _Headers(Mapping[str, str]):
    """Response headers with case-insensitive lookups, as the stripe client expects."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items


@functools.cache
def transport_http_client() -> builtins.type:
    """``stripe.HTTPClient`` subclass sending every request through an :class:`ApiTransport`.

    Built on first use, so that loading definitions never imports the client library.
    """
    import stripe

    class TransportHttpClient(stripe.HTTPClient):
        """The stripe client's HTTP layer: dativo's limits, retries, breaker and counters."""

        name = "dativo"

        def __init__(self, transport: ApiTransport) -> None:
            super().__init__()
            self.transport = transport

        def request(
            self,
            method: str,
            url: str,
            headers: Mapping[str, str] | None,
            post_data: Any = None,
            *,
            _usage: list[str] | None = None,
        ) -> tuple[str, int, Mapping[str, str]]:
            """Send one request; AUTH001 and RETRY001 come from the transport, other answers go back."""
            body = post_data.encode() if isinstance(post_data, str) else post_data
            response = self.transport.request(method.upper(), url, headers=dict(headers or {}), body=body)
            return response.body.decode("utf-8", "replace"), response.status, _Headers(response.headers)

        def request_stream(
            self,
            method: str,
            url: str,
            headers: Mapping[str, str] | None,
            post_data: Any = None,
            *,
            _usage: list[str] | None = None,
        ) -> tuple[Any, int, Mapping[str, str]]:
            """Not used: dativo only reads JSON lists."""
            raise NotImplementedError("streaming responses are not used by the Stripe source")

        def close(self) -> None:
            """Nothing to release: the connection pool belongs to the run."""

    return TransportHttpClient


def classify_stripe_error(exc: Exception, *, where: str, path: str, api_version: str | None) -> DativoError:
    """The dativo error for an exception the ``stripe`` client raised.

    * 401/403 → AUTH001 (normally raised by the transport before the client sees the answer);
    * 404 on a list endpoint → CFG001 naming the path, hinting at an API-version change;
    * 400 → CFG001 with Stripe's message (a bad ``expand``), except a page chain broken by a
      vanished ``starting_after`` object (PAGE001) and Stripe's old 400 ``rate_limit`` (EXT001);
    * a 2xx body the client cannot parse (malformed JSON, truncated) → PAGE001;
    * anything else is a bug (``BUG``, never retried), not a guess.
    """
    import stripe

    status = getattr(exc, "http_status", None)
    message = redact_text(str(getattr(exc, "user_message", None) or exc))[:300]
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None)
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)) or status in (401, 403):
        return AuthError(f"{where}: HTTP {status}: {message}", hint="check the API key and what it may read")
    if isinstance(exc, stripe.RateLimitError):
        return ExtractError(f"{where}: rate limited ({message})")
    if isinstance(exc, stripe.APIConnectionError):
        return ExtractError(f"{where}: no answer ({message})")
    if status == 404:
        version = api_version or "the client's default"
        return ConfigError(
            f"{where}: HTTP 404 ({message})",
            hint=f"{path} does not exist for this account or API version ({version}); check options.resource "
            "and whether a Stripe API version change moved or renamed it",
        )
    if status == 400 and isinstance(exc, stripe.InvalidRequestError):
        if param in ("starting_after", "ending_before") and code == "resource_missing":
            return PaginationError(
                f"{where}: the object the next page starts after is gone ({message}); the page chain broke",
                hint="the next run reads the window again",
            )
        shown = f" (parameter {param})" if param else ""
        hint = "check the object's options.expand" if param == "expand" else "check the object's options"
        return ConfigError(f"{where}: Stripe refused the request: {message}{shown}", hint=hint)
    if isinstance(exc, stripe.APIError) and isinstance(status, int) and 200 <= status < 300:
        raw = getattr(exc, "http_body", None) or ""
        try:
            parse_json_object(raw.encode() if isinstance(raw, str) else bytes(raw), where=where)
        except PaginationError as malformed:
            return malformed
        return PaginationError(f"{where}: the response could not be read as a Stripe list ({message})")
    return unexpected(exc)


# --------------------------------------------------------------------------------------------
# the source


@dataclass(frozen=True)
class _Target:
    """One object resolved against its options."""

    resource: StripeResource
    expand: tuple[str, ...]
    tracking: bool
    specs: tuple[ColumnSpec, ...]


class StripeSource(ApiSource):
    """Stripe objects through the official client, one ``StripeClient`` per credential and read."""

    type = "stripe"
    vendor = "Stripe"
    default_base_url = "https://api.stripe.com"
    # Stripe's test mode allows 25 read requests per second; live mode 100 (raise it per job).
    default_rate_limits = {"default": RateLimitSettings(rps=25, burst=25)}
    connection_model = StripeConnection
    options_model = StripeOptions
    supported_strategies = frozenset({Strategy.CREATED, Strategy.FULL_REFRESH})

    _codec: ClassVar[StripeCursorCodec] = StripeCursorCodec()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = (self.credentials.get("api_key") or "").strip()
        if not key:
            raise ConfigError("source.credentials.api_key: the Stripe API key is empty or missing")
        if key.startswith("pk_"):
            raise ConfigError(
                "source.credentials.api_key: a publishable key (pk_...) cannot read data",
                hint="use a secret key (sk_...) or a restricted key (rk_...) with read permissions",
            )
        self._api_key = key
        self._probe: str = "customers"
        self._lock = threading.Lock()
        self._carried: dict[str, SourceStats] = {}

    @classmethod
    def from_plan(
        cls, connection: ConnectionConfig, credentials: dict[str, str], job: JobPlan, *, runtime: Any = None
    ) -> Source:
        """An instance for one run of ``job``; its connection check reads the job's first object."""
        source = super().from_plan(connection, credentials, job, runtime=runtime)
        assert isinstance(source, StripeSource)
        if job.objects:
            first = job.objects[0]
            source._probe = str(first.options.get("resource") or first.name)
        return source

    @property
    def stripe_settings(self) -> StripeConnection:
        """The connection settings."""
        assert isinstance(self.connection, StripeConnection)
        return self.connection

    def now(self) -> float:
        """The current epoch time that windows and the events retention are measured from."""
        return time.time()

    # ------------------------------------------------------------------ Source interface

    def check_connection(self) -> None:
        """One list request for the job's first object (AUTH001 on a bad key)."""
        resource = RESOURCES.get(self._probe, RESOURCES["customers"])
        stats = StripeStats()
        self._list(
            self._client(stats), resource, {"limit": 1, **resource.list_defaults}, where=f"GET /v1/{resource.name}"
        )

    def check_object(self, obj: ObjectPlan) -> None:
        """A one-item list with the object's expansions (CFG001 if Stripe refuses them)."""
        target = self._target(obj)
        params = list_params(target.resource, lo=None, hi=None, page_size=1, expand=target.expand)
        self._list(self._client(StripeStats()), target.resource, params, where=f"{obj.label}: check")

    def list_objects(self) -> list[str]:
        """The resources this source reads."""
        return list(RESOURCES)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The batches' schema: the contract's columns, or ``id``, ``created`` and the object as JSON."""
        return pa.schema([pa.field(spec.name, spec.type) for spec in self._target(obj).specs])

    def cursor_codec(self, obj: ObjectPlan) -> StripeCursorCodec:
        """Epoch seconds of ``created``, with the events position for tracked objects."""
        return self._codec

    def plan_slices(self, request: ReadRequest) -> list[Slice] | None:
        """The windows to commit one by one (an events replay first, for tracked objects)."""
        stats = StripeStats()
        slices: list[Slice] = list(self._plan(request, stats))
        with self._lock:
            carried = self._carried.setdefault(request.obj.label, StripeStats())
        assert isinstance(carried, StripeStats)
        carried.absorb(stats)
        return slices

    def read(self, request: ReadRequest) -> Extraction:
        """Stream one slice (or, without one, the whole plan as one commit)."""
        obj = request.obj
        target = self._target(obj)
        stats = StripeStats()
        with self._lock:
            carried = self._carried.pop(obj.label, None)
        if carried is not None:
            stats.absorb(carried)
        window = request.window
        parts: list[StripeSlice]
        if isinstance(window, StripeSlice):
            parts = [window]
        elif window is not None:
            parts = [StripeSlice(window.start, window.end, window.label)]
        else:
            parts = self._plan(request, stats)
        previous = request.cursor.value if request.cursor is not None else None
        created, events = cursor_positions(previous)
        reached = _Reached()
        client = self._client(stats)

        def batches() -> Iterator[pa.RecordBatch]:
            buffer: list[Mapping[str, Any]] = []
            for part in parts:
                for item in self._part_items(client, obj, target, part, events, reached, stats):
                    buffer.append(item)
                    if len(buffer) >= BATCH_ROWS:
                        yield to_batch(buffer, target.specs)
                        buffer = []
            if buffer:
                yield to_batch(buffer, target.specs)

        def new_cursor() -> Any:
            new_created = _latest(created, reached.created)
            new_events = _latest(_latest(events, reached.events), reached.events_to)
            return cursor_value(new_created, new_events, tracking=target.tracking)

        return Extraction(
            pa.schema([pa.field(s.name, s.type) for s in target.specs]),
            batches(),
            request,
            stats,
            cursor_override=new_cursor,
            codec=self._codec,
            full_refresh=any(p.kind == "refresh" for p in parts),
        )

    # ------------------------------------------------------------------ planning

    def _target(self, obj: ObjectPlan) -> _Target:
        try:
            options = StripeOptions.model_validate(obj.options)
        except ValueError as exc:
            raise ConfigError(f"{obj.label}: options: {exc}") from None
        name = options.resource or obj.name
        resource = RESOURCES.get(name)
        if resource is None:
            raise ConfigError(
                f"{obj.label}: '{name}' is not a Stripe resource this source reads ({', '.join(RESOURCES)})",
                hint="name the object after one, or set options.resource",
            )
        try:
            expand = expand_params(resource, options.expand)
        except ValueError as exc:
            raise ConfigError(f"{obj.label}: options.{exc}") from None
        if options.track_updates and resource.event_prefix is None:
            raise ConfigError(f"{obj.label}: options.track_updates: Stripe sends no update events for {name}")
        if obj.strategy is Strategy.CREATED and obj.cursor_field != "created":
            raise ConfigError(
                f"{obj.label}: incremental.cursor_field: Stripe lists filter on 'created' only, not "
                f"'{obj.cursor_field}'",
                hint="set cursor_field: created (updates are caught through events)",
            )
        tracking = obj.strategy is Strategy.CREATED and (
            options.track_updates if options.track_updates is not None else resource.mutable
        )
        return _Target(resource, tuple(expand), tracking, tuple(column_specs(obj)))

    def _plan(self, request: ReadRequest, stats: StripeStats) -> list[StripeSlice]:
        obj = request.obj
        target = self._target(obj)
        settings = self.stripe_settings
        now = self.now()
        hi = int(now) - settings.settle_lag_s
        if obj.strategy is Strategy.FULL_REFRESH:
            return [StripeSlice(None, hi, "everything", kind="full")]
        created, events = cursor_positions(request.cursor.value if request.cursor is not None else None)
        incremental = obj.config.incremental
        lookback = int(incremental.lookback_days * 86_400)
        size = max(1, int((incremental.slice_days or settings.slice_days) * 86_400))
        if target.resource.name == "events":
            return self._plan_events_object(obj, created, lookback, hi, size, now, stats)
        if target.tracking:
            if events is None and created is not None:
                if not retention_lost(created, now):
                    # Read without events until now (or from an initial value): replay from then.
                    events = created
                else:
                    log.info(
                        "events_tracking_started",
                        detail=f"{obj.label}: following updates from now on; changes to objects created before "
                        f"{_iso(created)} made earlier than Stripe keeps events are not replayed",
                    )
            if events is not None and retention_lost(events, now):
                log.warning(
                    "events_retention_exceeded",
                    events_position=self._codec.display(events, "events"),
                    retention_days=EVENT_RETENTION_S // 86_400,
                    action="full refresh",
                    detail=f"{obj.label}: updates since the saved events position are no longer listed by "
                    "Stripe; re-reading every object and replacing the table",
                )
                stats.add(events_retention_fallback=1)
                stats.note(
                    f"events retention exceeded: updates since {self._codec.display(events, 'events')} are no longer "
                    "listed by Stripe; the object was re-read in full and its table replaced"
                )
                return [StripeSlice(None, hi, "full refresh (events retention)", kind="refresh", events_to=hi)]
        slices: list[StripeSlice] = []
        lo = created - lookback if created is not None else None
        if target.tracking and events is not None and events < hi:
            slices.append(
                StripeSlice(
                    events, hi, f"events since {_iso(events)}", kind="events", skip_from=lo if lo is not None else 0
                )
            )
        events_to = hi if target.tracking and events is None else None
        if lo is None:
            oldest = self._oldest(obj, target, hi, size, stats)
            windows = [] if oldest is None else created_windows(oldest, hi, size, open_start=True)
        else:
            windows = created_windows(lo, hi, size)
        for start, end in windows:
            label = f"{_iso(start) if start is not None else 'beginning'}..{_iso(end)}"
            slices.append(StripeSlice(start, end, label, kind="created", events_to=events_to))
        if not slices:
            # Nothing to read: one empty window keeps the engine's plan non-empty (no request made).
            slices.append(StripeSlice(hi, hi, "up to date", kind="created"))
        return slices

    def _plan_events_object(
        self,
        obj: ObjectPlan,
        created: int | None,
        lookback: int,
        hi: int,
        size: int,
        now: float,
        stats: StripeStats,
    ) -> list[StripeSlice]:
        """The events object itself: only the last 30 days exist, so that is where it starts."""
        floor = int(now) - EVENT_RETENTION_S + RETENTION_MARGIN_S
        if created is not None and created < floor:
            log.warning(
                "events_retention_exceeded",
                events_position=self._codec.display(created),
                retention_days=EVENT_RETENTION_S // 86_400,
                action="continue from the oldest event Stripe keeps",
                detail=f"{obj.label}: events between {_iso(created)} and {_iso(floor)} are no longer listed by Stripe",
            )
            stats.add(events_retention_gap=1)
            stats.note(f"events between {_iso(created)} and {_iso(floor)} are no longer listed by Stripe")
        lo = max(created - lookback, floor) if created is not None else floor
        windows = created_windows(lo, hi, size)
        slices = [StripeSlice(a, b, f"{_iso(a or lo)}..{_iso(b)}", kind="created") for a, b in windows]
        return slices or [StripeSlice(hi, hi, "up to date", kind="created")]

    def _oldest(self, obj: ObjectPlan, target: _Target, hi: int, size: int, stats: StripeStats) -> int | None:
        """Where a first backfill starts (a bisection with one-item lists)."""
        client = self._client(stats)
        where = f"{obj.label}: GET /v1/{target.resource.name} (history search)"

        def exists_before(t: int) -> bool:
            params = list_params(target.resource, lo=None, hi=t, page_size=1)
            return bool(items_at(self._list(client, target.resource, params, where=where), "data", where=where))

        return oldest_window_start(exists_before, EARLIEST_CREATED, hi, size)

    # ------------------------------------------------------------------ reading

    def _client(self, stats: SourceStats) -> Any:
        """A ``StripeClient`` for one object read, its HTTP on a transport counting into ``stats``.

        Requests go through the client's ``raw_request``: its authentication, versioning,
        parameter encoding and typed errors, without building a model object per item, which
        costs about a millisecond per charge and would hold one reader below Stripe's rate limit.
        """
        import stripe

        return stripe.StripeClient(
            self._api_key,
            base_addresses={"api": self.base_url},
            http_client=transport_http_client()(self.transport(stats)),
            max_network_retries=0,  # the transport retries, honouring Retry-After, within the bucket
            stripe_version=self.stripe_settings.api_version,
        )

    def _call(self, fn: Callable[[], Any], *, where: str, path: str) -> Any:
        import stripe

        try:
            return fn()
        except DativoError:
            raise
        except stripe.StripeError as exc:
            raise classify_stripe_error(
                exc, where=where, path=path, api_version=self.stripe_settings.api_version
            ) from None

    def _list(self, client: Any, resource: StripeResource, params: dict[str, Any], *, where: str) -> dict[str, Any]:
        """One list page's JSON body (PAGE001 when it is not a list envelope)."""
        path = f"/v1/{resource.name}"
        response = self._call(lambda: client.raw_request("get", path, **params), where=where, path=path)
        body = getattr(response, "data", None)
        if not isinstance(body, dict):
            raise PaginationError(f"{where}: the response is not a JSON object")
        return body

    def _pages(
        self,
        client: Any,
        obj: ObjectPlan,
        resource: StripeResource,
        params: dict[str, Any],
        stats: SourceStats,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of one list, newest first, following ``starting_after``."""
        where = f"{obj.label}: GET /v1/{resource.name}"

        def fetch(token: str | None, number: int) -> Page[str]:
            page_where = f"{where} page {number}"
            body = self._list(
                client, resource, {**params, **({"starting_after": token} if token else {})}, where=page_where
            )
            items_at(body, "data", where=page_where, required=("id", "created"))
            return starting_after(body, where=page_where)

        yield from paginate(
            fetch, where=where, max_pages=self.settings.max_pages, on_page=lambda _n, _p: stats.add(pages=1)
        )

    def _part_items(
        self,
        client: Any,
        obj: ObjectPlan,
        target: _Target,
        part: StripeSlice,
        events_position: int | None,
        reached: _Reached,
        stats: StripeStats,
    ) -> Iterator[Mapping[str, Any]]:
        """The objects of one slice (listed, or the latest versions announced by events)."""
        if part.events_to is not None:
            reached.events_to = _latest(reached.events_to, part.events_to)
        if part.kind == "events":
            yield from self._event_items(client, obj, target, part, events_position, reached, stats)
            return
        lo, hi = part.start, part.end
        if lo is not None and hi is not None and lo >= hi:
            return
        params = list_params(
            target.resource, lo=lo, hi=hi, page_size=self.stripe_settings.page_size, expand=target.expand
        )
        for items in self._pages(client, obj, target.resource, params, stats):
            for item in items:
                reached.created = _latest(reached.created, int(item["created"]) + 1)
                yield item

    def _event_items(
        self,
        client: Any,
        obj: ObjectPlan,
        target: _Target,
        part: StripeSlice,
        events_position: int | None,
        reached: _Reached,
        stats: StripeStats,
    ) -> Iterator[Mapping[str, Any]]:
        """Latest version of each object changed by events in ``[start, end)``.

        Events come newest first, so an object's first event carries its latest version. Stripe
        orders events by their ``created`` second only, so an object changed several times within
        one second is fetched again: its current version is newer than all of them.
        """
        resource = target.resource
        params = list_params(
            RESOURCES["events"],
            lo=part.start,
            hi=part.end,
            page_size=self.stripe_settings.page_size,
            event_type=f"{resource.event_prefix}.*",
        )
        where = f"{obj.label}: GET /v1/events"
        done: set[str] = set()
        second: int | None = None
        pending: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}  # this second's events by object

        def settle() -> Iterator[Mapping[str, Any]]:
            for object_id, versions in pending.items():
                done.add(object_id)
                stats.add(updates_from_events=1)
                yield self._event_version(client, obj, target, object_id, versions)
            pending.clear()

        for items in self._pages(client, obj, RESOURCES["events"], params, stats):
            stats.add(events_read=len(items))
            for position, event in enumerate(items):
                at = int(event["created"])
                reached.events = _latest(reached.events, at + 1)
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
        if quiet and events_position is not None and events_position < int(self.now()) - EVENTS_KEEPALIVE_S:
            reached.events = part.end

    def _event_version(
        self,
        client: Any,
        obj: ObjectPlan,
        target: _Target,
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
            current = self._retrieve(client, obj, target, object_id)
            if current is not None and current.get("deleted"):
                deleted = resource.deletable
            elif current is not None:
                version = dict(current)
        if deleted:
            version["deleted"] = True
        return version

    def _retrieve(self, client: Any, obj: ObjectPlan, target: _Target, object_id: str) -> dict[str, Any] | None:
        """The object as it is now, with the object's expansions (events carry it unexpanded).

        None when it is gone (404); ``{"deleted": true, ...}`` when Stripe keeps a deletion stub.
        """
        import stripe

        resource = target.resource
        expand = [path.removeprefix("data.") for path in target.expand]
        path = f"/v1/{resource.name}/{quote(object_id, safe='')}"
        where = f"{obj.label}: GET {path}"
        version = self.stripe_settings.api_version
        try:
            response = client.raw_request("get", path, **({"expand": expand} if expand else {}))
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                return None  # gone since the event: its last announced version stands
            raise classify_stripe_error(exc, where=where, path=path, api_version=version) from None
        except stripe.StripeError as exc:
            raise classify_stripe_error(exc, where=where, path=path, api_version=version) from None
        body = getattr(response, "data", None)
        if not isinstance(body, dict) or not (body.get("deleted") or "created" in body):
            return None
        return body


__all__ = [
    "RESOURCES",
    "ColumnSpec",
    "StripeConnection",
    "StripeCursorCodec",
    "StripeOptions",
    "StripeResource",
    "StripeSlice",
    "StripeSource",
    "StripeStats",
    "cell",
    "classify_stripe_error",
    "column_specs",
    "created_windows",
    "cursor_positions",
    "cursor_value",
    "expand_params",
    "list_params",
    "oldest_window_start",
    "retention_lost",
    "to_batch",
    "value_at",
]
