"""Every HTTP request an API source makes: rate-limited, guarded, retried, classified, counted.

One :class:`ApiTransport` per credential per run. For each request it takes a token from the
credential's bucket, asks the credential's circuit breaker, sends, and classifies the response:

* 2xx, and 4xx other than 401/403/429 → returned to the caller (which knows whether a 404 means a
  missing object or an API change, and raises CFG001/PAGE001 itself);
* 401/403 → :class:`~dativo_dagster.errors.AuthError` (AUTH001), never retried;
* 429, 5xx, timeouts, dropped connections → retried with exponential backoff and jitter
  (tenacity), waiting at least what ``Retry-After`` (or HubSpot's rate-limit headers) asks;
  when the attempts are spent, or the breaker is open, :class:`RetryExhaustedError` (RETRY001)
  naming the last failure (EXT001).

A vendor's official client keeps its own models and plugs its HTTP layer into :meth:`ApiTransport.request`.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
import urllib3
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from dativo_dagster.api.limits import Bucket
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, DativoError, ExtractError, RetryExhaustedError

log = structlog.get_logger("dativo.api")


class RetrySettings(BaseModel):
    """Retries of transient failures (defaults from the design: 5 attempts, 0.5 s to 8 s)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=5, ge=1, le=20, description="tries per request, the first included")
    initial_s: float = Field(default=0.5, ge=0, le=60)
    max_s: float = Field(default=8.0, ge=0, le=600)
    max_retry_after_s: float = Field(
        default=120, ge=0, le=3600, description="a vendor asking to wait longer than this ends the run (RETRY001)"
    )


class BreakerSettings(BaseModel):
    """The circuit breaker of a credential."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=5, ge=1, le=1000, description="consecutive failures that open it")
    reset_s: float = Field(default=30, ge=0.01, le=3600, description="seconds before a half-open probe")


@dataclass(frozen=True)
class HttpResponse:
    """What came back: status, headers (lower-case names), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        return self.headers.get(name.lower())


class Sender(Protocol):
    """Sends one request; raises :class:`TransportFailure` for network-level failures."""

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float
    ) -> HttpResponse: ...


class TransportFailure(Exception):
    """A request that got no HTTP answer (refused, reset, timed out, TLS failure)."""


CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
"""Request headers that carry a credential: never shown to an observer."""


@dataclass(frozen=True)
class Exchange:
    """One request on the wire and what came back, as observers see it.

    The URL and bodies have the credential's secrets redacted; credential headers are left out.

    Attributes:
        component: The transport's name (``stripe (1a2b3c4d)``), never the credential.
        method: HTTP method.
        url: Full URL, secrets redacted.
        request_headers: Headers sent, without credential headers.
        request_body: Body sent (redacted), or None.
        status: HTTP status, or None when no answer came.
        response_headers: Headers received (lower-case names).
        response_body: Body received (redacted).
        elapsed_s: Seconds from sending to the answer (or the failure).
        failure: Why no answer came (refused, reset, timed out), or None.
    """

    component: str
    method: str
    url: str
    request_headers: Mapping[str, str]
    request_body: bytes | None
    status: int | None
    response_headers: Mapping[str, str]
    response_body: bytes
    elapsed_s: float
    failure: str | None = None

    def summary(self, excerpt_bytes: int = 300) -> dict[str, object]:
        """Method, path, status and the start of the answer: what an error's context carries."""
        text = self.response_body[:excerpt_bytes].decode("utf-8", "replace").replace("\n", " ")
        return {
            "method": self.method,
            "path": _path(self.url),
            "status": self.status,
            "failure": self.failure,
            "response_excerpt": text,
            "elapsed_s": round(self.elapsed_s, 3),
        }


Observer = Callable[[Exchange], None]
"""Sees every exchange of a transport (debug payload logs, raw page archives); must not raise."""


class Stats(Protocol):
    """Where counts go (``SourceStats`` of the extraction)."""

    def add(self, **deltas: float) -> None: ...


class _Retryable(Exception):
    """A failure worth another attempt."""

    def __init__(self, message: str, wait_at_least_s: float = 0.0, throttled: bool = False) -> None:
        super().__init__(message)
        self.wait_at_least_s = wait_at_least_s
        self.throttled = throttled


class _Throttled(_Retryable):
    """A 429: retried, but not counted against the circuit breaker (the vendor is healthy)."""


