"""Sending an alert to its routes: retried with backoff, a dead route logged and never fatal.

Imported only when an alert is sent (a sensor tick), never at definitions load: it pulls in
urllib3.

A webhook delivery is retried on connection errors, timeouts, 429 and 5xx (exponential backoff
from the route's ``backoff_s``, at least what ``Retry-After`` asks up to 30 s), never on another
answer: a 400 or 404 will not change by asking again. All of it fits in the caller's deadline
(the sensor tick's budget): a route whose attempts or waits would outlast it is ``deferred`` and
tried again at the next tick, its attempts so far counted. When the attempts are spent the route is
logged as dead, without its URL (a Slack webhook URL is a secret), and the other routes still get
the alert. Nothing here raises for a failed delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from dativo_dagster.alerts.notifications import Alert, slack_payload
from dativo_dagster.config.models import AlertRoute
from dativo_dagster.config.secrets import SecretResolver, register_secrets
from dativo_dagster.errors import ConfigError

log = structlog.get_logger("dativo.alerts")

RETRY_AFTER_MAX_S = 30.0
BACKOFF_MAX_S = 30.0
MIN_ATTEMPT_S = 0.5
"""An attempt gets at least this long; with less left before the deadline the route is deferred."""

Outcome = Literal["delivered", "refused", "dead", "unusable", "deferred"]
"""``deferred``: the deadline came before the route's attempts were spent (tried again later);
every other outcome is final for this alert on this route."""


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert on one route."""

    route: str
    outcome: Outcome
    attempts: int
    reason: str = ""

    @property
    def final(self) -> bool:
        """True unless the route is to be tried again (its attempts were cut short by the deadline)."""
        return self.outcome != "deferred"


class _Retryable(Exception):
    """A failed attempt worth repeating (connection error, timeout, 429, 5xx)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Refused(Exception):
    """An answer that another attempt will not change (a 4xx other than 429, a redirect)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def deliver(
    alert: Alert,
    routes: Mapping[str, AlertRoute],
    names: Sequence[str],
    *,
    resolver: SecretResolver | None = None,
    deadline: float | None = None,
    attempts_made: Mapping[str, int] | None = None,
) -> list[Delivery]:
    """Send ``alert`` to each named route (in parallel: one slow route never delays another).

    Args:
        alert: The notification.
        routes: runner.yaml's ``alerts.routes``.
        names: The routes this alert goes to.
        resolver: Resolves the routes' ``${VAR}`` references (default: the process environment).
        deadline: ``time.monotonic()`` by which every route is done: attempts' timeouts and
            waits (``Retry-After`` included) are cut to it, and a route it cuts short is
            ``deferred`` instead of waited for.
        attempts_made: Per route, attempts made earlier for this alert (they count against the
            route's ``max_attempts``).

    Returns:
        One :class:`Delivery` per route, in ``names`` order.
    """
    resolver = resolver or SecretResolver()
    unique = list(dict.fromkeys(names))
    made = attempts_made or {}
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=min(len(unique), 8), thread_name_prefix="dativo-alert") as pool:
        return list(
            pool.map(
                lambda name: deliver_to_route(
                    alert, name, routes[name], resolver, deadline=deadline, attempts_made=made.get(name, 0)
                ),
                unique,
            )
        )


def deliver_to_route(
    alert: Alert,
    name: str,
    route: AlertRoute,
    resolver: SecretResolver,
    *,
    deadline: float | None = None,
    attempts_made: int = 0,
) -> Delivery:
    """Send ``alert`` to one route; log the outcome (a dead route at error level)."""
    if route.type == "log":
        log.error("alert", route=name, **alert.as_log_fields())
        return Delivery(name, "delivered", 1)
    try:
        url, headers = _resolved_target(route, resolver)
    except ConfigError as exc:
        # The route cannot be used at all (a variable is not set): an operator must fix it.
        delivery = Delivery(name, "unusable", 0, str(exc))
        _log_failure(alert, route, delivery)
        return delivery
    body = alert.as_json() if route.type == "webhook" else slack_payload(alert)
    delivery = _post_with_retries(name, route, url, headers, json.dumps(body).encode(), deadline, attempts_made)
    if delivery.outcome == "deferred":
        log.warning(
            "alert_route_deferred",
            route=name,
            type=route.type,
            attempts=delivery.attempts,
            reason=delivery.reason,
            tenant=alert.tenant,
            job=alert.job,
            alert=alert.kind,
            run_id=alert.run_id,
        )
    elif delivery.outcome == "delivered":
        log.info(
            "alert_sent",
            route=name,
            type=route.type,
            tenant=alert.tenant,
            run_id=alert.run_id,
            attempts=delivery.attempts,
        )
    else:
        _log_failure(alert, route, delivery)
    return delivery


