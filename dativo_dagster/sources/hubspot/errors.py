"""What HubSpot's error answers mean, and the coded dativo error for each.

401 and 403 answers are read at the transport (:func:`hubspot_sender`): an expired OAuth token
becomes a refresh (:class:`TokenExpired`), a missing scope is named in the AUTH001 message
(:class:`MissingScopesError`). Answers the generated client raises on (its ``ApiException``) are
classified by :func:`call_api`; one dativo does not recognise surfaces as the bug it is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dativo_dagster.api.transport import HttpResponse, Sender
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError


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


class TokenExpired(Exception):
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
            raise TokenExpired(f"{name}: {label}: the access token expired")
        detail = redact_text(f"{info.category}: {info.message}" if info.category else info.message)
        if response.status == 403:
            scopes = f"; it needs the scope(s) {', '.join(info.scopes)}" if info.scopes else ""
            raise MissingScopesError(
                f"{name}: {label}: HTTP 403 {detail}{scopes}",
                hint="grant the scope(s) to the private app or OAuth app, then re-run",
            )
        raise AuthError(f"{name}: {label}: HTTP 401 {detail}", hint="check the access token or the OAuth credentials")

    return send


@functools.lru_cache(maxsize=1)
def api_exception_types() -> tuple[type[BaseException], ...]:
    """The ``ApiException`` classes of the generated packages dativo calls."""
    import hubspot.crm.associations.v4.exceptions as associations
    import hubspot.crm.objects.exceptions as objects
    import hubspot.crm.owners.exceptions as owners
    import hubspot.crm.properties.exceptions as properties
    import hubspot.oauth.exceptions as oauth

    return tuple(module.ApiException for module in (objects, properties, owners, associations, oauth))


def call_api(fn: Callable[[], Any], *, what: str, label: str, token_call: bool = False) -> Any:
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
