"""A credential's access tokens: a private app's fixed token, or an OAuth app's, refreshed.

:class:`AccessTokens` hands out the token to send and refreshes an OAuth token before it expires
or when a call says it expired; :func:`refresh_access_token` trades the refresh token for a new
access token at ``/oauth/v1/token``, through the client like every other call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from dativo_dagster.api.paging import parse_json_object
from dativo_dagster.config.secrets import register_secrets
from dativo_dagster.errors import AuthError, ConfigError
from dativo_dagster.sources.hubspot.errors import call_api

log = structlog.get_logger("dativo.sources.hubspot")

Exchange = Callable[[Mapping[str, str]], tuple[str, float]]
"""Trades an OAuth app's ``client_id``, ``client_secret`` and ``refresh_token`` for an access
token and its lifetime in seconds."""


class AccessTokens:
    """The access token of one credential: fixed (private app) or refreshed (OAuth), thread-safe.

    OAuth tokens are refreshed before they expire (HubSpot's ``expires_in``, less a margin) and
    when a call says the token expired, once per call.
    """

    MARGIN_S = 60.0

    def __init__(self, credentials: Mapping[str, str], *, label: str, clock: Callable[[], float]) -> None:
        token = credentials.get("access_token") or ""
        oauth = {k: credentials.get(k) or "" for k in ("client_id", "client_secret", "refresh_token")}
        if token and any(oauth.values()):
            raise ConfigError(
                f"{label}: credentials give both access_token and OAuth fields; give one or the other",
                hint="a private app needs access_token; an OAuth app needs client_id, client_secret, refresh_token",
            )
        if not token and not all(oauth.values()):
            missing = [k for k, v in oauth.items() if not v]
            raise ConfigError(
                f"{label}: credentials need access_token (private app) or client_id, client_secret and "
                f"refresh_token (OAuth app); missing {', '.join(missing)}",
            )
        self.oauth = not token
        self._static = token
        self._oauth = oauth
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    @property
    def fixed(self) -> str | None:
        """The private app's token (None for OAuth)."""
        return self._static or None

    def current(self, exchange: Exchange) -> str:
        """A token to send now, refreshing an OAuth token that is missing or about to expire."""
        if not self.oauth:
            return self._static
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._refresh(exchange)
            assert self._token is not None
            return self._token

    def renew(self, stale: str, exchange: Exchange) -> str:
        """A fresh token after ``stale`` was refused as expired (another thread may have renewed it)."""
        with self._lock:
            if self._token == stale or self._token is None:
                self._refresh(exchange)
            assert self._token is not None
            return self._token

    def _refresh(self, exchange: Exchange) -> None:
        token, expires_in = exchange(self._oauth)
        register_secrets([token])  # never logged, never in an error message
        self._token = token
        self._expires_at = self._clock() + max(0.0, expires_in - self.MARGIN_S)
        self.refreshes += 1


def refresh_access_token(client: Any, label: str, oauth: Mapping[str, str]) -> tuple[str, float]:
    """Trade the refresh token for an access token at ``/oauth/v1/token``."""
    where = f"{label}: POST /oauth/v1/token"
    response = call_api(
        lambda: client.oauth.tokens_api.create(
            grant_type="refresh_token",
            client_id=oauth["client_id"],
            client_secret=oauth["client_secret"],
            refresh_token=oauth["refresh_token"],
            _preload_content=False,
        ),
        what="POST /oauth/v1/token",
        label=label,
        token_call=True,
    )
    body = parse_json_object(response.data, where=where)
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token:
        raise AuthError(f"{where}: the answer has no access_token", hint="re-authorize the app")
    try:
        seconds = float(expires_in) if expires_in is not None else 1800.0
    except (TypeError, ValueError):
        seconds = 1800.0
    log.info("hubspot_token_refreshed", component=label, expires_in_s=seconds)
    return token, seconds