def urllib3_sender(pool: urllib3.PoolManager) -> Sender:
    """A :class:`Sender` over a urllib3 pool (one pool per transport, i.e. per credential)."""

    def send(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float) -> HttpResponse:
        try:
            response = pool.request(
                method,
                url,
                body=body,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=min(timeout_s, 30), read=timeout_s),
                retries=False,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TransportFailure(f"{type(exc).__name__}: {exc}") from None
        return HttpResponse(
            status=response.status,
            headers={k.lower(): v for k, v in response.headers.items()},
            body=response.data or b"",
            url=url,
        )

    return send


class BreakerOpen(Exception):
    """The credential's circuit is open: the request is not sent."""


@dataclass
class Guard:
    """A credential's circuit breaker, shared by every transport of that credential in the run.

    Closed, it lets every request through and counts consecutive failures (5xx, timeouts, dropped
    connections; a 429 or any other answer means the vendor is alive and resets the count). After
    ``failures`` in a row it opens: requests are refused without being sent. After ``reset_s`` one
    probe goes through (half-open): its success closes the circuit, its failure opens it again.

    The lock covers the state only, never a request: requests of one credential run in parallel
    (pybreaker holds its lock for the whole wrapped call, which allowed one request in flight per
    credential; that is why this is not pybreaker).
    """

    name: str
    settings: BreakerSettings
    openings: int = 0
    _failures: int = 0
    _opened_at: float | None = None
    _probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._probing else "open"

    def before(self) -> bool:
        """Whether a request may go (True: it is the half-open probe).

        Raises:
            BreakerOpen: the circuit is open, or its probe is already in flight.
        """
        with self._lock:
            if self._opened_at is None:
                return False
            if self._probing or time.monotonic() - self._opened_at < self.settings.reset_s:
                raise BreakerOpen()
            self._probing = True
        log.warning("metric=breaker_state", component=self.name, state="half-open")
        return True

    def succeeded(self) -> None:
        """The vendor answered (whatever the status): close the circuit, reset the count."""
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._probing = False
        if was_open:
            log.warning("metric=breaker_state", component=self.name, state="closed")

    def failed(self) -> None:
        """A failure worth a retry (no answer, 5xx): count it, open the circuit at the limit."""
        with self._lock:
            self._failures += 1
            opens = self._probing or (self._opened_at is None and self._failures >= self.settings.failures)
            if opens:
                self._opened_at = time.monotonic()
                self._probing = False
                self.openings += 1
        if opens:
            log.warning("metric=breaker_state", component=self.name, state="open", failures=self._failures)