def _log_failure(alert: Alert, route: AlertRoute, delivery: Delivery) -> None:
    log.error(
        "alert_route_failed",
        route=delivery.route,
        type=route.type,
        outcome=delivery.outcome,
        attempts=delivery.attempts,
        reason=delivery.reason,
        tenant=alert.tenant,
        job=alert.job,
        alert=alert.kind,
        run_id=alert.run_id,
    )


def _resolved_target(route: AlertRoute, resolver: SecretResolver) -> tuple[str, dict[str, str]]:
    assert route.url is not None  # the model requires it for webhook and slack routes
    url = resolver.resolve(route.url, where="alerts.routes.url")
    headers = {
        key: resolver.resolve(value, where=f"alerts.routes.headers.{key}") for key, value in route.headers.items()
    }
    # The whole URL is a secret (Slack's carries its token in the path), and so is every header.
    register_secrets([url, *headers.values()])
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("alerts.routes.url: the resolved value is not an http(s) URL with a host")
    return url, headers


def _post_with_retries(
    name: str,
    route: AlertRoute,
    url: str,
    headers: dict[str, str],
    body: bytes,
    deadline: float | None,
    attempts_made: int,
) -> Delivery:
    """POST ``body`` until it is answered, refused, or the route's attempts are spent.

    Every attempt's timeout and every wait between attempts fit in what is left until
    ``deadline`` (``time.monotonic()``): when the next wait would outlast it, the route is
    ``deferred`` (the sensor tries it again at its next tick, counting ``attempts_made`` already).
    """
    import urllib3

    http = urllib3.PoolManager(retries=False, num_pools=1)
    request_headers = {"Content-Type": "application/json", "User-Agent": "dativo-alerts", **headers}
    attempts = attempts_made
    try:
        while True:
            timeout = route.timeout_s if deadline is None else min(route.timeout_s, deadline - time.monotonic())
            if timeout < MIN_ATTEMPT_S:
                return Delivery(name, "deferred", attempts, "tick time budget spent")
            attempts += 1
            try:
                _attempt(http, url, body, request_headers, timeout)
                return Delivery(name, "delivered", attempts)
            except _Refused as exc:
                return Delivery(name, "refused", attempts, exc.reason)
            except _Retryable as exc:
                if attempts >= route.max_attempts:
                    return Delivery(name, "dead", attempts, exc.reason)
                pause = min(route.backoff_s * 2 ** (attempts - attempts_made - 1), BACKOFF_MAX_S)
                if exc.retry_after is not None:
                    pause = max(pause, exc.retry_after)
                if deadline is not None and time.monotonic() + pause + MIN_ATTEMPT_S > deadline:
                    # Waiting would outlast the tick (Dagster would cut it off and keep no cursor):
                    # the next tick asks again, which is about what Retry-After asks anyway.
                    return Delivery(name, "deferred", attempts, exc.reason)
                time.sleep(pause)
    finally:
        http.clear()


def _attempt(http: Any, url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """One POST: returns on a 2xx, raises :class:`_Retryable` or :class:`_Refused` otherwise."""
    import urllib3

    try:
        response = http.request(
            "POST",
            url,
            body=body,
            headers=headers,
            redirect=False,
            preload_content=True,
            timeout=urllib3.Timeout(total=timeout),
        )
    except (
        urllib3.exceptions.TimeoutError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.NewConnectionError,
    ) as exc:
        # Only the exception's type: its text names the URL, which is a secret.
        raise _Retryable(type(exc).__name__) from None
    except urllib3.exceptions.HTTPError as exc:  # TLS failures, unusable URLs: asking again will not help
        raise _Refused(type(exc).__name__) from None
    status = response.status
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500:
        raise _Retryable(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
    raise _Refused(f"HTTP {status}")


def _retry_after(value: Any) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds; dates are ignored)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)
