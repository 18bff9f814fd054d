"""Shared core of the local API emulators: HTTP server, clock, rate limits, faults and counters.

An emulator (:class:`Emulator` subclass) implements one vendor's routes and wire formats; this
module serves it over HTTP on 127.0.0.1 from a background thread (tests) or as a subprocess
(benchmarks), and provides what every vendor shares:

* a fake clock that tests can move forward (:class:`FakeClock`);
* per-credential rate limits: token buckets (:class:`TokenBucket`) and rolling windows
  (:class:`RollingWindow`), keyed by whatever the vendor limits on (:class:`RateLimiter`);
* configurable latency, and fault injection for the next N requests (:class:`Fault`);
* counters of requests per key and path, statuses, and every 429 with its time (:class:`Stats`);
* admin endpoints under ``/__fake__/`` (a prefix no real API uses) so that another process,
  such as a benchmark, can inject faults, read counters and call the emulator's mutation methods.

Admin HTTP API (JSON bodies; no authentication, loopback only):

========  ==============================  ======================================================
method    path                            effect
========  ==============================  ======================================================
GET       ``/__fake__/health``            ``{"ok": true, "api": name}``
GET       ``/__fake__/stats``             counters (see :meth:`Stats.snapshot`)
POST      ``/__fake__/stats/reset``       zero the counters
GET       ``/__fake__/faults``            pending faults
POST      ``/__fake__/faults``            add one fault object or a list of them (:class:`Fault`)
DELETE    ``/__fake__/faults``            drop pending faults
GET/POST  ``/__fake__/config``            read / set ``latency_ms``, ``jitter_ms``, ``limits``
GET       ``/__fake__/clock``             ``{"now": epoch seconds}``
POST      ``/__fake__/clock/advance``     ``{"seconds": n}`` moves the fake clock forward
POST      ``/__fake__/call/<method>``     calls a whitelisted emulator method with JSON kwargs
========  ==============================  ======================================================
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

ADMIN_PREFIX = "/__fake__/"

#: Fault kinds. ``status`` answers an HTTP error with the vendor's own body for that status;
#: the others break the transport or the payload.
FAULT_KINDS = frozenset({"status", "hang", "reset", "short_read", "truncated", "malformed_json", "missing_field"})


# --------------------------------------------------------------------------------------------
# clock


class FakeClock:
    """Wall-clock time that tests can move forward.

    The clock runs with real time from ``start`` (default: now) unless ``frozen``; ``advance``
    adds an offset. Everything an emulator stamps on data (``created``, token expiry, event
    retention) reads this clock; rate limits use real monotonic time instead, because
    benchmarks measure real throughput.
    """

    def __init__(self, start: float | None = None, *, frozen: bool = False) -> None:
        """Create a clock.

        Args:
            start: Epoch seconds the clock shows now; ``None`` for the real time.
            frozen: If true the clock only moves through :meth:`advance` and :meth:`set`.
        """
        self._lock = threading.Lock()
        self._base = time.time() if start is None else float(start)
        self._anchor = time.monotonic()
        self._frozen = frozen

    def now(self) -> float:
        """Current fake time in epoch seconds."""
        with self._lock:
            if self._frozen:
                return self._base
            return self._base + (time.monotonic() - self._anchor)

    def advance(self, seconds: float) -> float:
        """Move the clock forward (or back, with a negative value); return the new time."""
        with self._lock:
            self._base += seconds
            value = self._base if self._frozen else self._base + (time.monotonic() - self._anchor)
        return value

    def set(self, epoch: float) -> None:
        """Jump to ``epoch``."""
        with self._lock:
            self._base = float(epoch)
            self._anchor = time.monotonic()


# --------------------------------------------------------------------------------------------
# rate limits


@dataclass
class Decision:
    """Outcome of a rate-limit check.

    Attributes:
        allowed: Whether the request may proceed.
        retry_after: Seconds until a request would be allowed again (0 if allowed).
        limit: The policy's capacity (requests per window, or bucket size).
        remaining: Requests left in the window / tokens left after this request.
        policy: Name of the policy that decided (the one that refused, if any).
        window_ms: Length of the policy's window in milliseconds.
    """

    allowed: bool
    retry_after: float = 0.0
    limit: int = 0
    remaining: int = 0
    policy: str = ""
    window_ms: int = 1000


class TokenBucket:
    """Classic token bucket: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, name: str = "token_bucket") -> None:
        """Create a full bucket.

        Args:
            rate: Tokens added per second.
            burst: Bucket capacity (the largest burst that passes at once).
            name: Policy name reported in decisions.
        """
        self.rate = float(rate)
        self.burst = int(burst)
        self.name = name
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        # ``now`` may predate the bucket's creation by a hair (read before the bucket was built)
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now

    def peek(self, now: float) -> Decision:
        """Would a request pass now? Does not take a token."""
        self._refill(now)
        window_ms = int(1000 * self.burst / self.rate) if self.rate > 0 else 0
        if self._tokens >= 1.0:
            return Decision(True, 0.0, self.burst, int(self._tokens), self.name, window_ms)
        wait = (1.0 - self._tokens) / self.rate if self.rate > 0 else math.inf
        return Decision(False, wait, self.burst, 0, self.name, window_ms)

    def commit(self, now: float) -> None:
        """Take a token (after :meth:`peek` said yes)."""
        self._refill(now)
        self._tokens -= 1.0

    def try_acquire(self, now: float) -> Decision:
        """Take a token if one is there."""
        decision = self.peek(now)
        if decision.allowed:
            self.commit(now)
            decision.remaining = int(self._tokens)
        return decision