class ApiTransport:
    """Sends the requests of one credential, within its limits.

    Args:
        name: What to call it in messages and metric lines (``stripe acme``); never the credential.
        sender: Sends one request.
        buckets: Token buckets by name (``"default"`` is used when a request names none).
        guard: The credential's circuit breaker.
        retry: Retry settings.
        stats: Where calls, retries, 429s and seconds throttled are counted.
        timeout_s: Read timeout per request.
        redact: Extra secret values to scrub from messages (the credential).
        sleep: How to wait between attempts (tests pass a recorder).
        max_retried_failures: Stop (RETRY001) after this many retried failures in this transport.
        observers: Called with every :class:`Exchange` (after redaction).
    """

    def __init__(
        self,
        *,
        name: str,
        sender: Sender,
        buckets: Mapping[str, Bucket],
        guard: Guard,
        retry: RetrySettings,
        stats: Stats,
        timeout_s: float = 60.0,
        redact: tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        max_retried_failures: int | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.name = name
        self.observers = list(observers)
        # Per thread: parallel page chains share a transport, and each error names its own request.
        self._local = threading.local()
        # Observed beneath any vendor wrapper set on ``sender`` later: an answer a wrapper turns
        # into an error (an expired token, a missing scope) is still seen and remembered.
        self.sender = self._observed(sender)
        self.buckets = dict(buckets)
        self.guard = guard
        self.retry = retry
        self.stats = stats
        self.timeout_s = timeout_s
        self._redact = redact
        self._sleep = sleep
        # A flaky API can pass every request on its third try and still drag a run for hours:
        # past this many retried failures in one transport (one object), the object stops.
        self.max_retried_failures = max_retried_failures
        self._retried = 0
        self._retried_lock = threading.Lock()

    def _observed(self, inner: Sender) -> Sender:
        """``inner``, with every exchange remembered (when it went wrong) and shown to the observers."""

        def send(
            method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float
        ) -> HttpResponse:
            started = time.monotonic()
            try:
                response = inner(method, url, headers, body, timeout_s)
            except TransportFailure as exc:
                self._saw(method, url, headers, body, None, started, failure=str(exc))
                raise
            self._saw(method, url, headers, body, response, started)
            return response

        return send

    def _saw(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        response: HttpResponse | None,
        started: float,
        failure: str | None = None,
    ) -> None:
        problem = response is None or response.status >= 400
        if not problem and not self.observers:
            return
        exchange = Exchange(
            component=self.name,
            method=method,
            url=self._clean(url),
            request_headers={k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS},
            request_body=self._clean_bytes(body) if body is not None else None,
            status=response.status if response is not None else None,
            response_headers=dict(response.headers) if response is not None else {},
            response_body=self._clean_bytes(response.body) if response is not None else b"",
            elapsed_s=time.monotonic() - started,
            failure=self._clean(failure) if failure else None,
        )
        if problem:
            self._local.problem = exchange
        if getattr(self._local, "private", False):
            return  # a credential exchange (a token call): its bodies are the secrets themselves
        for observer in self.observers:
            observer(exchange)

    @property
    def last_problem(self) -> Exchange | None:
        """The last exchange of this thread's current request that failed (an error status, no answer)."""
        found = getattr(self._local, "problem", None)
        return found if isinstance(found, Exchange) else None

    def _clean_bytes(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        cleaned = self._clean(text)
        return data if cleaned == text else cleaned.encode("utf-8", "surrogateescape")

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        bucket: str = "default",
        what: str = "",
        private: bool = False,
    ) -> HttpResponse:
        """Send one request with the credential's limits, retries and breaker.

        Args:
            method: HTTP method.
            url: Full URL.
            headers: Request headers (the credential is among them; it is never logged).
            body: Request body.
            bucket: Which token bucket the request takes from.
            what: A short label for messages (``GET /v1/charges``); defaults to method and path.
            private: The exchange carries credentials in its bodies (an OAuth token call): it is
                never shown to observers (debug payload logs, raw page archives).

        Raises:
            AuthError: AUTH001 for 401/403.
            RetryExhaustedError: RETRY001 when retries are spent or the breaker is open.
        """
        label = what or f"{method} {_path(url)}"
        self._local.problem = None
        self._local.private = private
        limiter = self.buckets.get(bucket) or self.buckets["default"]
        last: list[str] = []

        def attempt() -> HttpResponse:
            self.stats.add(throttled_s=limiter.acquire())
            openings = self.guard.openings
            try:
                self.guard.before()
            except BreakerOpen:
                raise RetryExhaustedError(
                    f"{self.name}: circuit breaker open after {self.guard.settings.failures} consecutive failures; "
                    f"{label} not sent" + (f" (last failure: {last[-1]})" if last else ""),
                    hint=f"the source keeps failing; the breaker half-opens after {self.guard.settings.reset_s:g} s",
                ) from None
            try:
                response = self._send_once(method, url, headers or {}, body, label)
            except _Throttled:
                self.guard.succeeded()  # the vendor answered: it is alive, only busy
                raise
            except _Retryable:
                self.guard.failed()
                raise
            except BaseException:
                self.guard.succeeded()  # an answer (401, 403, a quota) or our own error: not an outage
                raise
            else:
                self.guard.succeeded()
                return response
            finally:
                if self.guard.openings != openings:
                    self.stats.add(breaker_openings=self.guard.openings - openings)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = min(self.retry.max_s, self.retry.initial_s * 2 ** (state.attempt_number - 1))
            backoff = random.uniform(backoff / 2, backoff)
            at_least = exc.wait_at_least_s if isinstance(exc, _Retryable) else 0.0
            delay = max(backoff, at_least)
            if isinstance(exc, _Retryable) and exc.throttled:
                self.stats.add(throttled_s=delay)
            return delay

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            last.append(str(exc))
            self.stats.add(retries=1)
            with self._retried_lock:
                self._retried += 1
                too_many = self.max_retried_failures is not None and self._retried > self.max_retried_failures
            if too_many:
                raise RetryExhaustedError(
                    f"{self.name}: more than {self.max_retried_failures} retried failures in one object; stopping it "
                    f"(last failure: EXT001 {exc})",
                    hint="the source is unstable; raise max_retried_failures if this is expected",
                )
            log.info("api_retry", component=self.name, request=label, attempt=state.attempt_number, reason=str(exc))

        try:
            return self._retrying(attempt, wait, before_sleep, label)
        except DativoError as exc:
            # What an operator diagnosing the failure needs first: the request that went wrong.
            if self.last_problem is not None and "request" not in exc.context:
                exc.context["request"] = self.last_problem.summary()
            raise

    def _retrying(
        self,
        attempt: Callable[[], HttpResponse],
        wait: Callable[[RetryCallState], float],
        before_sleep: Callable[[RetryCallState], None],
        label: str,
    ) -> HttpResponse:
        try:
            for attempt_state in Retrying(
                stop=stop_after_attempt(self.retry.attempts),
                wait=wait,
                retry=retry_if_exception_type(_Retryable),
                before_sleep=before_sleep,
                sleep=self._sleep,
                reraise=True,
            ):
                with attempt_state:
                    return attempt()
        except _Retryable as exc:
            raise RetryExhaustedError(
                f"{self.name}: {label} failed {self.retry.attempts} time(s); last failure: EXT001 {exc}",
                hint="the source is down or throttling; the next run continues from the committed cursor",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _send_once(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, label: str
    ) -> HttpResponse:
        self.stats.add(api_calls=1)
        try:
            response = self.sender(method, url, headers, body, self.timeout_s)
        except TransportFailure as exc:
            raise _Retryable(f"{label}: no answer ({self._clean(str(exc))})") from None
        self.stats.add(bytes_read=len(response.body))
        status = response.status
        if status == 429:
            self.stats.add(http_429=1)
            retry_after = retry_after_seconds(response)
            if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                raise RetryExhaustedError(
                    f"{self.name}: {label}: rate limited and asked to wait {retry_after:.0f} s "
                    f"(more than {self.retry.max_retry_after_s:.0f} s): the quota is exhausted",
                    hint="the next run continues from the committed cursor once the quota resets",
                )
            raise _Throttled(f"{label}: HTTP 429 rate limited", wait_at_least_s=retry_after or 0.0, throttled=True)
        if status in (401, 403):
            raise AuthError(
                f"{self.name}: {label}: HTTP {status} {_reason(response, self._redact)}",
                hint="check the credential and the permissions (scopes) it grants",
            )
        if status >= 500:
            raise _Retryable(
                f"{label}: HTTP {status} {_reason(response, self._redact)}",
                wait_at_least_s=retry_after_seconds(response) or 0.0,
            )
        return response

    def _clean(self, text: str) -> str:
        for secret in self._redact:
            if secret:
                text = text.replace(secret, "***")
        return redact_text(text)


def retry_after_seconds(response: HttpResponse) -> float | None:
    """How long the vendor asks to wait: ``Retry-After`` (seconds or an HTTP date), or, for
    HubSpot, its rate-limit interval when the remaining budget is zero."""
    raw = response.header("retry-after")
    if raw:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            return max(0.0, when.timestamp() - time.time())
    remaining = response.header("x-hubspot-ratelimit-remaining")
    interval = response.header("x-hubspot-ratelimit-interval-milliseconds")
    if remaining is not None and interval is not None:
        try:
            if int(remaining) <= 0:
                return int(interval) / 1000
        except ValueError:
            return None
    secondly = response.header("x-hubspot-ratelimit-secondly-remaining")
    if secondly is not None and secondly.strip() == "0":
        return 1.0
    return None


def _path(url: str) -> str:
    without_scheme = url.split("://", 1)[-1]
    path = "/" + without_scheme.split("/", 1)[1] if "/" in without_scheme else "/"
    return path.split("?", 1)[0]


def _reason(response: HttpResponse, secrets: tuple[str, ...]) -> str:
    text = response.body[:300].decode("utf-8", "replace").replace("\n", " ")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact_text(text)


__all__ = [
    "ApiTransport",
    "BreakerSettings",
    "Exchange",
    "ExtractError",
    "Guard",
    "HttpResponse",
    "Observer",
    "RetrySettings",
    "Sender",
    "TransportFailure",
    "retry_after_seconds",
    "urllib3_sender",
]
