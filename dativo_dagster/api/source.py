"""The base of every API source: connection settings, the run's shared limits, one transport per object.

An API source is a small module: a subclass of :class:`ApiSource` declaring its type, base URL
and rate limits, with pure helpers for its pagination and type mapping, plus a recipe and an
emulator for its tests. Everything about the wire (buckets, breaker, retries, classification,
counting) comes from here and :mod:`~dativo_dagster.api.transport`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import structlog
import urllib3
from pydantic import Field

from dativo_dagster.api.limits import Bucket, LimiterRegistry, RateLimitSettings, credential_fingerprint
from dativo_dagster.api.transport import (
    ApiTransport,
    BreakerSettings,
    Guard,
    Observer,
    RetrySettings,
    Sender,
    urllib3_sender,
)
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.base import ConnectionConfig, Source, SourceStats


class ObjectObservers(Protocol):
    """Makes an observer for one object read from its log context (see :mod:`~dativo_dagster.raw_pages`)."""

    def observer(self, context: Mapping[str, Any]) -> Observer | None: ...


class ApiConnection(ConnectionConfig):
    """Settings every API source has (recipe defaults, overridable per job)."""

    base_url: str | None = Field(default=None, description="API root (default: the vendor's); an emulator in tests")
    timeout_s: float = Field(default=60, gt=0, le=600, description="read timeout per request")
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="requests per second and burst for this credential (default: the vendor's limit)"
    )
    rate_limits: dict[str, RateLimitSettings] = Field(
        default_factory=dict,
        description="limits of the source's other buckets by name (e.g. HubSpot's 'search'); unknown names are refused",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    max_pages: int | None = Field(default=None, ge=1, description="refuse to read more pages per request (PAGE001)")
    max_retried_failures: int = Field(
        default=100, ge=1, description="per object: stop (RETRY001) after this many retried failures, each passing"
    )


@dataclass
class ApiRuntime:
    """What API sources of one run share, by credential: buckets, breakers and connection pools.

    Built per run by the resource (never a module global): two tenants with different keys share
    nothing; two jobs of one tenant with one key share the key's bucket and breaker. With
    ``DATIVO_RATE_LIMIT_URL`` the buckets are shared with every other process too.
    """

    limits: LimiterRegistry = field(default_factory=LimiterRegistry)
    observers: list[Observer] = field(default_factory=list)
    """See every exchange of the run's transports (debug payload logs, raw page archives)."""
    _guards: dict[str, Guard] = field(default_factory=dict)
    _pools: dict[str, urllib3.PoolManager] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def guard(self, fingerprint: str, name: str, settings: BreakerSettings) -> Guard:
        """The breaker of a credential."""
        with self._lock:
            found = self._guards.get(fingerprint)
            if found is None:
                found = Guard(name, settings)
                self._guards[fingerprint] = found
            return found

    def pool(self, fingerprint: str) -> urllib3.PoolManager:
        """The connection pool of a credential (connections are reused across its requests)."""
        with self._lock:
            found = self._pools.get(fingerprint)
            if found is None:
                found = urllib3.PoolManager(num_pools=4, maxsize=8)
                self._pools[fingerprint] = found
            return found


