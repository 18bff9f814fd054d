"""The Stripe source: :class:`StripeSource`, which checks objects, plans a read's slices and streams them.

A read resolves the object against its options (:mod:`~dativo_dagster.sources.stripe.options`),
plans its slices (:mod:`~dativo_dagster.sources.stripe.windows`; an events replay or a retention
fallback first for objects tracked by events, :mod:`~dativo_dagster.sources.stripe.events`), lists
each window through the official client on dativo's transport
(:mod:`~dativo_dagster.sources.stripe.client`), flattens the objects into Arrow batches
(:mod:`~dativo_dagster.sources.stripe.flatten`) and commits the cursor the read reached
(:mod:`~dativo_dagster.sources.stripe.cursor`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pyarrow as pa

from dativo_dagster.api.limits import RateLimitSettings
from dativo_dagster.api.paging import items_at
from dativo_dagster.api.source import ApiSource
from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.errors import ConfigError, ExtractError
from dativo_dagster.sources.base import ConnectionConfig, Extraction, ReadRequest, Slice, Source, SourceStats
from dativo_dagster.sources.stripe.client import StripeApi
from dativo_dagster.sources.stripe.cursor import (
    CODEC,
    Reached,
    StripeCursorCodec,
    cursor_positions,
    cursor_value,
    latest,
)
from dativo_dagster.sources.stripe.events import (
    StripeStats,
    event_items,
    events_object_slices,
    replay_start,
    retention_lost,
    retention_refresh,
)
from dativo_dagster.sources.stripe.flatten import BATCH_ROWS, to_batch
from dativo_dagster.sources.stripe.options import StripeConnection, StripeOptions, Target, resolve_target
from dativo_dagster.sources.stripe.resources import RESOURCES, list_params
from dativo_dagster.sources.stripe.streams import parallel_pages, sub_windows
from dativo_dagster.sources.stripe.windows import EARLIEST_CREATED, StripeSlice, oldest_window_start, plan_windows


def api_pages(
    api: StripeApi, label: str, target: Target, params: dict[str, Any], stats: SourceStats
) -> Iterator[list[dict[str, Any]]]:
    """One chain's pages (a named function so each parallel chain closes over its own arguments)."""
    return api.pages(label, target.resource, params, stats)


