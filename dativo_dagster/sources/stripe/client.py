"""The official ``stripe`` client on dativo's transport, and the requests a read makes through it.

:func:`transport_http_client` gives the ``stripe.HTTPClient`` that sends every request through an
:class:`~dativo_dagster.api.transport.ApiTransport` (dativo's token bucket per credential, retries
honouring ``Retry-After``, circuit breaker, classification and counters). :class:`StripeApi`
wraps one object read's ``StripeClient``: raw list pages, paging with ``starting_after``,
retrieving one object, each failure mapped to a dativo error.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dativo_dagster.api.paging import Page, items_at, paginate, starting_after
from dativo_dagster.errors import DativoError, PaginationError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.stripe.errors import classify_stripe_error
from dativo_dagster.sources.stripe.resources import StripeResource

if TYPE_CHECKING:
    from dativo_dagster.api.transport import ApiTransport


class _Headers(Mapping[str, str]):
    """Response headers with case-insensitive lookups, as the stripe client expects."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items = {k.lower(): v for k, v in headers.items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items


@functools.cache
def transport_http_client() -> builtins.type:
    """``stripe.HTTPClient`` subclass sending every request through an :class:`ApiTransport`.

    Built on first use, so that loading definitions never imports the client library.
    """
    import stripe

    class TransportHttpClient(stripe.HTTPClient):
        """The stripe client's HTTP layer: dativo's limits, retries, breaker and counters."""

        name = "dativo"

        def __init__(self, transport: ApiTransport) -> None:
            super().__init__()
            self.transport = transport

        def request(
            self,
            method: str,
            url: str,
            headers: Mapping[str, str] | None,
            post_data: Any = None,
            *,
            _usage: list[str] | None = None,
        ) -> tuple[str, int, Mapping[str, str]]:
            """Send one request; AUTH001 and RETRY001 come from the transport, other answers go back."""
            body = post_data.encode() if isinstance(post_data, str) else post_data
            response = self.transport.request(method.upper(), url, headers=dict(headers or {}), body=body)
            return response.body.decode("utf-8", "replace"), response.status, _Headers(response.headers)

        def request_stream(
            self,
            method: str,
            url: str,
            headers: Mapping[str, str] | None,
            post_data: Any = None,
            *,
            _usage: list[str] | None = None,
        ) -> tuple[Any, int, Mapping[str, str]]:
            """Not used: dativo only reads JSON lists."""
            raise NotImplementedError("streaming responses are not used by the Stripe source")

        def close(self) -> None:
            """Nothing to release: the connection pool belongs to the run."""

    return TransportHttpClient


@dataclass(frozen=True)
class StripeApi:
    """One object read's ``StripeClient``, with dativo's paging and error mapping around its requests.

    Requests go through the client's ``raw_request``: its authentication, versioning, parameter
    encoding and typed errors, without building a model object per item, which costs about a
    millisecond per charge and would hold one reader below Stripe's rate limit.

    Attributes:
        client: The ``stripe.StripeClient``, its HTTP on the read's transport.
        api_version: The ``Stripe-Version`` sent (None: the client library's pinned version).
        max_pages: Pages one list may take (None: no limit); more is PAGE001.
    """

    client: Any
    api_version: str | None
    max_pages: int | None
    transport: ApiTransport | None = None

    @classmethod
    def connect(
        cls, api_key: str, *, base_url: str, transport: ApiTransport, api_version: str | None, max_pages: int | None
    ) -> StripeApi:
        """A ``StripeClient`` for one object read, its HTTP on ``transport``."""
        import stripe

        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url},
            http_client=transport_http_client()(transport),
            max_network_retries=0,  # the transport retries, honouring Retry-After, within the bucket
            stripe_version=api_version,
        )
        return cls(client, api_version, max_pages, transport)

    def _classified(self, exc: Exception, *, where: str, path: str) -> DativoError:
        """The dativo error for a client exception, carrying the request that failed (a 404, a 400)
        when the transport saw one: the client raises it after the transport returned the answer."""
        error = classify_stripe_error(exc, where=where, path=path, api_version=self.api_version)
        problem = self.transport.last_problem if self.transport is not None else None
        if problem is not None and "request" not in error.context:
            error.context["request"] = problem.summary()
        return error

    def call(self, fn: Callable[[], Any], *, where: str, path: str) -> Any:
        """Run one client call; a ``StripeError`` becomes the dativo error for it."""
        import stripe

        try:
            return fn()
        except DativoError:
            raise
        except stripe.StripeError as exc:
            raise self._classified(exc, where=where, path=path) from None

    def list_page(self, resource: StripeResource, params: dict[str, Any], *, where: str) -> dict[str, Any]:
        """One list page's JSON body (PAGE001 when it is not a list envelope)."""
        path = f"/v1/{resource.name}"
        response = self.call(lambda: self.client.raw_request("get", path, **params), where=where, path=path)
        body = getattr(response, "data", None)
        if not isinstance(body, dict):
            raise PaginationError(f"{where}: the response is not a JSON object")
        return body

    def pages(
        self, label: str, resource: StripeResource, params: dict[str, Any], stats: SourceStats
    ) -> Iterator[list[dict[str, Any]]]:
        """Every page of one list, newest first, following ``starting_after``."""
        where = f"{label}: GET /v1/{resource.name}"

        def fetch(token: str | None, number: int) -> Page[str]:
            page_where = f"{where} page {number}"
            body = self.list_page(
                resource, {**params, **({"starting_after": token} if token else {})}, where=page_where
            )
            items_at(body, "data", where=page_where, required=("id", "created"))
            return starting_after(body, where=page_where)

        yield from paginate(fetch, where=where, max_pages=self.max_pages, on_page=lambda _n, _p: stats.add(pages=1))

    def retrieve(
        self, label: str, resource: StripeResource, expand: Sequence[str], object_id: str
    ) -> dict[str, Any] | None:
        """The object as it is now, with the list's expansions ``expand`` (events carry it unexpanded).

        None when it is gone (404); ``{"deleted": true, ...}`` when Stripe keeps a deletion stub.
        """
        import stripe

        expand = [path.removeprefix("data.") for path in expand]
        path = f"/v1/{resource.name}/{quote(object_id, safe='')}"
        where = f"{label}: GET {path}"
        try:
            response = self.client.raw_request("get", path, **({"expand": expand} if expand else {}))
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                return None  # gone since the event: its last announced version stands
            raise self._classified(exc, where=where, path=path) from None
        except stripe.StripeError as exc:
            raise self._classified(exc, where=where, path=path) from None
        body = getattr(response, "data", None)
        if not isinstance(body, dict) or not (body.get("deleted") or "created" in body):
            return None
        return body
