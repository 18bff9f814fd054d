"""The HubSpot source: :class:`HubSpotSource`, which checks objects, plans a read's windows and streams them.

It holds the credential's tokens (:mod:`~dativo_dagster.sources.hubspot.tokens`) and builds one
client per object read on the read's transport (:mod:`~dativo_dagster.sources.hubspot.client`),
plans the read from the object's properties (:mod:`~dativo_dagster.sources.hubspot.properties`),
and streams it through the search windows or the list endpoint
(:mod:`~dativo_dagster.sources.hubspot.reads`) or, for owners,
:mod:`~dativo_dagster.sources.hubspot.owners`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pyarrow as pa

from dativo_dagster.api.limits import RateLimitSettings
from dativo_dagster.api.source import ApiSource
from dativo_dagster.api.transport import ApiTransport
from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, ExtractError
from dativo_dagster.sources.base import Extraction, ReadRequest, Slice, SourceStats
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.hubspot.client import hubspot_client
from dativo_dagster.sources.hubspot.cursor import DAY_MS, HubSpotCursorCodec, iso_ms
from dativo_dagster.sources.hubspot.errors import MissingScopesError, call_api, hubspot_sender
from dativo_dagster.sources.hubspot.options import HubSpotConnection, HubSpotOptions
from dativo_dagster.sources.hubspot.owners import OWNER_BATCH_SCHEMA, OWNER_SCHEMA, OWNERS, owner_batches
from dativo_dagster.sources.hubspot.properties import (
    ReadPlan,
    association_ids,
    cursor_property,
    property_types,
    read_plan,
)
from dativo_dagster.sources.hubspot.reads import list_batches, oldest_modified, search_batches
from dativo_dagster.sources.hubspot.rows import RowBuffer
from dativo_dagster.sources.hubspot.search import slice_windows
from dativo_dagster.sources.hubspot.tokens import AccessTokens
from dativo_dagster.sources.incremental import lower_bound

DEFAULT_SLICE_DAYS = 30.0
"""Commit a long incremental read in windows of this many days unless ``incremental.slice_days`` says."""

CRM_OBJECTS = ("contacts", "companies", "deals", "tickets")
"""The CRM objects read by name (custom objects through ``options.object_type``)."""


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
        self._tokens: AccessTokens | None = None
        self._plans: dict[tuple[Any, ...], ReadPlan] = {}
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

    def tokens(self) -> AccessTokens:
        """The credential's access tokens (CFG001 when the credentials are incomplete)."""
        with self._lock:
            if self._tokens is None:
                self._tokens = AccessTokens(self.credentials, label=f"{self.vendor} credentials", clock=self.clock)
            return self._tokens

    # ------------------------------------------------------------------ the client

    def client(self, transport: ApiTransport) -> Any:
        """A ``hubspot.HubSpot`` client for one object read, its HTTP going through ``transport``."""
        return hubspot_client(transport, self.tokens(), host=self.base_url)

    # ------------------------------------------------------------------ Source interface

    def check_connection(self) -> None:
        """Authenticate (an OAuth refresh when needed) and make one cheap call.

        A 403 for a missing scope still proves the credential: the objects' checks name scopes.
        """
        stats = SourceStats()
        client = self.client(self.transport(stats))
        try:
            call_api(
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

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
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

    def rows_from_page(self, obj: ObjectPlan, page: Mapping[str, Any]) -> pa.RecordBatch | None:
        """The records of a retained search page (``POST .../search`` asking for the object's
        properties; a split probe asks for one and is skipped) or list page, as rows of the current
        plan. Associations come inline in list pages only: a searched object with associations is
        refused (CFG001), as are owners.
        """
        if self._object_type(obj) == OWNERS:
            raise ConfigError(f"{obj.label}: replaying raw pages of owners is not supported", hint="re-run the object")
        plan = self._plan(obj, discover=obj.contract is None)
        status = page.get("status")
        if not isinstance(status, int) or not 200 <= status < 300:
            return None
        url = str(page.get("url", "")).split("://", 1)[-1]
        path = ("/" + url.split("/", 1)[1] if "/" in url else "/").split("?", 1)[0]
        base = f"/crm/v3/objects/{plan.object_type}"
        searched = page.get("method") == "POST" and path == f"{base}/search"
        listed = page.get("method") == "GET" and path == base
        if not searched and not listed:
            return None
        where = f"{obj.label}: raw page {page.get('method')} {path}"
        if searched:
            if plan.associations:
                raise ConfigError(
                    f"{obj.label}: its associations were read by separate requests; replaying its raw search "
                    "pages is not supported",
                    hint="replay from quarantine, or re-run the object",
                )
            asked = _json_object(str(page.get("request_body") or "{}"), where).get("properties") or []
            if not set(plan.properties) <= set(asked):
                return None  # a split probe: one property, not the object's rows
        items = _json_object(str(page.get("body", "")), where).get("results")
        if not isinstance(items, list):
            raise ExtractError(f"{where}: the stored response has no 'results' list")
        rows = RowBuffer(plan)
        for item in items:
            links = None
            if plan.associations:
                blocks = item.get("associations") or {}
                if not isinstance(blocks, dict):
                    raise ExtractError(f"{where}: record {item.get('id')!r} has a malformed 'associations'")
                links = {other: association_ids(blocks.get(other), where=where) for other in plan.associations}
            rows.add(item, links, where=where)
        return rows.take() if rows.count else None

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

    def _plan(self, obj: ObjectPlan, *, discover: bool, transport: ApiTransport | None = None) -> ReadPlan:
        """The properties, associations and columns of a CRM object read (cached per run)."""
        options = HubSpotOptions.model_validate(obj.options)
        object_type = options.object_type or obj.name
        key = (obj.label, discover, object_type, tuple(options.properties or ()), tuple(options.associations))
        with self._lock:
            found = self._plans.get(key)
        if found is not None:
            return found
        search_property = cursor_property(obj)
        definitions = None
        if discover:
            transport = transport or self.transport(self._side_stats(obj))
            definitions = property_types(self.client(transport), obj.label, object_type, transport.stats)
        plan = read_plan(
            obj, options, object_type=object_type, search_property=search_property, definitions=definitions
        )
        with self._lock:
            self._plans[key] = plan
        return plan

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
            start = oldest_modified(self.client(transport), obj, plan, stats)
            if start is None:
                return None
        return (int(start), end) if int(start) < end else None

    # ------------------------------------------------------------------ reading

    def _search(
        self,
        request: ReadRequest,
        plan: ReadPlan,
        transport: ApiTransport,
        stats: SourceStats,
        reached: dict[str, int],
    ) -> Iterator[pa.RecordBatch]:
        """The search windows of an incremental read (the request's slice, else its whole range)."""
        assert plan.search_property is not None
        if request.window is not None:
            bounds: tuple[int, int] | None = (int(request.window.start), int(request.window.end))
        else:
            bounds = self._bounds(request, transport, stats)
        if bounds is None:
            return
        reached["end"] = bounds[1]
        client = self.client(transport)
        yield from search_batches(client, request.obj, plan, bounds, stats, reached, max_pages=self.settings.max_pages)

    def _list(
        self, obj: ObjectPlan, plan: ReadPlan, transport: ApiTransport, stats: SourceStats
    ) -> Iterator[pa.RecordBatch]:
        """Every record through the list endpoint (a full refresh)."""
        yield from list_batches(self.client(transport), obj, plan, stats, max_pages=self.settings.max_pages)

    def _owners(self, obj: ObjectPlan, transport: ApiTransport, stats: SourceStats) -> Iterator[pa.RecordBatch]:
        """Active owners, then archived ones (deals and tickets still point at those)."""
        yield from owner_batches(self.client(transport), obj, stats)


def _json_object(text: str, where: str) -> dict[str, Any]:
    """A stored body as a JSON object (EXT001 otherwise)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ExtractError(f"{where}: the stored body is not JSON") from None
    if not isinstance(data, dict):
        raise ExtractError(f"{where}: the stored body is not a JSON object")
    return data