class StripeSource(ApiSource):
    """Stripe objects through the official client, one ``StripeClient`` per credential and read."""

    type = "stripe"
    vendor = "Stripe"
    default_base_url = "https://api.stripe.com"
    # Stripe's test mode allows 25 read requests per second; live mode 100 (raise it per job). The
    # burst stays under Stripe's own: its bucket starts at the first request it sees and checks each
    # request a moment after dativo took the token, so an equal burst leaves no room for that jitter.
    default_rate_limits = {"default": RateLimitSettings(rps=25, burst=20)}
    connection_model = StripeConnection
    options_model = StripeOptions
    supported_strategies = frozenset({Strategy.CREATED, Strategy.FULL_REFRESH})

    _codec: ClassVar[StripeCursorCodec] = CODEC

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
        self._api(stats).list_page(resource, {"limit": 1, **resource.list_defaults}, where=f"GET /v1/{resource.name}")

    def check_object(self, obj: ObjectPlan) -> None:
        """A one-item list with the object's expansions (CFG001 if Stripe refuses them)."""
        target = resolve_target(obj)
        params = list_params(target.resource, lo=None, hi=None, page_size=1, expand=target.expand)
        self._api(StripeStats()).list_page(target.resource, params, where=f"{obj.label}: check")

    def list_objects(self) -> list[str]:
        """The resources this source reads."""
        return list(RESOURCES)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The batches' schema: the contract's columns, or ``id``, ``created`` and the object as JSON."""
        return pa.schema([pa.field(spec.name, spec.type) for spec in resolve_target(obj).specs])

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> StripeCursorCodec:
        """Epoch seconds of ``created``, with the events position for tracked objects."""
        return cls._codec

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
        target = resolve_target(obj)
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
        reached = Reached()
        api = self._api(stats)

        def batches() -> Iterator[pa.RecordBatch]:
            buffer: list[Mapping[str, Any]] = []
            for part in parts:
                for item in self._part_items(api, obj, target, part, events, reached, stats):
                    buffer.append(item)
                    if len(buffer) >= BATCH_ROWS:
                        yield to_batch(buffer, target.specs)
                        buffer = []
            if buffer:
                yield to_batch(buffer, target.specs)

        def new_cursor() -> Any:
            new_created = latest(created, reached.created)
            new_events = latest(latest(events, reached.events), reached.events_to)
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

    def rows_from_page(self, obj: ObjectPlan, page: Mapping[str, Any]) -> pa.RecordBatch | None:
        """The objects of a retained list page of the object's resource (``GET /v1/<resource>``), mapped
        by the current contract; other pages (events, single objects) hold none of its rows."""
        target = resolve_target(obj)
        path = str(page.get("url", "")).split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        if page.get("method") != "GET" or path.split("?", 1)[0] != f"/v1/{target.resource.name}":
            return None
        status = page.get("status")
        if not isinstance(status, int) or not 200 <= status < 300:
            return None
        where = f"{obj.label}: raw page GET /v1/{target.resource.name}"
        try:
            body = json.loads(str(page.get("body", "")))
        except ValueError:
            raise ExtractError(f"{where}: the stored response is not JSON") from None
        if not isinstance(body, dict):
            raise ExtractError(f"{where}: the stored response is not a JSON object")
        items = items_at(body, "data", where=where)
        if not items:
            return None
        return to_batch(items, target.specs)

    # ------------------------------------------------------------------ planning

    def _plan(self, request: ReadRequest, stats: StripeStats) -> list[StripeSlice]:
        obj = request.obj
        target = resolve_target(obj)
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
            return events_object_slices(obj.label, created, lookback=lookback, hi=hi, size=size, now=now, stats=stats)
        if target.tracking:
            events = replay_start(obj.label, created, events, now)
            if events is not None and retention_lost(events, now):
                return [retention_refresh(obj.label, events, hi, stats)]
        return plan_windows(
            created,
            events,
            hi=hi,
            lookback=lookback,
            size=size,
            tracking=target.tracking,
            oldest=lambda: self._oldest(obj, target, hi, size, stats),
        )

    def _oldest(self, obj: ObjectPlan, target: Target, hi: int, size: int, stats: StripeStats) -> int | None:
        """Where a first backfill starts (a bisection with one-item lists)."""
        api = self._api(stats)
        where = f"{obj.label}: GET /v1/{target.resource.name} (history search)"

        def exists_before(t: int) -> bool:
            params = list_params(target.resource, lo=None, hi=t, page_size=1)
            return bool(items_at(api.list_page(target.resource, params, where=where), "data", where=where))

        return oldest_window_start(exists_before, EARLIEST_CREATED, hi, size)

    # ------------------------------------------------------------------ reading

    def _api(self, stats: SourceStats) -> StripeApi:
        """A ``StripeClient`` for one object read, its HTTP on a transport counting into ``stats``."""
        settings = self.stripe_settings
        return StripeApi.connect(
            self._api_key,
            base_url=self.base_url,
            transport=self.transport(stats),
            api_version=settings.api_version,
            max_pages=settings.max_pages,
        )

    def _part_items(
        self,
        api: StripeApi,
        obj: ObjectPlan,
        target: Target,
        part: StripeSlice,
        events_position: int | None,
        reached: Reached,
        stats: StripeStats,
    ) -> Iterator[Mapping[str, Any]]:
        """The objects of one slice (listed, or the latest versions announced by events)."""
        if part.events_to is not None:
            reached.events_to = latest(reached.events_to, part.events_to)
        if part.kind == "events":
            yield from event_items(
                api,
                obj.label,
                target,
                part,
                events_position,
                reached,
                stats,
                page_size=self.stripe_settings.page_size,
                now=self.now,
            )
            return
        lo, hi = part.start, part.end
        if lo is not None and hi is not None and lo >= hi:
            return
        settings = self.stripe_settings

        def chain(part_lo: int | None, part_hi: int | None, chain_api: StripeApi) -> Any:
            params = list_params(
                target.resource, lo=part_lo, hi=part_hi, page_size=settings.page_size, expand=target.expand
            )
            return lambda: api_pages(chain_api, obj.label, target, params, stats)

        if lo is None or hi is None or settings.page_streams == 1:
            chains = [chain(lo, hi, api)]
        else:
            # Each chain has its own client over a transport sharing the credential's bucket.
            parts = sub_windows(lo, hi, settings.page_streams)
            chains = [chain(a, b, api if i == 0 else self._api(stats)) for i, (a, b) in enumerate(parts)]
        for items in parallel_pages(chains):
            for item in items:
                reached.created = latest(reached.created, int(item["created"]) + 1)
                yield item