class ApiSource(Source):
    """A source reached over HTTP. Subclasses set the class attributes and implement the four
    :class:`~dativo_dagster.sources.base.Source` methods using :meth:`transport`."""

    vendor: ClassVar[str] = "API"
    default_primary_key = ("id",)
    default_base_url: ClassVar[str]
    default_rate_limits: ClassVar[Mapping[str, RateLimitSettings]] = {"default": RateLimitSettings(rps=10, burst=10)}

    def __init__(self, *args: Any, runtime: ApiRuntime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime or ApiRuntime()
        self.raw_archive: ObjectObservers | None = None
        """Keeps the raw pages of each object read (set for jobs with ``raw_retention_days``)."""

    @classmethod
    def from_plan(
        cls, connection: ConnectionConfig, credentials: dict[str, str], job: JobPlan, *, runtime: Any = None
    ) -> Source:
        """An instance for one run of ``job``, sharing the run's buckets and breakers."""
        return cls(
            connection,
            credentials,
            project_dir=job.project_dir,
            data_roots=job.data_roots,
            runtime=runtime if isinstance(runtime, ApiRuntime) else None,
        )

    @property
    def settings(self) -> ApiConnection:
        """The connection settings."""
        assert isinstance(self.connection, ApiConnection)
        return self.connection

    @property
    def base_url(self) -> str:
        """The API root, without a trailing slash."""
        return (self.settings.base_url or self.default_base_url).rstrip("/")

    def credential_secrets(self) -> tuple[str, ...]:
        """The secret values of the credential (never logged; their digest names the buckets)."""
        return tuple(value for value in self.credentials.values() if value)

    @property
    def fingerprint(self) -> str:
        """The credential's bucket and breaker name: a digest of the base URL and the secrets."""
        return credential_fingerprint(self.base_url, *self.credential_secrets())

    def rate_limits(self) -> dict[str, RateLimitSettings]:
        """The limit of each bucket: the vendor's defaults, then the connection's ``rate_limit``
        (the default bucket) and ``rate_limits`` (others by name).

        Raises:
            ConfigError: CFG001 naming a bucket the source does not have.
        """
        limits = dict(self.default_rate_limits)
        if self.settings.rate_limit is not None:
            limits["default"] = self.settings.rate_limit
        for name, limit in self.settings.rate_limits.items():
            if name not in limits:
                raise ConfigError(
                    f"source.connection.rate_limits.{name}: {self.vendor} has no '{name}' bucket "
                    f"(buckets: {', '.join(sorted(limits))})"
                )
            limits[name] = limit
        return limits

    def buckets(self) -> dict[str, Bucket]:
        """The credential's buckets, shared by the run's threads (and processes, with Redis)."""
        return {
            name: self.runtime.limits.bucket(self.fingerprint, name, limit)
            for name, limit in self.rate_limits().items()
        }

    def sender(self) -> Sender:
        """How a request goes on the wire (override to adapt a vendor's quirks around the default)."""
        return urllib3_sender(self.runtime.pool(self.fingerprint))

    def transport(self, stats: SourceStats, *, name: str | None = None) -> ApiTransport:
        """A transport for one object's reads, counting into ``stats``, sharing the credential's limits."""
        label = name or f"{self.vendor} ({self.fingerprint[:8]})"
        return ApiTransport(
            name=label,
            sender=self.sender(),
            buckets=self.buckets(),
            guard=self.runtime.guard(self.fingerprint, label, self.settings.breaker),
            retry=self.settings.retry,
            stats=stats,
            timeout_s=self.settings.timeout_s,
            redact=self.credential_secrets(),
            max_retried_failures=self.settings.max_retried_failures,
            observers=[*self.runtime.observers, *self.object_observers()],
        )

    def object_observers(self) -> list[Observer]:
        """Observers bound to the object being read: the engine binds ``object`` and ``run_id`` in
        the log context of each object's run, and transports are made inside it."""
        if self.raw_archive is None:
            return []
        found = self.raw_archive.observer(structlog.contextvars.get_contextvars())
        return [found] if found is not None else []

    def rows_from_page(self, obj: ObjectPlan, page: Mapping[str, Any]) -> pa.RecordBatch | None:
        """The object's rows in one retained raw page, parsed with the source's current mapping
        (``dativo replay --from raw``); None for a page that holds none of them (a search, a token).

        Args:
            obj: The object whose run kept the page.
            page: The stored exchange (:mod:`~dativo_dagster.raw_pages`): ``method``, ``url``,
                ``status`` and ``body`` (text).

        Raises:
            ConfigError: CFG001 when the source cannot re-parse raw pages.
        """
        raise ConfigError(
            f"{obj.label}: replaying raw pages is not supported for source type '{self.type}'",
            hint="replay from quarantine instead, or re-run the object",
        )
