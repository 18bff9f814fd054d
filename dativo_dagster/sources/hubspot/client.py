"""The official ``hubspot-api-client`` with its HTTP on dativo's transport.

The client builds every request (paths, query strings, bodies); :class:`TransportPool` stands in
for the urllib3 pool inside each generated ``ApiClient`` (see :mod:`dativo_dagster.compat.hubspot`),
so dativo's toolkit does the rate limiting, the retries, the breaker, the classification and the
counting. The client's own urllib3 retries are off (:func:`api_factory`): they would sleep
through a ``Retry-After`` out of sight of the limiter and the counters.
"""

from __future__ import annotations

import functools
import http
from collections.abc import Mapping
from importlib.metadata import version as package_version
from typing import Any
from urllib.parse import urlencode, urlsplit

from dativo_dagster.api.transport import ApiTransport
from dativo_dagster.errors import AuthError
from dativo_dagster.sources.hubspot.errors import TokenExpired
from dativo_dagster.sources.hubspot.tokens import AccessTokens, Exchange, refresh_access_token


class TransportPool:
    """Stands in for the generated client's urllib3 pool: every request goes through ``transport``.

    It adds the current access token (refreshing an expired OAuth token once per call), picks the
    token bucket (``search`` for the search endpoints) and returns a ``urllib3.HTTPResponse`` the
    generated client reads as its own.
    """

    def __init__(self, transport: ApiTransport, tokens: AccessTokens) -> None:
        self.transport = transport
        self.tokens = tokens
        self.exchange: Exchange | None = None

    def request(
        self,
        method: str,
        url: str,
        fields: Any = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        encode_multipart: bool = True,
        preload_content: bool = True,
        timeout: Any = None,
        **_: Any,
    ) -> Any:
        """Send one request the way ``urllib3.PoolManager.request`` would, through the transport."""
        import urllib3

        method = method.upper()
        sent_headers = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        if fields:
            encoded = urlencode(list(fields.items()) if isinstance(fields, Mapping) else list(fields))
            if method in ("GET", "HEAD", "DELETE", "OPTIONS"):
                url = url + ("&" if "?" in url else "?") + encoded
            else:
                body = encoded  # the OAuth token exchange: a form body
        data = body.encode("utf-8") if isinstance(body, str) else body
        path = urlsplit(url).path
        bucket = "search" if method == "POST" and path.rstrip("/").endswith("/search") else "default"
        token_call = "/oauth/" in path  # the token exchange authenticates with the refresh token itself
        token = None
        for attempt in (1, 2):
            if not token_call:
                token = self.tokens.current(self._exchange) if attempt == 1 else token
                sent_headers["Authorization"] = f"Bearer {token}"
            try:
                answer = self.transport.request(
                    method, url, headers=sent_headers, body=data, bucket=bucket, private=token_call
                )
            except TokenExpired as exc:
                if not self.tokens.oauth or attempt == 2 or token is None:
                    raise AuthError(
                        f"{exc}; "
                        + ("it was just refreshed" if attempt == 2 else "a private-app token does not expire"),
                        hint="re-authorize the app (OAuth) or rotate the private-app token",
                    ) from None
                token = self.tokens.renew(token, self._exchange)
                continue
            return urllib3.HTTPResponse(
                body=answer.body,
                headers=dict(answer.headers),
                status=answer.status,
                reason=_reason_phrase(answer.status),
                preload_content=True,
                decode_content=False,
                request_url=url,
            )
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _exchange(self, oauth: Mapping[str, str]) -> tuple[str, float]:
        assert self.exchange is not None, "the OAuth exchange is set when the client is built"
        return self.exchange(oauth)


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def api_factory(
    api_client_package: Any, api_name: str, config: Mapping[str, Any], *, pool: TransportPool, host: str
) -> Any:
    """The ``api_factory`` of ``hubspot.HubSpot``: a generated API whose HTTP goes through ``pool``."""
    from dativo_dagster.compat.hubspot import set_pool_manager

    configuration = api_client_package.Configuration(host=host)
    configuration.access_token = config.get("access_token")
    # The generated pool would retry, and sleep through Retry-After, on its own; the transport
    # replaces it below, and no retry may happen outside the transport's count.
    configuration.retries = False
    api_client = api_client_package.ApiClient(configuration=configuration)
    api_client.user_agent = f"dativo hubspot-api-client/{package_version('hubspot-api-client')}"
    set_pool_manager(api_client, pool)
    return getattr(api_client_package, api_name)(api_client=api_client)


def hubspot_client(transport: ApiTransport, tokens: AccessTokens, *, host: str) -> Any:
    """A ``hubspot.HubSpot`` client for one object read, its HTTP going through ``transport``."""
    import hubspot

    pool = TransportPool(transport, tokens)
    client = hubspot.HubSpot(
        access_token=tokens.fixed, api_factory=functools.partial(api_factory, pool=pool, host=host)
    )
    pool.exchange = functools.partial(refresh_access_token, client, transport.name)
    return client
