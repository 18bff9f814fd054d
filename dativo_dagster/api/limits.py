"""Token buckets per credential: shared by a run's threads, or by every process through Redis.

A vendor limits a credential, not a process. Two runs of one tenant, or a backfill beside the
schedule, share the credential's budget only if they share its bucket: with
``DATIVO_RATE_LIMIT_URL=redis://...`` the bucket lives in Redis (pyrate-limiter's token bucket,
updated atomically by a Lua script), keyed by a digest of the credential, never the credential.
Without it, one bucket per credential is shared by the threads of the run that built it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from pyrate_limiter import InMemoryStateStore, Limiter, Rate, RedisStateStore, StateBucket, TokenBucket

from dativo_dagster.errors import ConfigError, ExtractError

log = structlog.get_logger("dativo.api")

RATE_LIMIT_URL_ENV = "DATIVO_RATE_LIMIT_URL"
"""``redis://host:port/db``: share every credential's bucket between processes."""

API_RPS_ENV = "DATIVO_API_RPS"
"""Sets the requests per second of every credential's default bucket, over the recipe's and the
job's (a deployment whose accounts have other limits). The vendor's endpoint-specific buckets
(HubSpot's search) are only ever lowered by it, never raised past the vendor's own limit."""

KEY_PREFIX = "dativo:ratelimit:"


class RateLimitSettings(BaseModel):
    """A token bucket: ``rps`` requests per second on average, ``burst`` at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rps: float = Field(gt=0, le=10_000, description="sustained requests per second")
    burst: int = Field(default=0, ge=0, le=10_000, description="requests allowed at once (0: same as rps)")

    @property
    def capacity(self) -> int:
        """Tokens in a full bucket."""
        return self.burst or max(1, int(self.rps))


def credential_fingerprint(*parts: str) -> str:
    """A stable, non-reversible name for a credential (never the credential itself)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:24]


def effective_limit(
    settings: RateLimitSettings, environ: dict[str, str] | None = None, *, bucket: str = "default"
) -> RateLimitSettings:
    """``settings`` with ``DATIVO_API_RPS`` applied: the default bucket takes its rate; another
    bucket is only capped by it."""
    raw = (environ if environ is not None else os.environ).get(API_RPS_ENV, "").strip()
    if not raw:
        return settings
    try:
        rps = float(raw)
    except ValueError:
        raise ConfigError(f"{API_RPS_ENV}={raw!r} is not a number of requests per second") from None
    if rps <= 0:
        raise ConfigError(f"{API_RPS_ENV} must be positive")
    if bucket == "default":
        return RateLimitSettings(
            rps=rps, burst=min(settings.capacity, max(1, int(rps))) if rps < settings.rps else settings.burst
        )
    if rps >= settings.rps:
        return settings
    return RateLimitSettings(rps=rps, burst=min(settings.capacity, max(1, int(rps))))


@dataclass
class Bucket:
    """One credential's bucket for one class of endpoint (e.g. HubSpot's search)."""

    name: str
    settings: RateLimitSettings
    limiter: Limiter
    shared: bool
    component: str = ""
    _last_report: float = 0.0
    _waited_since: float = 0.0

    def acquire(self) -> float:
        """Take one token, waiting for it; returns the seconds spent waiting."""
        started = time.monotonic()
        try:
            self.limiter.try_acquire(self.name, 1, blocking=True)
        except Exception as exc:
            # Redis unreachable mid-run: the limit cannot be honoured, so the call is not made.
            if type(exc).__module__.startswith("redis"):
                raise ExtractError(f"rate-limit store unreachable ({type(exc).__name__}: {exc})") from None
            raise
        now = time.monotonic()
        waited = now - started
        self._waited_since += waited
        if self._waited_since >= 0.05 and now - self._last_report >= 1.0:
            # At most one line a second per bucket: what throttling cost since the last line.
            log.info(
                "metric=rate_limit",
                component=self.component or self.name,
                tokens=self.settings.capacity,
                rate=self.settings.rps,
                shared="redis" if self.shared else "process",
                waited_s=round(self._waited_since, 3),
            )
            self._last_report = now
            self._waited_since = 0.0
        return waited


class LimiterRegistry:
    """The buckets of one run (or one process), by credential fingerprint and bucket name.

    Built per run by the resource, never a module global: two tenants with different keys get
    different buckets; two jobs of one tenant sharing a key share one.

    Args:
        redis_url: Share buckets through Redis; default ``$DATIVO_RATE_LIMIT_URL``.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        url = redis_url if redis_url is not None else os.environ.get(RATE_LIMIT_URL_ENV, "").strip()
        self.redis_url = url or None
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._redis: Any = None

    def bucket(self, fingerprint: str, name: str, settings: RateLimitSettings) -> Bucket:
        """The bucket ``name`` of the credential ``fingerprint`` (created on first use)."""
        settings = effective_limit(settings, bucket=name)
        key = (fingerprint, name)
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                found = self._build(fingerprint, name, settings)
                self._buckets[key] = found
            return found

    def _build(self, fingerprint: str, name: str, settings: RateLimitSettings) -> Bucket:
        # The sustained rate as whole requests per interval: 2.5 req/s is 5 per 2,000 ms.
        interval_ms = 1000
        limit = settings.rps
        while abs(limit - round(limit)) > 1e-6 and interval_ms < 60_000:
            interval_ms *= 10
            limit = settings.rps * interval_ms / 1000
        rate = Rate(max(1, round(limit)), interval_ms, burst=settings.capacity)
        store: Any
        if self.redis_url:
            store = RedisStateStore(self._redis_client(), f"{KEY_PREFIX}{fingerprint}:{name}")
        else:
            store = InMemoryStateStore()
        bucket = StateBucket([rate], TokenBucket(), store)
        return Bucket(
            name=name,
            settings=settings,
            # buffer_ms=0: pyrate-limiter otherwise sleeps 50 ms past every computed wait, which
            # turns a 4.7/s bucket into 3.8/s.
            limiter=Limiter(bucket, buffer_ms=0),
            shared=bool(self.redis_url),
            component=f"{name}@{fingerprint[:8]}",
        )

    def _redis_client(self) -> Any:
        if self._redis is None:
            try:
                import redis
            except ImportError:
                raise ConfigError(f"{RATE_LIMIT_URL_ENV} is set but the redis package is not installed") from None
            try:
                self._redis = redis.Redis.from_url(str(self.redis_url), socket_timeout=5, socket_connect_timeout=5)
                self._redis.ping()
            except ValueError as exc:
                raise ConfigError(f"{RATE_LIMIT_URL_ENV}: {exc}") from None
            except redis.RedisError as exc:
                raise ExtractError(f"{RATE_LIMIT_URL_ENV}: Redis is not reachable ({type(exc).__name__})") from None
        return self._redis