class RollingWindow:
    """At most ``limit`` requests in any ``window`` seconds (a sliding log, like HubSpot's)."""

    def __init__(self, limit: int, window: float, name: str = "rolling") -> None:
        """Create an empty window.

        Args:
            limit: Requests allowed per window.
            window: Window length in seconds.
            name: Policy name reported in decisions (e.g. ``TEN_SECONDLY_ROLLING``).
        """
        self.limit = int(limit)
        self.window = float(window)
        self.name = name
        self._log: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._log and self._log[0] <= now - self.window:
            self._log.popleft()

    def peek(self, now: float) -> Decision:
        """Would a request pass now? Does not record it."""
        self._expire(now)
        remaining = self.limit - len(self._log)
        if remaining > 0:
            return Decision(True, 0.0, self.limit, remaining, self.name, int(self.window * 1000))
        wait = self._log[0] + self.window - now if self._log else self.window
        return Decision(False, max(wait, 0.001), self.limit, 0, self.name, int(self.window * 1000))

    def commit(self, now: float) -> None:
        """Record a request."""
        self._log.append(now)

    def try_acquire(self, now: float) -> Decision:
        """Record the request if the window has room."""
        decision = self.peek(now)
        if decision.allowed:
            self.commit(now)
            decision.remaining -= 1
        return decision


