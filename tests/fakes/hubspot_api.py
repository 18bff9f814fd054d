"""Local emulator of HubSpot's CRM v3 read API (objects, search, owners, properties, OAuth).

It speaks HubSpot's wire format so ``hubspot-api-client`` works against it with its host set
to the emulator (``HubSpot(access_token=token, host=url)``):

* private-app tokens (``pat-...``) and OAuth access tokens that expire, renewed through
  ``POST /oauth/v1/token`` with ``grant_type=refresh_token``;
* ``GET /crm/v3/objects/{type}`` (``limit`` ≤ 100, ``after``, ``properties``, ``archived``,
  ``associations``), ``GET /crm/v3/objects/{type}/{id}``;
* ``POST /crm/v3/objects/{type}/search`` with ``filterGroups``, ``sorts``, ``properties``,
  ``limit`` ≤ 200 and offset ``after``, including the 10,000-result cap (``after`` ≥ 10,000
  answers HTTP 400);
* ``GET /crm/v3/owners``, ``GET /crm/v3/properties/{type}``;
* ``POST /crm/v4/associations/{from}/{to}/batch/read`` (search results carry no associations;
  this is how a client reads them for a page of search hits);
* HubSpot's limits: a rolling ten-second window per app with the ``X-HubSpot-RateLimit-*``
  headers, a daily quota, and a separate, tighter limit on search (5/s) whose answers carry
  no rate-limit headers; 429 bodies with ``errorType: RATE_LIMIT`` and ``policyName``.

Seeded records have ``lastmodifieddate`` / ``hs_lastmodifieddate`` spread over time with many
records sharing one timestamp (bulk imports), so a client must split search windows to stay
under the cap, and custom properties next to HubSpot's defaults.

Benchmark use: ``python -m tests.fakes.hubspot_api --port 0 --contacts 30000`` prints the base
URL (the token is ``--token``, default ``pat-na1-dativo-fake``) and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import math
import random
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from tests.fakes.server import (
    DailyQuota,
    Decision,
    Emulator,
    FakeClock,
    Limit,
    Request,
    Response,
    RollingWindow,
    common_arguments,
    run_cli,
)

SEARCH_CAP = 10_000
OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}
_TYPE_BY_ID = {v: k for k, v in OBJECT_TYPE_IDS.items()}
_SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal", "tickets": "ticket"}
MODIFIED_PROPERTY = {
    "contacts": "lastmodifieddate",
    "companies": "hs_lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "tickets": "hs_lastmodifieddate",
}
#: Properties a GET or search returns when the request names none.
DEFAULT_PROPERTIES = {
    "contacts": ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "deals": [
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ],
    "tickets": [
        "content",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
        "hs_pipeline",
        "hs_pipeline_stage",
        "hs_ticket_category",
        "hs_ticket_priority",
        "subject",
    ],
}
_ASSOCIATIONS = {
    ("contacts", "companies"),
    ("deals", "contacts"),
    ("deals", "companies"),
    ("tickets", "contacts"),
}
DEFAULT_LIMITS: dict[str, list[Limit]] = {
    "default": [Limit(rps=190, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING")],
    "search": [Limit(rps=5, kind="rolling", window=1.0, name="SECONDLY")],
}


@dataclass(frozen=True)
class PropertyDef:
    """A CRM property definition (what ``/crm/v3/properties/{type}`` lists).

    Attributes:
        name: Internal name.
        label: Display label.
        type: ``string``, ``number``, ``datetime``, ``date``, ``enumeration`` or ``bool``.
        field_type: UI field type (``text``, ``number``, ``date``, ``select``, ``booleancheckbox``...).
        group: Property group name.
        options: Allowed values of enumerations.
        custom: Whether the account created it (not HubSpot-defined).
    """

    name: str
    label: str
    type: str
    field_type: str
    group: str
    options: tuple[str, ...] = ()
    custom: bool = False


def _props(
    group: str, *specs: tuple[str, str, str, str] | tuple[str, str, str, str, tuple[str, ...]]
) -> list[PropertyDef]:
    out = []
    for spec in specs:
        name, label, type_, field_type = spec[:4]
        options: tuple[str, ...] = spec[4] if len(spec) > 4 else ()
        out.append(PropertyDef(name, label, type_, field_type, group, options, name.startswith("dativo_")))
    return out


_COMMON = [
    ("createdate", "Create Date", "datetime", "date"),
    ("hs_object_id", "Record ID", "number", "number"),
    ("hubspot_owner_id", "Owner", "enumeration", "select"),
]
PROPERTIES: dict[str, list[PropertyDef]] = {
    "contacts": _props(
        "contactinformation",
        *_COMMON,
        ("lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("email", "Email", "string", "text"),
        ("firstname", "First Name", "string", "text"),
        ("lastname", "Last Name", "string", "text"),
        ("phone", "Phone Number", "string", "phonenumber"),
        ("company", "Company Name", "string", "text"),
        (
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer"),
        ),
        ("dativo_tier", "Tier", "enumeration", "select", ("gold", "silver", "bronze")),
        ("dativo_score", "Score", "number", "number"),
        ("dativo_newsletter", "Newsletter", "bool", "booleancheckbox", ("true", "false")),
        ("dativo_signup_source", "Signup source", "string", "text"),
    ),
    "companies": _props(
        "companyinformation",
        *_COMMON,
        ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("name", "Name", "string", "text"),
        ("domain", "Company Domain Name", "string", "text"),
        ("industry", "Industry", "enumeration", "select", ("SOFTWARE", "RETAIL", "BANKING", "LOGISTICS")),
        ("city", "City", "string", "text"),
        ("country", "Country/Region", "string", "text"),
        ("numberofemployees", "Number of Employees", "number", "number"),
        ("dativo_segment", "Segment", "enumeration", "select", ("smb", "mid_market", "enterprise")),
        ("dativo_arr", "ARR", "number", "number"),
    ),
    "deals": _props(
        "dealinformation",
        *_COMMON,
        ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("dealname", "Deal Name", "string", "text"),
        ("amount", "Amount", "number", "number"),
        (
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "closedwon", "closedlost"),
        ),
        ("pipeline", "Pipeline", "enumeration", "select", ("default",)),
        ("closedate", "Close Date", "datetime", "date"),
        ("dativo_source", "Deal source", "enumeration", "select", ("inbound", "outbound", "partner")),
        ("dativo_discount", "Discount", "number", "number"),
    ),
    "tickets": _props(
        "ticketinformation",
        *_COMMON,
        ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date"),
        ("subject", "Ticket name", "string", "text"),
        ("content", "Ticket description", "string", "textarea"),
        ("hs_pipeline", "Pipeline", "enumeration", "select", ("0",)),
        ("hs_pipeline_stage", "Ticket status", "enumeration", "select", ("1", "2", "3", "4")),
        ("hs_ticket_priority", "Priority", "enumeration", "select", ("LOW", "MEDIUM", "HIGH")),
        (
            "hs_ticket_category",
            "Category",
            "enumeration",
            "checkbox",
            ("PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST"),
        ),
        ("dativo_product_area", "Product area", "enumeration", "select", ("ingest", "warehouse", "ui")),
    ),
}
_PROPERTY_INDEX = {t: {p.name: p for p in defs} for t, defs in PROPERTIES.items()}
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Linus", "Radia", "Tim"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Perlman"]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes timestamps (``2024-01-02T03:04:05.678Z``)."""
    stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time_ms(value: str) -> int:
    """A filter value for a date property: epoch milliseconds, an ISO timestamp or a date."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if len(text) == 10:
        text += "T00:00:00Z"
    stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp() * 1000)


class HubSpotError(Exception):
    """An error HubSpot answers with its ``{"status": "error", ...}`` body."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        """Create an error.

        Args:
            status: HTTP status.
            category: HubSpot's ``category`` (``VALIDATION_ERROR``, ``INVALID_AUTHENTICATION``...).
            message: The message.
            **extra: Other body fields (``errors``, ``context``, ``links``...).
        """
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"status": "error", "message": message, "category": category, **extra}


@dataclass
class Portal:
    """A HubSpot account: its records, owners and id counters."""

    portal_id: int
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in OBJECT_TYPE_IDS})
    ids: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in OBJECT_TYPE_IDS})
    owners: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    next_id: dict[str, int] = field(default_factory=dict)

    def add(self, type_: str, rec: dict[str, Any]) -> None:
        """Insert a record (ids only grow, so appending keeps ``ids`` sorted)."""
        self.records[type_][rec["id"]] = rec
        bisect.insort(self.ids[type_], rec["id"])
        self.next_id[type_] = max(self.next_id.get(type_, 0), rec["id"] + 1)
        self.version += 1


@dataclass
class TokenInfo:
    """An access token: the portal and app it belongs to, its expiry and scopes."""

    portal: Portal
    app: str
    kind: str  # "private" or "oauth"
    expires_at: float | None = None
    scopes: frozenset[str] | None = None


@dataclass
class OAuthGrant:
    """A refresh token issued to an OAuth app for a portal."""

    client_id: str
    client_secret: str
    portal: Portal
    ttl: int
    scopes: frozenset[str] | None


class HubSpotEmulator(Emulator):
    """Emulates HubSpot's CRM v3 read endpoints for any number of portals."""

    name = "hubspot"
    list_key = "results"
    admin_methods = frozenset(
        {
            "add_portal",
            "add_private_app",
            "add_oauth_app",
            "create_record",
            "update_record",
            "archive_record",
            "advance_clock",
            "expire_token",
        }
    )

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None,
        daily_limit: int = 1_000_000,
        secondly_limit: int | None = None,
    ) -> None:
        """Create an emulator without portals (add them with :meth:`add_portal`).

        Args:
            clock: Fake clock (token expiry and record timestamps read it).
            latency_ms: Latency added to each API request.
            jitter_ms: Random extra latency.
            limits: Per-app limits for the classes ``default`` (every endpoint but search) and
                ``search``; defaults: 190 per rolling 10 s, and 5 searches per second.
            daily_limit: Requests per app per UTC day (of the fake clock).
            secondly_limit: If set, also enforce this many requests per second on normal
                endpoints (``policyName: SECONDLY``); otherwise the ``-Secondly`` headers only
                report a tenth of the ten-second limit.
        """
        merged: dict[str, Limit | Sequence[Limit] | None] = dict(DEFAULT_LIMITS)
        merged.update(limits or {})
        super().__init__(clock=clock, latency_ms=latency_ms, jitter_ms=jitter_ms, limits=merged)
        self.daily_limit = daily_limit
        self.secondly_limit = secondly_limit
        self.portals: dict[int, Portal] = {}
        self.tokens: dict[str, TokenInfo] = {}
        self.grants: dict[str, OAuthGrant] = {}
        self._daily: dict[str, DailyQuota] = {}
        self._secondly: dict[str, RollingWindow] = {}
        self._search_cache: dict[tuple[Any, ...], list[int]] = {}
        self._token_rng = random.Random(7)

    # -- portals, apps, tokens --

    def add_portal(
        self,
        token: str,
        *,
        portal_id: int | None = None,
        seed: int = 1,
        contacts: int = 300,
        companies: int = 100,
        deals: int = 150,
        tickets: int = 50,
        owners: int = 12,
        history_days: int = 365,
        same_timestamp_share: float = 0.3,
        same_timestamp_groups: int = 5,
        archived_share: float = 0.01,
    ) -> int:
        """Create a portal reachable with private-app token ``token`` and seed its CRM.

        Args:
            token: The private app's access token (``pat-...``).
            portal_id: Hub id (default: derived from the seed).
            seed: Data seed (with the clock start it fixes the data).
            contacts: Number of contacts; likewise ``companies``, ``deals``, ``tickets``, ``owners``.
            companies: Number of companies.
            deals: Number of deals.
            tickets: Number of tickets.
            owners: Number of owners.
            history_days: Records are created over this many days before the clock's now.
            same_timestamp_share: Share of each type's records written by bulk imports, where a
                whole group shares one ``createdate`` and one last-modified timestamp.
            same_timestamp_groups: Number of such import groups per type.
            archived_share: Share of records that are archived.

        Returns:
            The portal id.
        """
        with self.lock:
            pid = portal_id if portal_id is not None else 20_000_000 + seed * 1_001 + len(self.portals)
            portal = Portal(pid)
            self.portals[pid] = portal
            _seed_portal(
                portal,
                random.Random(f"hubspot:{seed}:{pid}"),
                int(self.clock.now() * 1000),
                {"contacts": contacts, "companies": companies, "deals": deals, "tickets": tickets},
                owners,
                history_days,
                same_timestamp_share,
                same_timestamp_groups,
                archived_share,
            )
            self.add_private_app(token, pid)
            return pid

    def add_private_app(self, token: str, portal_id: int, scopes: Sequence[str] | None = None) -> None:
        """Another private app (own token, own limits) on an existing portal."""
        with self.lock:
            self.tokens[token] = TokenInfo(
                self.portals[portal_id],
                f"private-app:{token[-8:]}",
                "private",
                None,
                None if scopes is None else frozenset(scopes),
            )

    def add_oauth_app(
        self,
        client_id: str,
        client_secret: str,
        portal_id: int,
        refresh_token: str,
        *,
        ttl: int = 1800,
        scopes: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Install an OAuth app on a portal: register ``refresh_token`` and issue a first access token.

        Returns:
            The token response (``access_token``, ``refresh_token``, ``expires_in``, ``token_type``).
        """
        with self.lock:
            self.grants[refresh_token] = OAuthGrant(
                client_id, client_secret, self.portals[portal_id], ttl, None if scopes is None else frozenset(scopes)
            )
            return self._issue(refresh_token)

    def _issue(self, refresh_token: str) -> dict[str, Any]:
        grant = self.grants[refresh_token]
        access = "CO" + uuid.UUID(int=self._token_rng.getrandbits(128)).hex + "-oauth"
        self.tokens[access] = TokenInfo(
            grant.portal, f"oauth:{grant.client_id}", "oauth", self.clock.now() + grant.ttl, grant.scopes
        )
        return {"token_type": "bearer", "refresh_token": refresh_token, "access_token": access, "expires_in": grant.ttl}

    def expire_token(self, token: str) -> None:
        """Make an OAuth access token expire now."""
        with self.lock:
            self.tokens[token].expires_at = self.clock.now() - 1

    def advance_clock(self, seconds: float) -> float:
        """Move the fake clock forward (tokens expire by it); returns the new epoch time."""
        return self.clock.advance(seconds)

    def portal_for(self, token: str) -> Portal:
        """The portal a token opens."""
        return self.tokens[token].portal

    # -- mutations --

    def create_record(
        self, token: str, object_type: str, properties: Mapping[str, str], created_ms: int | None = None
    ) -> dict[str, Any]:
        """Create a record (timestamps from the clock unless given); returns it as the API shows it."""
        portal = self.portal_for(token)
        type_ = _canonical_type(object_type)
        with self.lock:
            now = int(self.clock.now() * 1000) if created_ms is None else int(created_ms)
            rec = {
                "id": portal.next_id.get(type_, 1),
                "c": now,
                "u": now,
                "a": False,
                "p": {k: str(v) for k, v in properties.items()},
            }
            portal.add(type_, rec)
            return _render(type_, rec, None, None)

    def update_record(
        self, token: str, object_type: str, record_id: int | str, properties: Mapping[str, str]
    ) -> dict[str, Any]:
        """Change properties; the last-modified timestamp becomes the clock's now."""
        portal = self.portal_for(token)
        type_ = _canonical_type(object_type)
        with self.lock:
            rec = portal.records[type_][int(record_id)]
            rec["p"].update({k: str(v) for k, v in properties.items()})
            rec["u"] = int(self.clock.now() * 1000)
            portal.version += 1
            return _render(type_, rec, None, None)

    def archive_record(self, token: str, object_type: str, record_id: int | str) -> None:
        """Archive (soft-delete) a record."""
        portal = self.portal_for(token)
        type_ = _canonical_type(object_type)
        with self.lock:
            rec = portal.records[type_][int(record_id)]
            rec["a"], rec["u"] = True, int(self.clock.now() * 1000)
            rec["archivedAt"] = rec["u"]
            portal.version += 1

    # -- HTTP --

    def _base_headers(self) -> dict[str, str]:
        return {"X-HubSpot-Correlation-Id": str(uuid.UUID(int=self._rng.getrandbits(128)))}

    def _error(self, err: HubSpotError, headers: Mapping[str, str] | None = None) -> Response:
        base = self._base_headers()
        body = dict(err.body)
        body.setdefault("correlationId", base["X-HubSpot-Correlation-Id"])
        base.update(headers or {})
        return Response(err.status, body, headers=base, content_type="application/json;charset=utf-8")

    def _rate_limited(self, policy: str, group: str, portal_id: int, headers: Mapping[str, str]) -> Response:
        # HubSpot's 429 bodies carry errorType/policyName/groupName and no category.
        out = self._base_headers()
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": out["X-HubSpot-Correlation-Id"],
            "policyName": policy,
            "groupName": f"publicapi:{group}-api-calls-{policy.lower().replace('_', '-')}:{portal_id}",
        }
        out.update(headers)
        return Response(429, body, headers=out, content_type="application/json;charset=utf-8")

    def error_response(self, status: int, req: Request) -> Response:
        """HubSpot's answer for an injected error status."""
        if status == 429:
            info = self.tokens.get(req.bearer() or "")
            portal_id = info.portal.portal_id if info else 0
            return self._rate_limited("TEN_SECONDLY_ROLLING", "private-app", portal_id, {"Retry-After": "1"})
        if status in (502, 503, 504):
            # Cloudflare, in front of HubSpot, answers gateway errors with HTML.
            html = (
                f"<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center>"
                "<hr><center>cloudflare</center></body></html>"
            )
            return Response(status, raw=html.encode(), content_type="text/html")
        categories = {
            400: ("VALIDATION_ERROR", "There was a problem with the request."),
            401: ("INVALID_AUTHENTICATION", _AUTH_MESSAGE),
            403: ("MISSING_SCOPES", "This app hasn't been granted all required scopes to make this call."),
            404: ("OBJECT_NOT_FOUND", "resource not found"),
            409: ("CONFLICT", "Conflict"),
        }
        category, message = categories.get(status, ("INTERNAL_ERROR", "internal error"))
        return self._error(HubSpotError(status, category, message))

    def handle(self, req: Request) -> Response:
        """Route one API request."""
        try:
            if req.path.rstrip("/") == "/oauth/v1/token":
                return self._oauth_token(req)
            if req.path.startswith("/oauth/v1/access-tokens/"):
                return self._token_info(req.path.rsplit("/", 1)[1])
            return self._crm(req)
        except HubSpotError as err:
            return self._error(err)

    def _authenticate(self, req: Request) -> TokenInfo:
        token = req.bearer()
        info = self.tokens.get(token or "")
        if info is None:
            raise HubSpotError(401, "INVALID_AUTHENTICATION", _AUTH_MESSAGE)
        if info.expires_at is not None and info.expires_at <= self.clock.now():
            minutes = int((self.clock.now() - info.expires_at) // 60)
            raise HubSpotError(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
                context={"expired": [str(minutes)]},
            )
        return info

    def _limit(self, info: TokenInfo, search: bool) -> tuple[Decision | None, dict[str, str]]:
        """Apply the app's limits; returns the refusing decision (or None) and headers to send."""
        app = f"{info.portal.portal_id}:{info.app}"
        daily = self._daily.setdefault(app, DailyQuota(self.daily_limit, "DAILY", self.clock.now))
        if search:
            decisions = self.limiter.check(app, "search", extra=[daily])
            return next((d for d in decisions if not d.allowed), None), {}  # search answers carry no rate-limit headers
        configured = self.limiter.limits().get("default") or []
        cap = int(configured[0].rps) if configured else 0
        secondly = self._secondly.get(app)
        if secondly is None:
            per_second = self.secondly_limit or (max(1, math.ceil(cap / 10)) if cap else 10**9)
            secondly = self._secondly[app] = RollingWindow(per_second, 1.0, "SECONDLY")
        extra: list[Any] = [daily, secondly] if self.secondly_limit else [daily]
        decisions = self.limiter.check(app, "default", extra=extra)
        refused = next((d for d in decisions if not d.allowed), None)
        now = time.monotonic()
        if refused is None and not self.secondly_limit:
            secondly.commit(now)  # only counted, for the -Secondly-Remaining header
        headers: dict[str, str] = {}
        if configured:
            ten = decisions[0]
            sec = secondly.peek(now)
            headers.update(
                {
                    "X-HubSpot-RateLimit-Interval-Milliseconds": str(ten.window_ms),
                    "X-HubSpot-RateLimit-Max": str(ten.limit),
                    "X-HubSpot-RateLimit-Remaining": str(ten.remaining),
                    "X-HubSpot-RateLimit-Secondly": str(secondly.limit),
                    "X-HubSpot-RateLimit-Secondly-Remaining": str(sec.remaining),
                }
            )
        if info.kind == "private":
            # HubSpot reports the daily quota to private apps only, not to OAuth apps.
            headers["X-HubSpot-RateLimit-Daily"] = str(daily.limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(daily.peek(now).remaining)
        return refused, headers

    def _crm(self, req: Request) -> Response:
        parts = [p for p in req.path.split("/") if p]
        v4_associations = len(parts) == 7 and parts[1:3] == ["v4", "associations"] and parts[5:] == ["batch", "read"]
        if len(parts) < 3 or parts[0] != "crm" or (parts[1] != "v3" and not v4_associations):
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {req.method} {req.path}")
        info = self._authenticate(req)
        search = parts[2] == "objects" and len(parts) == 5 and parts[4] == "search" and req.method == "POST"
        refused, headers = self._limit(info, search)
        if refused is not None:
            body_policy = refused.policy or "TEN_SECONDLY_ROLLING"
            headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after)))
            headers["X-Fake-Policy"] = body_policy
            return self._rate_limited(body_policy, f"{info.kind}-app", info.portal.portal_id, headers)
        try:
            with self.lock:
                body = self._route(req, parts, info)
        except HubSpotError as err:
            return self._error(err, headers)
        out = self._base_headers()
        out.update(headers)
        return Response(200, body, headers=out, content_type="application/json;charset=utf-8")

    def _route(self, req: Request, parts: list[str], info: TokenInfo) -> dict[str, Any]:
        section = parts[2]
        if parts[1] == "v4" and req.method == "POST":
            type_ = _canonical_type(parts[3])
            self._require_scope(info, f"crm.objects.{type_}.read")
            return self._association_batch_read(req, info.portal, type_, _canonical_type(parts[4], strict=False))
        if section == "owners":
            self._require_scope(info, "crm.objects.owners.read")
            if req.method != "GET":
                raise HubSpotError(405, "VALIDATION_ERROR", f"{req.method} is not supported")
            if len(parts) == 3:
                return self._owners(req, info.portal)
            owner = next((o for o in info.portal.owners if o["id"] == parts[3]), None)
            if owner is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Owner {parts[3]} not found")
            return owner
        if section == "properties" and len(parts) in (4, 5) and req.method == "GET":
            type_ = _canonical_type(parts[3])
            self._require_scope(info, f"crm.objects.{type_}.read", f"crm.schemas.{type_}.read")
            results = [_property_json(p, info.portal) for p in PROPERTIES[type_]]
            if len(parts) == 5:
                found = next((p for p in results if p["name"] == parts[4]), None)
                if found is None:
                    raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property {parts[4]} for {type_}")
                return found
            archived = _bool(req, "archived")
            return {"results": [] if archived else results}
        if section == "objects" and len(parts) >= 4:
            type_ = _canonical_type(parts[3])
            self._require_scope(info, f"crm.objects.{type_}.read")
            if len(parts) == 4 and req.method == "GET":
                return self._list(req, info.portal, type_)
            if len(parts) == 5 and parts[4] == "search" and req.method == "POST":
                return self._search(req, info.portal, type_)
            if len(parts) == 5 and req.method == "GET":
                return self._read(req, info.portal, type_, parts[4])
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {req.method} {req.path}")

    @staticmethod
    def _require_scope(info: TokenInfo, *any_of: str) -> None:
        if info.scopes is None or any(s in info.scopes for s in any_of):
            return
        raise HubSpotError(
            403,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: "
            "https://developers.hubspot.com/scopes.",
            errors=[
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": list(any_of)},
                }
            ],
            links={"scopes": "https://developers.hubspot.com/scopes"},
        )

    # -- objects --

    def _list(self, req: Request, portal: Portal, type_: str) -> dict[str, Any]:
        limit = _int(_query_value(req, "limit", "10"), "limit")
        if limit < 1 or limit > 100:
            raise HubSpotError(400, "VALIDATION_ERROR", f"limit must be between 1 and 100, got {limit}")
        after_raw = _query_value(req, "after")
        after = _int(after_raw, "after") if after_raw not in (None, "") else 0
        archived = _bool(req, "archived")
        props = _query_list(req, "properties")
        history = _query_list(req, "propertiesWithHistory")
        assoc = [_canonical_type(a, strict=False) for a in _query_list(req, "associations")]
        ids = portal.ids[type_]
        records = portal.records[type_]
        start = bisect.bisect_left(ids, after)
        page: list[dict[str, Any]] = []
        next_id: int | None = None
        for i in range(start, len(ids)):
            rec = records[ids[i]]
            if rec["a"] != archived:
                continue
            if len(page) == limit:
                next_id = rec["id"]
                break
            page.append(rec)
        body: dict[str, Any] = {"results": [_render(type_, r, props, portal, assoc, history) for r in page]}
        if next_id is not None:
            query = [(k, v) for k, v in req.query if k != "after"] + [("after", str(next_id))]
            body["paging"] = {"next": {"after": str(next_id), "link": f"{req.base_url}{req.path}?{urlencode(query)}"}}
        return body

    def _read(self, req: Request, portal: Portal, type_: str, record_id: str) -> dict[str, Any]:
        rec = portal.records[type_].get(int(record_id)) if record_id.isdigit() else None
        if rec is None or rec["a"] != _bool(req, "archived"):
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")
        assoc = [_canonical_type(a, strict=False) for a in _query_list(req, "associations")]
        return _render(
            type_, rec, _query_list(req, "properties"), portal, assoc, _query_list(req, "propertiesWithHistory")
        )

    def _search(self, req: Request, portal: Portal, type_: str) -> dict[str, Any]:
        try:
            body = req.json() or {}
        except ValueError:
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1") from None
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        limit = _int(body.get("limit", 10), "limit")
        if limit < 1 or limit > 200:
            raise HubSpotError(400, "VALIDATION_ERROR", f"limit must be between 1 and 200, got {limit}")
        after = _int(body.get("after") or 0, "after")
        if after < 0:
            raise HubSpotError(400, "VALIDATION_ERROR", "after must be non-negative")
        if after >= SEARCH_CAP:
            # The search index answers at most 10,000 results per query; paging past them fails.
            raise HubSpotError(400, "VALIDATION_ERROR", "There was a problem with the request.")
        groups = body.get("filterGroups") or []
        if len(groups) > 5:
            raise HubSpotError(400, "VALIDATION_ERROR", "Maximum of 5 filterGroups allowed")
        if sum(len(g.get("filters") or []) for g in groups) > 25 or any(
            len(g.get("filters") or []) > 10 for g in groups
        ):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Maximum of 10 filters per group and 25 filters in total allowed"
            )
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            raise HubSpotError(400, "VALIDATION_ERROR", "Only one sort is supported")
        key = (portal.portal_id, portal.version, type_, json.dumps([groups, sorts, body.get("query")], sort_keys=True))
        matched = self._search_cache.get(key)
        if matched is None:
            matched = _run_search(portal, type_, groups, sorts, body.get("query"))
            if len(self._search_cache) > 256:
                self._search_cache.clear()
            self._search_cache[key] = matched
        total = len(matched)
        end = min(after + limit, total, SEARCH_CAP)
        page_ids = matched[after:end] if after < total else []
        records = portal.records[type_]
        props = [str(p) for p in body.get("properties") or []]
        result: dict[str, Any] = {
            "total": total,
            "results": [_render(type_, records[i], props, None, search=True) for i in page_ids],
        }
        if end < total:
            # Like HubSpot, a next cursor is offered even when it points at the cap.
            result["paging"] = {"next": {"after": str(end)}}
        return result

    def _association_batch_read(self, req: Request, portal: Portal, type_: str, other: str) -> dict[str, Any]:
        """Associations v4 batch read: ``{"inputs": [{"id": ...}]}`` → one result per record that has
        associations of type ``other`` (records without any are left out)."""
        try:
            body = req.json() or {}
        except ValueError:
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON on line 1") from None
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not all(isinstance(i, dict) and "id" in i for i in inputs):
            raise HubSpotError(400, "VALIDATION_ERROR", "inputs must be a list of objects with an id")
        results = []
        for item in inputs:
            raw = str(item["id"])
            rec = portal.records[type_].get(int(raw)) if raw.isdigit() else None
            linked = sorted(set((rec.get("assoc") or {}).get(other) or [])) if rec and not rec["a"] else []
            if linked:
                # Unlabeled HubSpot-defined associations carry a null label.
                kinds = [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": None}]
                results.append(
                    {"from": {"id": raw}, "to": [{"toObjectId": i, "associationTypes": kinds} for i in linked]}
                )
        stamp = iso_ms(int(self.clock.now() * 1000))
        return {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}

    # -- owners --

    def _owners(self, req: Request, portal: Portal) -> dict[str, Any]:
        limit = _int(_query_value(req, "limit", "100"), "limit")
        if limit < 1 or limit > 500:
            raise HubSpotError(400, "VALIDATION_ERROR", f"limit must be between 1 and 500, got {limit}")
        after_raw = _query_value(req, "after")
        after = _int(after_raw, "after") if after_raw else 0
        archived = _bool(req, "archived")
        email = _query_value(req, "email")
        owners = [
            o
            for o in portal.owners
            if o["archived"] == archived and int(o["id"]) >= after and (email is None or o["email"] == email)
        ]
        body: dict[str, Any] = {"results": owners[:limit]}
        if len(owners) > limit:
            nxt = owners[limit]["id"]
            query = [(k, v) for k, v in req.query if k != "after"] + [("after", nxt)]
            body["paging"] = {"next": {"after": nxt, "link": f"{req.base_url}{req.path}?{urlencode(query)}"}}
        return body

    # -- OAuth --

    def _oauth_token(self, req: Request) -> Response:
        if req.method != "POST":
            raise HubSpotError(405, "VALIDATION_ERROR", "Use POST")
        form = dict(req.form())
        headers = self._base_headers()
        corr = headers["X-HubSpot-Correlation-Id"]

        def bad(status: str, message: str) -> Response:
            return Response(400, {"status": status, "message": message, "correlationId": corr}, headers=headers)

        grant_type = form.get("grant_type")
        if grant_type != "refresh_token":
            return bad("UNSUPPORTED_GRANT_TYPE", f"unsupported grant type: {grant_type}")
        with self.lock:
            grant = self.grants.get(form.get("refresh_token", ""))
            if grant is None:
                return bad("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
            if form.get("client_id") != grant.client_id:
                return bad("BAD_CLIENT_ID", "missing or invalid client_id")
            if form.get("client_secret") != grant.client_secret:
                return bad("BAD_CLIENT_SECRET", "missing or invalid client_secret")
            return Response(200, self._issue(form["refresh_token"]), headers=headers)

    def _token_info(self, token: str) -> Response:
        info = self.tokens.get(token)
        if info is None or info.kind != "oauth" or (info.expires_at or 0) <= self.clock.now():
            return self._error(HubSpotError(404, "OBJECT_NOT_FOUND", "Token not found"))
        body = {
            "token": token,
            "hub_id": info.portal.portal_id,
            "app_id": zlib.crc32(info.app.encode()) % 10_000_000,
            "expires_in": int((info.expires_at or 0) - self.clock.now()),
            "scopes": sorted(info.scopes or []),
            "token_type": "access",
            "user_id": 1,
        }
        return Response(200, body, headers=self._base_headers())


_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at "
    "https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


# --------------------------------------------------------------------------------------------
# helpers: request parsing, rendering, search


def _canonical_type(name: str, strict: bool = True) -> str:
    if name in OBJECT_TYPE_IDS:
        return name
    if name in _TYPE_BY_ID:
        return _TYPE_BY_ID[name]
    plural = {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets"}.get(name)
    if plural:
        return plural
    if strict:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}")
    return name


def _query_value(req: Request, name: str, default: str | None = None) -> str | None:
    values = [v for k, v in req.query if k == name]
    return values[-1] if values else default


def _query_list(req: Request, name: str) -> list[str]:
    # The official client repeats the parameter; people also send comma-separated lists.
    out: list[str] = []
    for k, v in req.query:
        if k == name:
            out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _bool(req: Request, name: str) -> bool:
    return (_query_value(req, name) or "false").lower() == "true"


def _int(value: Any, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid value for {name}: {value!r} is not an integer") from None


def _value(type_: str, rec: Mapping[str, Any], prop: str) -> str | None:
    if prop == "hs_object_id":
        return str(rec["id"])
    if prop == "createdate":
        return iso_ms(rec["c"])
    if prop == MODIFIED_PROPERTY[type_]:
        return iso_ms(rec["u"])
    value = rec["p"].get(prop)
    return None if value is None else str(value)


def _render(
    type_: str,
    rec: Mapping[str, Any],
    props: Sequence[str] | None,
    portal: Portal | None,
    assoc: Sequence[str] = (),
    history: Sequence[str] = (),
    search: bool = False,
) -> dict[str, Any]:
    if props:
        names = list(dict.fromkeys([*props, "hs_object_id", "createdate", MODIFIED_PROPERTY[type_]]))
        # Requested properties the type does not have are left out, as HubSpot does.
        names = [n for n in names if n in _PROPERTY_INDEX[type_]]
    else:
        names = DEFAULT_PROPERTIES[type_]
    out: dict[str, Any] = {
        "id": str(rec["id"]),
        "properties": {name: _value(type_, rec, name) for name in names},
        "createdAt": iso_ms(rec["c"]),
        "updatedAt": iso_ms(rec["u"]),
        "archived": bool(rec["a"]),
    }
    if rec["a"] and rec.get("archivedAt"):
        out["archivedAt"] = iso_ms(rec["archivedAt"])
    if history:
        out["propertiesWithHistory"] = {
            name: [
                {
                    "value": _value(type_, rec, name) or "",
                    "timestamp": iso_ms(rec["u"]),
                    "sourceType": "API",
                    "sourceId": "dativo-fake",
                }
            ]
            for name in history
            if name in _PROPERTY_INDEX[type_] and _value(type_, rec, name) is not None
        }
    if assoc and portal is not None:
        links = rec.get("assoc") or {}
        associations = {}
        for other in assoc:
            ids = links.get(other) or []
            if ids:
                label = f"{_SINGULAR.get(type_, type_)}_to_{_SINGULAR.get(other, other)}"
                associations[other] = {"results": [{"id": str(i), "type": label} for i in ids]}
        if associations:
            out["associations"] = associations
    return out


def _property_json(p: PropertyDef, portal: Portal) -> dict[str, Any]:
    options = p.options
    if p.name == "hubspot_owner_id":
        options = tuple(o["id"] for o in portal.owners)
    out: dict[str, Any] = {
        "name": p.name,
        "label": p.label,
        "type": p.type,
        "fieldType": p.field_type,
        "description": "" if not p.custom else f"{p.label} (custom)",
        "groupName": p.group,
        "options": [
            {"label": o.replace("_", " ").title(), "value": o, "displayOrder": i, "hidden": False}
            for i, o in enumerate(options)
        ],
        "displayOrder": -1 if not p.custom else 1,
        "calculated": False,
        "externalOptions": p.name == "hubspot_owner_id",
        "hasUniqueValue": p.name == "hs_object_id",
        "hidden": False,
        "modificationMetadata": {
            "archivable": p.custom,
            "readOnlyDefinition": not p.custom,
            "readOnlyValue": p.name in ("hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"),
        },
        "formField": p.custom,
        "createdAt": "2020-01-01T00:00:00.000Z",
        "updatedAt": "2020-01-01T00:00:00.000Z",
        "archived": False,
        "dataSensitivity": "non_sensitive",
    }
    if not p.custom:
        out["hubspotDefined"] = True
    return out


def _filter_value(type_: str, rec: Mapping[str, Any], prop: str) -> Any:
    if prop == "hs_object_id":
        return rec["id"]
    if prop == "createdate":
        return rec["c"]
    if prop == MODIFIED_PROPERTY[type_]:
        return rec["u"]
    return rec["p"].get(prop)


def _coerce(pdef: PropertyDef, value: Any) -> Any:
    if value is None:
        return None
    try:
        if pdef.type in ("datetime", "date"):
            return parse_time_ms(value) if not isinstance(value, int) else value
        if pdef.type == "number":
            return float(value)
    except ValueError:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid value {value!r} for property {pdef.name}") from None
    return str(value).lower()


def _compile_filter(type_: str, flt: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    prop = flt.get("propertyName")
    op = flt.get("operator")
    pdef = _PROPERTY_INDEX[type_].get(str(prop))
    if pdef is None:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Property '{prop}' does not exist on {type_}")
    value, high, values = flt.get("value"), flt.get("highValue"), flt.get("values") or []

    def get(rec: Mapping[str, Any]) -> Any:
        return _coerce(pdef, _filter_value(type_, rec, pdef.name))

    if op == "HAS_PROPERTY":
        return lambda r: get(r) not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return lambda r: get(r) in (None, "")
    if op in ("IN", "NOT_IN"):
        wanted = {_coerce(pdef, v) for v in values}
        return (lambda r: get(r) in wanted) if op == "IN" else (lambda r: get(r) not in wanted)
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(value or "").lower().strip("*")
        contains = lambda r: token in str(get(r) or "")  # noqa: E731
        return contains if op == "CONTAINS_TOKEN" else (lambda r: not contains(r))
    if value is None or (op == "BETWEEN" and high is None):
        raise HubSpotError(400, "VALIDATION_ERROR", f"Operator {op} on {prop} needs a value")
    target = _coerce(pdef, value)
    if op == "BETWEEN":
        upper = _coerce(pdef, high)
        return lambda r: (v := get(r)) is not None and target <= v <= upper
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "EQ": lambda a, b: a == b,
        "NEQ": lambda a, b: a != b,
        "GT": lambda a, b: a > b,
        "GTE": lambda a, b: a >= b,
        "LT": lambda a, b: a < b,
        "LTE": lambda a, b: a <= b,
    }
    if op not in compare:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unsupported operator {op!r}")
    fn = compare[op]
    if op == "NEQ":
        return lambda r: (v := get(r)) is None or fn(v, target)
    return lambda r: (v := get(r)) is not None and fn(v, target)


def _run_search(
    portal: Portal, type_: str, groups: Sequence[Mapping[str, Any]], sorts: Sequence[Any], query: str | None
) -> list[int]:
    compiled = [[_compile_filter(type_, f) for f in (g.get("filters") or [])] for g in groups]
    records = portal.records[type_]
    text = (query or "").lower().strip()
    searchable = ("email", "firstname", "lastname", "name", "domain", "dealname", "subject", "phone")
    hits = []
    for rid in portal.ids[type_]:
        rec = records[rid]
        if rec["a"]:
            continue
        if compiled and not any(all(f(rec) for f in group) for group in compiled):
            continue
        if text and not any(text in str(rec["p"].get(p, "")).lower() for p in searchable):
            continue
        hits.append(rec)
    if sorts:
        sort = sorts[0]
        if isinstance(sort, str):
            prop, descending = sort.lstrip("-"), sort.startswith("-")
        else:
            prop, descending = (
                str(sort.get("propertyName")),
                str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING",
            )
        pdef = _PROPERTY_INDEX[type_].get(prop)
        if pdef is None:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Property '{prop}' does not exist on {type_}")

        # hits are in id order and sorts are stable (also reversed ones), so ties stay in id order
        present = [r for r in hits if _filter_value(type_, r, prop) is not None]
        missing = [r for r in hits if _filter_value(type_, r, prop) is None]
        present.sort(key=lambda r: _coerce(pdef, _filter_value(type_, r, prop)), reverse=descending)
        hits = present + missing
    return [r["id"] for r in hits]


# --------------------------------------------------------------------------------------------
# seed


def _seed_portal(
    portal: Portal,
    rng: random.Random,
    now_ms: int,
    counts: Mapping[str, int],
    owners: int,
    history_days: int,
    share: float,
    groups: int,
    archived_share: float,
) -> None:
    start = now_ms - history_days * 86_400_000
    for i in range(owners):
        first, last = _FIRST[i % len(_FIRST)], _LAST[i % len(_LAST)]
        stamp = iso_ms(start + i * 3_600_000)
        portal.owners.append(
            {
                "id": str(100 + i * 7),
                "email": f"{first.lower()}.{last.lower()}@example.com",
                "type": "PERSON",
                "firstName": first,
                "lastName": last,
                "userId": 9000 + i,
                "userIdIncludingInactive": 9000 + i,
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": i == owners - 1 and owners > 3,
                "teams": [{"id": "1", "name": "Sales", "primary": True}] if i % 2 == 0 else [],
            }
        )
    owner_ids = [o["id"] for o in portal.owners if not o["archived"]]
    base_ids = {"contacts": 101, "companies": 5_000_001, "deals": 9_000_001, "tickets": 30_000_001}
    for type_, n in counts.items():
        # A few bulk imports write many records with one createdate and one last-modified time.
        import_times = sorted(rng.randint(start, now_ms - 3_600_000) for _ in range(groups))
        next_id = base_ids[type_]
        creates = sorted(rng.randint(start, now_ms) for _ in range(n))
        for i in range(n):
            rid = next_id
            next_id += rng.choice((1, 1, 2, 3))
            if groups and rng.random() < share:
                created = updated = import_times[rng.randrange(groups)]
            else:
                created = creates[i]
                roll = rng.random()
                updated = (
                    created
                    if roll < 0.3
                    else min(now_ms, created + rng.randint(1, 120) * 86_400_000 // rng.randint(1, 20))
                )
            props = _seed_props(type_, rng, rid, owner_ids)
            rec = {"id": rid, "c": created, "u": updated, "a": rng.random() < archived_share, "p": props}
            if rec["a"]:
                rec["archivedAt"] = updated
            portal.records[type_][rid] = rec
        portal.ids[type_] = sorted(portal.records[type_])
        portal.next_id[type_] = next_id
    for left, right in sorted(_ASSOCIATIONS):
        left_ids, right_ids = portal.ids[left], portal.ids[right]
        if not left_ids or not right_ids:
            continue
        for lid in left_ids:
            if rng.random() < 0.7:
                rid = rng.choice(right_ids)
                portal.records[left][lid].setdefault("assoc", {}).setdefault(right, []).append(rid)
                portal.records[right][rid].setdefault("assoc", {}).setdefault(left, []).append(lid)
    portal.version += 1


def _seed_props(type_: str, rng: random.Random, rid: int, owners: Sequence[str]) -> dict[str, str]:
    owner = {"hubspot_owner_id": rng.choice(owners)} if owners and rng.random() < 0.8 else {}
    if type_ == "contacts":
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        props = {
            "email": f"{first.lower()}.{last.lower()}.{rid}@example.com",
            "firstname": first,
            "lastname": last,
            "lifecyclestage": rng.choice(("subscriber", "lead", "opportunity", "customer")),
            "dativo_score": str(rng.randint(0, 100)),
            "dativo_newsletter": rng.choice(("true", "false")),
        }
        if rng.random() < 0.6:
            props["dativo_tier"] = rng.choice(("gold", "silver", "bronze"))
        if rng.random() < 0.5:
            props["phone"] = f"+49 30 {rid:07d}"
        if rng.random() < 0.4:
            props["dativo_signup_source"] = rng.choice(("webinar", "ads", "referral"))
    elif type_ == "companies":
        props = {
            "name": f"{rng.choice(_LAST)} {rng.choice(('GmbH', 'Inc', 'Ltd', 'SA'))} {rid}",
            "domain": f"company{rid}.example.com",
            "industry": rng.choice(("SOFTWARE", "RETAIL", "BANKING", "LOGISTICS")),
            "city": rng.choice(("Berlin", "Paris", "Austin", "Lisbon")),
            "country": rng.choice(("Germany", "France", "United States", "Portugal")),
            "numberofemployees": str(rng.randint(1, 5000)),
            "dativo_segment": rng.choice(("smb", "mid_market", "enterprise")),
        }
        if rng.random() < 0.7:
            props["dativo_arr"] = str(rng.randint(1, 900) * 1000)
    elif type_ == "deals":
        props = {
            "dealname": f"Deal {rid}",
            "amount": str(rng.randint(1, 500) * 100),
            "dealstage": rng.choice(
                ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "closedwon", "closedlost")
            ),
            "pipeline": "default",
            "dativo_source": rng.choice(("inbound", "outbound", "partner")),
        }
        if rng.random() < 0.5:
            props["closedate"] = iso_ms(1_700_000_000_000 + rng.randint(0, 400) * 86_400_000)
        if rng.random() < 0.3:
            props["dativo_discount"] = str(rng.choice((5, 10, 15)))
    else:
        props = {
            "subject": f"Ticket {rid}",
            "content": rng.choice(("Cannot log in", "Invoice question", "Feature idea", "Sync is slow")),
            "hs_pipeline": "0",
            "hs_pipeline_stage": rng.choice(("1", "2", "3", "4")),
            "hs_ticket_priority": rng.choice(("LOW", "MEDIUM", "HIGH")),
            "dativo_product_area": rng.choice(("ingest", "warehouse", "ui")),
        }
        if rng.random() < 0.5:
            props["hs_ticket_category"] = rng.choice(("PRODUCT_ISSUE", "BILLING_ISSUE", "FEATURE_REQUEST"))
    props.update(owner)
    return props


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator as a process (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Local HubSpot CRM API emulator")
    common_arguments(parser)
    parser.add_argument("--token", default="pat-na1-dativo-fake", help="private-app token of the portal")
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--companies", type=int, default=300)
    parser.add_argument("--deals", type=int, default=500)
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--ten-secondly", type=int, default=190, help="requests per rolling 10 s per app")
    parser.add_argument("--search-rps", type=float, default=5, help="search requests per second per app")
    parser.add_argument("--daily", type=int, default=1_000_000, help="requests per day per app")
    args = parser.parse_args(argv)
    limits = {
        "default": [Limit(rps=args.ten_secondly, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING")],
        "search": [Limit(rps=args.search_rps, kind="rolling", window=1.0, name="SECONDLY")],
    }
    clock = FakeClock(args.now) if args.now is not None else None
    emu = HubSpotEmulator(
        clock=clock, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, limits=limits, daily_limit=args.daily
    )
    emu.add_portal(
        args.token,
        seed=args.seed,
        contacts=args.contacts,
        companies=args.companies,
        deals=args.deals,
        tickets=args.tickets,
    )
    run_cli(emu, args.host, args.port)


if __name__ == "__main__":
    main()
