"""Sending an alert to its routes: retried with backoff, a dead route logged and never fatal.

Imported only when an alert is sent (a sensor tick), never at definitions load: it pulls in
urllib3 and tenacity.

A webhook delivery is retried on connection errors, timeouts, 429 and 5xx (exponential backoff
from the route's ``backoff_s``, at least what ``Retry-After`` asks up to 30 s), never on another
answer: a 400 or 404 will not change by asking again. When the attempts are spent the route is
logged as dead, without its URL (a Slack webhook URL is a secret), and the other routes still get
the alert. Nothing here raises for a failed delivery.
"""

from __future__ import annotations

import json
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

Outcome = Literal["delivered", "refused", "dead", "unusable"]


@dataclass(frozen=True)
class Delivery:
    """What happened to one alert on one route."""

    route: str
    outcome: Outcome
    attempts: int
    reason: str = ""


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
) -> list[Delivery]:
    """Send ``alert`` to each named route (in parallel: one slow route never delays another).

    Args:
        alert: The notification.
        routes: runner.yaml's ``alerts.routes``.
        names: The routes this alert goes to.
        resolver: Resolves the routes' ``${VAR}`` references (default: the process environment).

    Returns:
        One :class:`Delivery` per route, in ``names`` order.
    """
    resolver = resolver or SecretResolver()
    unique = list(dict.fromkeys(names))
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=min(len(unique), 8), thread_name_prefix="dativo-alert") as pool:
        return list(pool.map(lambda name: deliver_to_route(alert, name, routes[name], resolver), unique))


def deliver_to_route(alert: Alert, name: str, route: AlertRoute, resolver: SecretResolver) -> Delivery:
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
    delivery = _post_with_retries(name, route, url, headers, json.dumps(body).encode())
    if delivery.outcome == "delivered":
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


def _post_with_retries(name: str, route: AlertRoute, url: str, headers: dict[str, str], body: bytes) -> Delivery:
    import tenacity
    import urllib3

    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=route.timeout_s), num_pools=1)
    request_headers = {"Content-Type": "application/json", "User-Agent": "dativo-alerts", **headers}
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        try:
            response = http.request(
                "POST", url, body=body, headers=request_headers, redirect=False, preload_content=True
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

    def wait(state: tenacity.RetryCallState) -> float:
        backoff = min(route.backoff_s * 2 ** (state.attempt_number - 1), BACKOFF_MAX_S)
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return max(backoff, error.retry_after)
        return backoff

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(route.max_attempts),
        wait=wait,
        retry=tenacity.retry_if_exception_type(_Retryable),
        reraise=True,
    )
    try:
        retrying(attempt)
    except _Retryable as exc:
        return Delivery(name, "dead", attempts, exc.reason)
    except _Refused as exc:
        return Delivery(name, "refused", attempts, exc.reason)
    finally:
        http.clear()
    return Delivery(name, "delivered", attempts)


def _retry_after(value: Any) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds; dates are ignored)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)