class DailyQuota:
    """A count of requests per UTC day (HubSpot's daily limit)."""

    def __init__(self, limit: int, name: str = "DAILY", clock: Callable[[], float] = time.time) -> None:
        """Create a quota.

        Args:
            limit: Requests allowed per UTC day.
            name: Policy name reported in decisions.
            clock: Epoch-seconds source (the day boundary is read from it).
        """
        self.limit = int(limit)
        self.name = name
        self._clock = clock
        self._day = -1
        self._count = 0

    def _roll(self) -> float:
        epoch = self._clock()
        day = int(epoch // 86400)
        if day != self._day:
            self._day, self._count = day, 0
        return epoch

    def peek(self, now: float) -> Decision:
        """Would a request pass now? Does not count it."""
        epoch = self._roll()
        remaining = self.limit - self._count
        if remaining > 0:
            return Decision(True, 0.0, self.limit, remaining, self.name, 86_400_000)
        return Decision(False, (self._day + 1) * 86400 - epoch, self.limit, 0, self.name, 86_400_000)

    def commit(self, now: float) -> None:
        """Count a request."""
        self._roll()
        self._count += 1

    def try_acquire(self, now: float) -> Decision:
        """Count the request if the day's quota has room."""
        decision = self.peek(now)
        if decision.allowed:
            self.commit(now)
            decision.remaining -= 1
        return decision


@dataclass
class Limit:
    """Configuration of one endpoint class's limit for one credential.

    Attributes:
        rps: Sustained requests per second (token-bucket refill rate), or for ``kind="rolling"``
            the number of requests per ``window`` seconds.
        burst: Bucket size (token bucket); ignored for rolling windows.
        kind: ``"bucket"`` or ``"rolling"``.
        window: Window length in seconds for rolling windows.
        name: Policy name reported in 429 bodies and headers.
    """

    rps: float
    burst: int | None = None
    kind: str = "bucket"
    window: float = 1.0
    name: str = ""

    def build(self) -> TokenBucket | RollingWindow:
        """A fresh policy state for one credential."""
        if self.kind == "rolling":
            return RollingWindow(int(self.rps), self.window, self.name or "ROLLING")
        burst = self.burst if self.burst is not None else max(1, math.ceil(self.rps))
        return TokenBucket(self.rps, burst, self.name or "TOKEN_BUCKET")

    def to_json(self) -> dict[str, Any]:
        """JSON form (for ``/__fake__/config``)."""
        return dataclasses.asdict(self)


class RateLimiter:
    """Per-credential limits for named endpoint classes.

    ``limits`` maps an endpoint class (e.g. ``"read"``, ``"search"``) to a :class:`Limit` or a
    list of them (all must pass, e.g. a ten-second window and a daily quota); the class
    ``"default"`` applies to classes without their own entry. ``None`` means unlimited.
    """

    def __init__(self, limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None) -> None:
        """Create a limiter.

        Args:
            limits: Endpoint class → limit(s); see the class docstring.
        """
        self._lock = threading.Lock()
        self._limits: dict[str, list[Limit]] = {}
        self._state: dict[tuple[str, str], list[Any]] = {}
        self.configure(limits or {})

    def configure(self, limits: Mapping[str, Limit | Sequence[Limit] | None], *, replace: bool = False) -> None:
        """Set (or with ``replace`` replace all) class limits; resets the affected states."""
        with self._lock:
            if replace:
                self._limits = {}
                self._state = {}
            for cls, value in limits.items():
                if value is None:
                    self._limits[cls] = []
                elif isinstance(value, Limit):
                    self._limits[cls] = [value]
                else:
                    self._limits[cls] = list(value)
                self._state = {k: v for k, v in self._state.items() if k[1] != cls and cls != "default"}

    def limits(self) -> dict[str, list[Limit]]:
        """The configured limits."""
        with self._lock:
            return {k: list(v) for k, v in self._limits.items()}

    def _policies(self, key: str, cls: str) -> list[Any]:
        configured = self._limits.get(cls, self._limits.get("default", []))
        state = self._state.get((key, cls))
        if state is None:
            state = [limit.build() for limit in configured]
            self._state[(key, cls)] = state
        return state

    def check(self, key: str, cls: str, extra: Sequence[Any] = ()) -> list[Decision]:
        """Count one request of class ``cls`` by credential ``key``.

        Args:
            key: The credential (or app) that limits are kept for.
            cls: Endpoint class.
            extra: Additional policy states (objects with ``peek``/``commit``) that must also
                pass, e.g. a quota shared across classes.

        Returns:
            One decision per policy; the request is allowed only if all are. Nothing is counted
            when any policy refuses, as a real limiter does not charge a rejected request.
        """
        now = time.monotonic()
        with self._lock:
            policies = [*self._policies(key, cls), *extra]
            decisions = [p.peek(now) for p in policies]
            if all(d.allowed for d in decisions):
                for policy, decision in zip(policies, decisions, strict=True):
                    policy.commit(now)
                    decision.remaining = max(decision.remaining - 1, 0)
            return decisions


# --------------------------------------------------------------------------------------------
# requests, responses, faults, counters


class Request:
    """An incoming HTTP request as the emulators see it."""

    def __init__(self, method: str, target: str, headers: Mapping[str, str], body: bytes, base_url: str = "") -> None:
        """Parse a request line target and keep the rest.

        Args:
            method: HTTP method, upper case.
            target: Request target (path and query string).
            headers: Header mapping (case-insensitive lookups are done by :meth:`header`).
            body: Raw body.
            base_url: The server's base URL (for absolute links in responses).
        """
        parts = urlsplit(target)
        self.method = method.upper()
        self.path = parts.path or "/"
        self.query_string = parts.query
        self.query: list[tuple[str, str]] = parse_qsl(parts.query, keep_blank_values=True)
        self._headers = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.base_url = base_url
        self.received = time.monotonic()
        #: The fault being applied, set by the server before it asks for an error body, so
        #: that :meth:`Emulator.error_response` can read options such as ``Fault.reason``.
        self.fault: Fault | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header value, case-insensitively."""
        return self._headers.get(name.lower(), default)

    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header, if any."""
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return json.loads(self.body.decode("utf-8") or "null")

    def form(self) -> list[tuple[str, str]]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        return parse_qsl(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass
class Response:
    """A response an emulator returns.

    Attributes:
        status: HTTP status.
        payload: JSON-able body (kept so that payload faults can alter it), or ``None``.
        raw: A raw body used instead of ``payload`` (e.g. an HTML gateway error).
        headers: Extra headers.
        content_type: Content type of the body.
    """

    status: int
    payload: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def body(self) -> bytes:
        """Serialized body."""
        if self.raw is not None:
            return self.raw
        if self.payload is None:
            return b""
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")


@dataclass
class Fault:
    """A fault applied to the next ``count`` matching requests.

    Attributes:
        kind: One of :data:`FAULT_KINDS`:
            ``status`` — answer ``status`` (500, 502, 503, 401, 403, 404, ...) with the vendor's
            error body for it (502/503 come as an HTML gateway page, as load balancers send);
            ``hang`` — read the request and never answer until ``seconds`` pass (the client
            times out), then drop the connection;
            ``reset`` — drop the connection without an answer;
            ``short_read`` — announce the full ``Content-Length`` but send half the body and
            close (the client sees an incomplete read);
            ``truncated`` — a 200 whose body is the real body cut mid-JSON (consistent length);
            ``malformed_json`` — a 200 whose body is not JSON (single-quoted);
            ``missing_field`` — the real page with ``field`` (default ``id``) removed from the
            first item of its list (``data`` / ``results``).
        count: How many matching requests it applies to.
        path: Only requests whose path starts with this (``None``: any).
        method: Only requests with this method (``None``: any).
        key: Only requests with this credential (``None``: any).
        status: The status for ``kind="status"``.
        field: The field removed for ``kind="missing_field"``.
        seconds: How long a ``hang`` lasts at most.
        reason: Vendor-specific detail of a ``status`` fault's body, for vendors with several
            bodies for one status (Google's 403 reasons: ``rateLimitExceeded``,
            ``userRateLimitExceeded``, ``insufficientPermissions``, ``domainPolicy``...);
            emulators without such variants ignore it.
    """

    kind: str
    count: int = 1
    path: str | None = None
    method: str | None = None
    key: str | None = None
    status: int | None = None
    field: str | None = None
    seconds: float = 60.0
    reason: str | None = None

    def __post_init__(self) -> None:
        """Check the kind."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.kind == "status" and not self.status:
            raise ValueError("a status fault needs a status")

    def matches(self, req: Request, key: str | None) -> bool:
        """Whether this fault applies to ``req``."""
        if self.path is not None and not req.path.startswith(self.path):
            return False
        if self.method is not None and req.method != self.method.upper():
            return False
        return self.key is None or self.key == key

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build from the admin API's JSON form."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class RecordedRequest:
    """An API request as the emulator received it (see :attr:`Emulator.request_log`)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes
    key: str | None

    def json(self) -> Any:
        """The body decoded as JSON (``None`` if empty)."""
        return json.loads(self.body) if self.body else None


class Stats:
    """Counters a test or benchmark reads: requests per key and path, statuses, 429s."""

    def __init__(self) -> None:
        """Start counting now."""
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero everything and restart the relative clock."""
        with self._lock:
            self.started = time.monotonic()
            self.started_epoch = time.time()
            self._requests: Counter[tuple[str, str, str]] = Counter()
            self._statuses: Counter[int] = Counter()
            self._throttled: list[dict[str, Any]] = []
            self._faults: Counter[str] = Counter()

    def record(self, key: str | None, method: str, path: str, status: int, policy: str | None = None) -> None:
        """Count one API request (admin requests are not counted); status 0 = not answered."""
        with self._lock:
            self._requests[(key or "-", method, path)] += 1
            self._statuses[status] += 1
            if status == 429:
                now = time.monotonic()
                self._throttled.append(
                    {
                        "t": round(now - self.started, 6),
                        "at": round(self.started_epoch + (now - self.started), 6),
                        "key": key or "-",
                        "path": path,
                        "policy": policy or "",
                    }
                )

    def record_fault(self, kind: str) -> None:
        """Count a fired fault."""
        with self._lock:
            self._faults[kind] += 1

    def count(self, key: str | None = None, path: str | None = None, method: str | None = None) -> int:
        """Requests answered, optionally for one key, path prefix and method."""
        with self._lock:
            return sum(
                n
                for (k, m, p), n in self._requests.items()
                if (key is None or k == key)
                and (path is None or p.startswith(path))
                and (method is None or m == method)
            )

    def status_count(self, status: int) -> int:
        """Requests answered with ``status``."""
        with self._lock:
            return self._statuses[status]

    def throttled(self, after: float = 0.0, key: str | None = None) -> list[dict[str, Any]]:
        """429 answers (``t`` = seconds since start or reset), optionally only those at ``t >= after``."""
        with self._lock:
            return [e for e in self._throttled if e["t"] >= after and (key is None or e["key"] == key)]

    def faults_fired(self) -> dict[str, int]:
        """Faults that fired, by kind."""
        with self._lock:
            return dict(self._faults)

    def snapshot(self) -> dict[str, Any]:
        """All counters as JSON (the ``/__fake__/stats`` body)."""
        with self._lock:
            by_key: Counter[str] = Counter()
            for (k, _, _), n in self._requests.items():
                by_key[k] += n
            return {
                "started_at": self.started_epoch,
                "uptime_s": round(time.monotonic() - self.started, 6),
                "requests_total": sum(self._requests.values()),
                "by_status": {str(s): n for s, n in sorted(self._statuses.items())},
                "by_key": dict(by_key),
                "by_key_path": [
                    {"key": k, "method": m, "path": p, "count": n} for (k, m, p), n in sorted(self._requests.items())
                ],
                "throttled": list(self._throttled),
                "faults_fired": dict(self._faults),
            }


# --------------------------------------------------------------------------------------------
# emulator base


class Emulator:
    """Base class of a vendor emulator: routing is the subclass's, the rest is shared.

    Subclasses implement :meth:`handle` (authentication, rate limits and routing),
    :meth:`error_response` (the vendor's error body for a status), :meth:`credential`
    (the key that counters are kept for) and set :attr:`list_key`.
    """

    #: Short API name (``stripe``, ``hubspot``).
    name = "fake"
    #: The JSON key holding a page's items (for ``missing_field`` faults).
    list_key = "data"
    #: Methods callable over ``POST /__fake__/call/<method>``.
    admin_methods: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None,
    ) -> None:
        """Create the shared state.

        Args:
            clock: The fake clock (default: a running clock starting now).
            latency_ms: Added to every API request before it is answered.
            jitter_ms: Uniform random extra latency, 0..jitter_ms.
            limits: Endpoint class → :class:`Limit` (see :class:`RateLimiter`).
        """
        self.clock = clock or FakeClock()
        self.latency_ms = float(latency_ms)
        self.jitter_ms = float(jitter_ms)
        self.limiter = RateLimiter(limits)
        self.stats = Stats()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self._rng = random.Random(0)
        # The last API requests as received, so a test can check a client's requests
        # against the vendor's spec (see tests.fakes.specs.validate_request).
        self.request_log: deque[RecordedRequest] = deque(maxlen=2000)

    # -- what subclasses implement --

    def handle(self, req: Request) -> Response:
        """Answer an API request (subclasses: auth, limits, routing)."""
        raise NotImplementedError

    def error_response(self, status: int, req: Request) -> Response:
        """The vendor's answer for an injected error ``status``."""
        raise NotImplementedError

    def credential(self, req: Request) -> str | None:
        """The credential a request carries (counters and faults are keyed by it)."""
        return req.bearer()

    # -- faults --

    def inject(self, kind: str, count: int = 1, **options: Any) -> Fault:
        """Queue a fault for the next ``count`` matching requests; see :class:`Fault`.

        Example: ``emulator.inject("status", status=503, count=2, path="/v1/charges")``.
        """
        fault = Fault(kind, count, **options)
        with self._faults_lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._faults_lock:
            self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        """Faults not used up yet."""
        with self._faults_lock:
            return [dataclasses.replace(f) for f in self._faults]

    def take_fault(self, req: Request, key: str | None) -> Fault | None:
        """Consume one use of the first fault matching ``req``."""
        with self._faults_lock:
            for fault in self._faults:
                if fault.matches(req, key):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- latency and config --

    def delay(self) -> None:
        """Wait the configured latency (interrupted when the server stops)."""
        seconds = self.latency_ms / 1000.0
        if self.jitter_ms:
            seconds += self._rng.uniform(0, self.jitter_ms) / 1000.0
        if seconds > 0:
            self.stopping.wait(seconds)

    def configure(
        self,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None,
    ) -> None:
        """Change latency and/or class limits while serving."""
        if latency_ms is not None:
            self.latency_ms = float(latency_ms)
        if jitter_ms is not None:
            self.jitter_ms = float(jitter_ms)
        if limits is not None:
            self.limiter.configure(limits)

    def config_json(self) -> dict[str, Any]:
        """The ``/__fake__/config`` body."""
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "limits": {k: [limit.to_json() for limit in v] for k, v in self.limiter.limits().items()},
        }

    # -- admin HTTP --

    def admin(self, req: Request) -> Response:
        """Answer a ``/__fake__/`` request."""
        route = req.path[len(ADMIN_PREFIX) :].strip("/")
        try:
            body = req.json() if req.body else {}
        except ValueError:
            return Response(400, {"error": "body is not JSON"})
        try:
            if route == "health":
                return Response(200, {"ok": True, "api": self.name})
            if route == "stats":
                return Response(200, self.stats.snapshot())
            if route == "stats/reset" and req.method == "POST":
                self.stats.reset()
                return Response(200, {"ok": True})
            if route == "faults":
                if req.method == "POST":
                    items = body if isinstance(body, list) else [body]
                    faults = [Fault.from_json(item) for item in items]
                    with self._faults_lock:
                        self._faults.extend(faults)
                elif req.method == "DELETE":
                    self.clear_faults()
                return Response(200, {"faults": [dataclasses.asdict(f) for f in self.pending_faults()]})
            if route == "config":
                if req.method == "POST":
                    limits = body.get("limits")
                    parsed = None
                    if limits is not None:
                        parsed = {
                            cls: None
                            if value is None
                            else [Limit(**v) for v in (value if isinstance(value, list) else [value])]
                            for cls, value in limits.items()
                        }
                    self.configure(body.get("latency_ms"), body.get("jitter_ms"), parsed)
                return Response(200, self.config_json())
            if route == "clock":
                return Response(200, {"now": self.clock.now()})
            if route == "clock/advance" and req.method == "POST":
                return Response(200, {"now": self.clock.advance(float(body.get("seconds", 0)))})
            if route.startswith("call/") and req.method == "POST":
                method = route[len("call/") :]
                if method not in self.admin_methods:
                    return Response(
                        404, {"error": f"{method!r} is not callable; allowed: {sorted(self.admin_methods)}"}
                    )
                result = getattr(self, method)(**body)
                return Response(200, {"result": result})
        except (TypeError, ValueError, KeyError) as exc:
            return Response(400, {"error": f"{type(exc).__name__}: {exc}"})
        return Response(404, {"error": f"no admin route {req.method} {req.path}"})

    # -- serving --

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FakeServer:
        """A :class:`FakeServer` for this emulator (use it as a context manager)."""
        return FakeServer(self, host, port)


# --------------------------------------------------------------------------------------------
# HTTP server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    # An idle keep-alive connection ends after this; stop() closes them all earlier.
    timeout = 60
    # Headers and body go out in one write with TCP_NODELAY: otherwise Nagle's algorithm and
    # the client's delayed ACK add about 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read counters, not logs."""

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        app = self.server.app
        body = self._read_body()
        req = Request(self.command, self.path, dict(self.headers.items()), body, self.server.base_url)
        if req.path.startswith(ADMIN_PREFIX):
            self._send(app.admin(req))
            return
        key = app.credential(req)
        app.request_log.append(RecordedRequest(req.method, req.path, tuple(req.query), body, key))
        app.delay()
        fault = app.take_fault(req, key)
        if fault is not None:
            app.stats.record_fault(fault.kind)
            if fault.kind in ("hang", "reset"):
                if fault.kind == "hang":
                    self._hang(fault.seconds)
                app.stats.record(key, req.method, req.path, 0)  # status 0: no answer
                self._drop()
                return
            if fault.kind == "status":
                assert fault.status is not None
                req.fault = fault
                resp = app.error_response(fault.status, req)
                app.stats.record(key, req.method, req.path, resp.status)
                self._send(resp)
                return
        try:
            resp = app.handle(req)
        except Exception as exc:  # an emulator bug must show as a 500, not a dead connection
            resp = Response(
                500, {"error": {"message": f"emulator error: {type(exc).__name__}: {exc}", "type": "api_error"}}
            )
        policy = resp.headers.pop("X-Fake-Policy", None)
        app.stats.record(key, req.method, req.path, resp.status, policy)
        if fault is None:
            self._send(resp)
            return
        raw = resp.body()
        if fault.kind == "short_read":
            self._send(resp, body=raw[: len(raw) // 2], length=len(raw))
            self._drop()
        elif fault.kind == "truncated":
            self._send(Response(200, raw=raw[: max(len(raw) // 2, 1)], headers=resp.headers))
        elif fault.kind == "malformed_json":
            self._send(Response(200, raw=raw.replace(b'"', b"'") or b"{'", headers=resp.headers))
        elif fault.kind == "missing_field":
            payload = resp.payload
            items = payload.get(app.list_key) if isinstance(payload, dict) else None
            if isinstance(items, list) and items and isinstance(items[0], dict):
                items[0].pop(fault.field or "id", None)
            self._send(resp)

    def _hang(self, seconds: float) -> None:
        """Answer nothing until ``seconds`` pass, the client hangs up, or the server stops."""
        app = self.server.app
        deadline = time.monotonic() + seconds
        while not app.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed the connection (its timeout fired)
                except OSError:
                    return
                app.stopping.wait(0.05)  # pipelined bytes: keep hanging without spinning

    def _send(self, resp: Response, body: bytes | None = None, length: int | None = None) -> None:
        data = resp.body() if body is None else body
        try:
            self.send_response(resp.status)
            if data or resp.payload is not None or resp.raw is not None:
                self.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            buffered: list[bytes] = self.__dict__.setdefault("_headers_buffer", [])
            buffered.append(b"\r\n")
            self.wfile.write(b"".join(buffered) + data)
            buffered.clear()
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads are joined on close so that nothing outlives a test.
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: Emulator) -> None:
        self.app = app
        self.base_url = ""
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (timeouts, resets, pool shutdown) are normal here.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)

    def close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FakeServer:
    """Serves an :class:`Emulator` on a free 127.0.0.1 port from a background thread.

    Use as a context manager: ``with StripeEmulator(...).serve() as server: server.url``.
    Leaving the block stops the server, ends hanging requests and closes keep-alive
    connections, and joins every handler thread.
    """

    def __init__(self, app: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0 = a free port chosen by the OS).

        Args:
            app: The emulator to serve.
            host: Address to bind; keep the loopback address.
            port: Port, or 0 for a free one.
        """
        self.app = app
        self._httpd = _HTTPServer((host, port), app)
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host, self.port = str(bound_host), int(bound_port)
        self.url = f"http://{self.host}:{self.port}"
        self._httpd.base_url = self.url
        self._thread: threading.Thread | None = None

    def start(self) -> FakeServer:
        """Start serving in a background thread."""
        self.app.stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.app.stopping.set()
        self._httpd.shutdown()
        self._httpd.close_open_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (used by the CLI)."""
        self._httpd.serve_forever(poll_interval=0.1)

    def __enter__(self) -> FakeServer:
        """Start and return the server."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()


# --------------------------------------------------------------------------------------------
# admin client, subprocess helpers, CLI


class AdminClient:
    """Client of the ``/__fake__/`` admin API, for use from another process (benchmarks)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        """Point at an emulator.

        Args:
            base_url: The emulator's base URL (``http://127.0.0.1:PORT``).
            timeout: Per-call timeout in seconds.
        """
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + ADMIN_PREFIX + route, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as resp:
            return json.loads(resp.read() or b"null")

    def health(self) -> dict[str, Any]:
        """``GET /__fake__/health``."""
        return dict(self._call("GET", "health"))

    def stats(self) -> dict[str, Any]:
        """Counters (see :meth:`Stats.snapshot`)."""
        return dict(self._call("GET", "stats"))

    def reset_stats(self) -> None:
        """Zero the counters."""
        self._call("POST", "stats/reset", {})

    def inject(self, kind: str, count: int = 1, **options: Any) -> list[dict[str, Any]]:
        """Queue a fault (same arguments as :class:`Fault`); returns the pending faults."""
        return list(self._call("POST", "faults", {"kind": kind, "count": count, **options})["faults"])

    def clear_faults(self) -> None:
        """Drop pending faults."""
        self._call("DELETE", "faults")

    def configure(self, **config: Any) -> dict[str, Any]:
        """Set ``latency_ms``, ``jitter_ms`` and/or ``limits`` (class → Limit JSON)."""
        return dict(self._call("POST", "config", config))

    def advance_clock(self, seconds: float) -> float:
        """Move the fake clock forward; returns the new time."""
        return float(self._call("POST", "clock/advance", {"seconds": seconds})["now"])

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call a whitelisted emulator method (e.g. ``update_object``) with JSON arguments."""
        return self._call("POST", f"call/{method}", kwargs)["result"]


class ServerProcess:
    """An emulator running as a subprocess (``python -m tests.fakes.<api> ...``)."""

    def __init__(self, module: str, args: Sequence[str] = (), *, startup_timeout: float = 60.0) -> None:
        """Prepare the command; :meth:`start` runs it.

        Args:
            module: Module to run, e.g. ``tests.fakes.stripe_api``.
            args: Its command-line arguments (``--port`` defaults to a free one).
            startup_timeout: Seconds to wait for the URL line.
        """
        self.module = module
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ServerProcess:
        """Start the process and wait until it prints its URL."""
        repo = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=repo,
            env=env,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().strip()
                if line.startswith("http://"):
                    self.url = line
                    return self
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"{self.module} did not print its URL within {self.startup_timeout}s: {err[-2000:]}")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ServerProcess:
        """Start and return the process handle."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the process."""
        self.stop()


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every emulator CLI shares (host, port, latency, limits, seed)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (keep the loopback)")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every API request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="random extra latency, 0..N ms")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument("--now", type=float, default=None, help="fake clock start, epoch seconds (default: now)")


def run_cli(app: Emulator, host: str, port: int) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, printing the base URL on stdout once ready."""
    server = FakeServer(app, host, port)

    def _stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the serving thread.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(server.url, flush=True)
    server.serve_forever()


# --------------------------------------------------------------------------------------------
# small helpers


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
