"""The HubSpot emulator, driven through the official ``hubspot-api-client`` wherever it can be."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import requests

from tests.fakes.hubspot_api import SEARCH_CAP, HubSpotEmulator, iso_ms
from tests.fakes.server import FakeClock, FakeServer, Limit

hubspot = pytest.importorskip("hubspot")
from hubspot.crm.contacts import PublicObjectSearchRequest  # noqa: E402
from hubspot.crm.contacts.exceptions import ApiException  # noqa: E402

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
OTHER = "pat-eu1-99999999-8888-7777-6666-555555555555"
# The read-only fixture lifts the limits (paging 20,000 contacts is 200 requests, over 190 per
# 10 s); the limit tests use fresh emulators with HubSpot's defaults or tighter ones.
NO_LIMITS = {
    "default": Limit(rps=100_000, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING"),
    "search": Limit(rps=100_000, kind="rolling", window=1.0, name="SECONDLY"),
}
RATE_HEADERS = [
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
    "X-HubSpot-RateLimit-Secondly",
    "X-HubSpot-RateLimit-Secondly-Remaining",
]


def client(url: str, token: str = TOKEN) -> Any:
    """An official client pointed at the emulator.

    Retries are off: by default the client's urllib3 pool sleeps for ``Retry-After`` and retries
    a 429 by itself (up to three times), which would hide the answers these tests look at.
    """
    return hubspot.HubSpot(access_token=token, host=url, retry=False)


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[HubSpotEmulator, FakeServer]]:
    """Read-only: a portal with 20,000 contacts, limits lifted."""
    emu = HubSpotEmulator(clock=FakeClock(NOW, frozen=True), limits=NO_LIMITS)
    emu.add_portal(TOKEN, seed=1, contacts=20_000, companies=200, deals=300, tickets=100)
    emu.add_portal(OTHER, seed=2, contacts=40, companies=10, deals=10, tickets=10)
    with emu.serve() as server:
        yield emu, server


def small(**options: Any) -> tuple[HubSpotEmulator, FakeServer]:
    emu = HubSpotEmulator(clock=FakeClock(NOW, frozen=True), **options)
    emu.add_portal(TOKEN, seed=3, contacts=60, companies=20, deals=20, tickets=10)
    emu.add_portal(OTHER, seed=4, contacts=10, companies=5, deals=5, tickets=5)
    return emu, emu.serve().start()


@pytest.fixture
def fresh(request: pytest.FixtureRequest) -> Iterator[tuple[HubSpotEmulator, FakeServer]]:
    """A small emulator; ``@pytest.mark.parametrize("fresh", [{...options}], indirect=True)`` configures it."""
    emu, server = small(**getattr(request, "param", {}))
    try:
        yield emu, server
    finally:
        server.stop()


def truth(emu: HubSpotEmulator, type_: str, pred: Callable[[Mapping[str, Any]], bool]) -> list[int]:
    portal = emu.portal_for(TOKEN)
    return [
        rid for rid in portal.ids[type_] if not portal.records[type_][rid]["a"] and pred(portal.records[type_][rid])
    ]


def search_ids(url: str, object_type: str, body: dict[str, Any]) -> tuple[int, list[int]]:
    """Page a search to the end with raw HTTP (object types beyond contacts)."""
    ids: list[int] = []
    after: str | None = None
    while True:
        payload = dict(body, limit=200, **({"after": after} if after else {}))
        resp = requests.post(
            f"{url}/crm/v3/objects/{object_type}/search",
            json=payload,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        data = resp.json()
        ids += [int(r["id"]) for r in data["results"]]
        after = data.get("paging", {}).get("next", {}).get("after")
        if not after:
            return data["total"], ids


def test_pages_twenty_thousand_contacts(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = big
    api = client(server.url).crm.contacts.basic_api
    ids: list[int] = []
    after = None
    tiers: Counter[str | None] = Counter()
    while True:
        page = api.get_page(limit=100, after=after, properties=["email", "dativo_tier"], archived=False)
        for rec in page.results:
            ids.append(int(rec.id))
            tiers[rec.properties["dativo_tier"]] += 1
            assert set(rec.properties) == {"email", "dativo_tier", "hs_object_id", "createdate", "lastmodifieddate"}
            assert rec.properties["hs_object_id"] == rec.id and rec.archived is False
        if page.paging is None:
            break
        after = page.paging.next.after
        assert page.paging.next.link.startswith(server.url + "/crm/v3/objects/contacts?")
    expected = truth(emu, "contacts", lambda r: True)
    assert ids == expected and len(ids) > 19_000
    assert tiers[None] > 0 and tiers["gold"] > 0  # unset custom property values come back as null


def test_list_parameters(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    _, server = big
    crm = client(server.url).crm
    default = crm.deals.basic_api.get_page(limit=5)
    assert set(default.results[0].properties) == {
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    }
    linked = crm.contacts.basic_api.get_page(limit=100, associations=["companies"])
    with_company = [r for r in linked.results if r.associations]
    assert with_company
    first = with_company[0].associations["companies"].results[0]
    assert first.type == "contact_to_company"
    company = crm.companies.basic_api.get_by_id(first.id, associations=["contacts"])
    assert with_company[0].id in {a.id for a in company.associations["contacts"].results}
    archived = crm.contacts.basic_api.get_page(limit=100, archived=True)
    assert archived.results and all(r.archived and r.archived_at for r in archived.results)
    with pytest.raises(ApiException) as too_many:
        crm.contacts.basic_api.get_page(limit=101)
    assert too_many.value.status == 400 and json.loads(too_many.value.body)["category"] == "VALIDATION_ERROR"
    with pytest.raises(hubspot.crm.deals.exceptions.ApiException) as missing:
        crm.deals.basic_api.get_by_id("1")
    assert missing.value.status == 404
    unknown_type = requests.get(f"{server.url}/crm/v3/objects/widgets", headers={"Authorization": f"Bearer {TOKEN}"})
    assert unknown_type.status_code == 400 and "Unable to infer object type" in unknown_type.json()["message"]


@pytest.mark.parametrize(
    ("prop", "op", "pick"),
    [
        ("hs_lastmodifieddate", "GT", "median"),
        ("hs_lastmodifieddate", "GTE", "median"),
        ("hs_lastmodifieddate", "LT", "median"),
        ("hs_lastmodifieddate", "LTE", "median"),
        ("hs_lastmodifieddate", "EQ", "median"),
        ("hs_lastmodifieddate", "NEQ", "median"),
        ("createdate", "BETWEEN", "quartiles"),
        ("createdate", "GTE", "iso"),
        ("hs_object_id", "LT", "median"),
        ("hs_object_id", "EQ", "median"),
        ("dativo_arr", "HAS_PROPERTY", None),
        ("dativo_arr", "NOT_HAS_PROPERTY", None),
    ],
)
def test_search_operators_match_the_data(
    big: tuple[HubSpotEmulator, FakeServer], prop: str, op: str, pick: str | None
) -> None:
    emu, server = big
    portal = emu.portal_for(TOKEN)

    def value(rec: Mapping[str, Any]) -> Any:
        return {"hs_lastmodifieddate": rec["u"], "createdate": rec["c"], "hs_object_id": rec["id"]}.get(
            prop, rec["p"].get(prop)
        )

    values = sorted(v for r in portal.records["companies"].values() if not r["a"] and (v := value(r)) is not None)
    low, mid, high = values[len(values) // 4], values[len(values) // 2], values[3 * len(values) // 4]
    flt: dict[str, Any] = {"propertyName": prop, "operator": op}
    checks: dict[str, Callable[[Any], bool]] = {
        "GT": lambda v: v > mid,
        "GTE": lambda v: v >= mid,
        "LT": lambda v: v < mid,
        "LTE": lambda v: v <= mid,
        "EQ": lambda v: v == mid,
        "NEQ": lambda v: v != mid,
        "BETWEEN": lambda v: low <= v <= high,
        "HAS_PROPERTY": lambda v: v is not None,
        "NOT_HAS_PROPERTY": lambda v: v is None,
    }
    if pick == "median":
        flt["value"] = str(mid)
    elif pick == "quartiles":
        flt["value"], flt["highValue"] = str(low), iso_ms(high)
    elif pick == "iso":
        flt["value"] = iso_ms(mid)
    total, ids = search_ids(server.url, "companies", {"filterGroups": [{"filters": [flt]}]})
    expected = truth(emu, "companies", lambda r: checks[op](value(r)))
    assert ids == expected and total == len(expected) and 0 < total <= len(portal.ids["companies"])


def test_search_groups_sorts_and_properties(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = big
    api = client(server.url).crm.contacts.search_api
    result = api.do_search(
        public_object_search_request=PublicObjectSearchRequest(
            filter_groups=[
                {"filters": [{"propertyName": "dativo_tier", "operator": "EQ", "value": "gold"}]},
                {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ["101", "102"]}]},
            ],
            sorts=["-lastmodifieddate"],
            properties=["dativo_tier"],
            limit=200,
        )
    )
    expected = truth(emu, "contacts", lambda r: r["p"].get("dativo_tier") == "gold" or r["id"] in (101, 102))
    assert result.total == len(expected)
    stamps = [(r.properties["lastmodifieddate"], -int(r.id)) for r in result.results]
    assert stamps == sorted(stamps, reverse=True)  # newest first, ties in id order
    assert set(result.results[0].properties) == {"dativo_tier", "hs_object_id", "createdate", "lastmodifieddate"}
    _, ascending = search_ids(
        server.url, "companies", {"sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]}
    )
    records = emu.portal_for(TOKEN).records["companies"]
    assert ascending == sorted(truth(emu, "companies", lambda r: True), key=lambda i: (records[i]["u"], i))
    with pytest.raises(ApiException) as bad:
        api.do_search(
            public_object_search_request=PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "no_such_property", "operator": "EQ", "value": "1"}]}]
            )
        )
    assert bad.value.status == 400


def test_search_stops_at_ten_thousand_and_windows_get_round_it(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = big
    api = client(server.url).crm.contacts.search_api
    everything = {"filter_groups": [{"filters": [{"propertyName": "createdate", "operator": "GTE", "value": "0"}]}]}
    after = None
    seen = 0
    while True:
        try:
            page = api.do_search(
                public_object_search_request=PublicObjectSearchRequest(limit=200, after=after, **everything)
            )
        except ApiException as exc:
            failure = exc
            break
        seen += len(page.results)
        after = page.paging.next.after
    assert seen == SEARCH_CAP and after == "10000" and page.total > SEARCH_CAP
    assert failure.status == 400 and json.loads(failure.body)["category"] == "VALIDATION_ERROR"
    # Bulk imports share one timestamp, so windows must be split by timestamp and then by id.
    portal = emu.portal_for(TOKEN)
    by_stamp = Counter(r["u"] for r in portal.records["contacts"].values() if not r["a"])
    stamp, size = by_stamp.most_common(1)[0]
    assert size > 1_000
    same = api.do_search(
        public_object_search_request=PublicObjectSearchRequest(
            limit=1,
            filter_groups=[{"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ", "value": str(stamp)}]}],
        )
    )
    assert same.total == size


def test_properties_and_owners(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = big
    crm = client(server.url).crm
    props = {p.name: p for p in crm.properties.core_api.get_all(object_type="contacts").results}
    assert props["lastmodifieddate"].type == "datetime" and props["lastmodifieddate"].hubspot_defined is True
    assert props["dativo_tier"].hubspot_defined is None and [o.value for o in props["dativo_tier"].options] == [
        "gold",
        "silver",
        "bronze",
    ]
    assert {"email", "createdate", "hs_object_id", "dativo_score"} <= set(props)
    owners, after = [], None
    while True:
        page = crm.owners.owners_api.get_page(limit=5, after=after)
        owners += page.results
        if page.paging is None:
            break
        after = page.paging.next.after
    active = [o for o in emu.portal_for(TOKEN).owners if not o["archived"]]
    assert [o.id for o in owners] == [o["id"] for o in active] and owners[0].email.endswith("@example.com")


def test_tokens_are_isolated_portals(big: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = big
    other_portal = emu.portal_for(OTHER)
    assert other_portal is not emu.portal_for(TOKEN)
    other = client(server.url, OTHER).crm.contacts.basic_api.get_page(limit=100, properties=["email"])
    expected = [i for i in other_portal.ids["contacts"] if not other_portal.records["contacts"][i]["a"]]
    assert [int(r.id) for r in other.results] == expected
    assert [r.properties["email"] for r in other.results] == [
        other_portal.records["contacts"][i]["p"]["email"] for i in expected
    ]
    with pytest.raises(ApiException) as denied:
        client(server.url, "pat-na1-unknown").crm.contacts.basic_api.get_page()
    assert denied.value.status == 401 and json.loads(denied.value.body)["category"] == "INVALID_AUTHENTICATION"


def test_oauth_token_expires_and_refreshes(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = fresh
    portal_id = emu.portal_for(TOKEN).portal_id
    first = emu.add_oauth_app("client-1", "secret-1", portal_id, "refresh-1", ttl=1800)
    assert first["expires_in"] == 1800
    api = client(server.url, first["access_token"])
    page = api.crm.contacts.basic_api.get_page_with_http_info(limit=2)
    assert len(page[0].results) == 2
    assert "X-HubSpot-RateLimit-Daily" not in page[2]  # OAuth apps are not told their daily quota
    emu.advance_clock(1801)
    with pytest.raises(ApiException) as expired:
        api.crm.contacts.basic_api.get_page(limit=2)
    assert expired.value.status == 401 and json.loads(expired.value.body)["category"] == "EXPIRED_AUTHENTICATION"
    tokens = client(server.url, "").oauth.tokens_api
    renewed = tokens.create(
        grant_type="refresh_token", client_id="client-1", client_secret="secret-1", refresh_token="refresh-1"
    )
    assert renewed.access_token != first["access_token"] and renewed.expires_in == 1800
    assert client(server.url, renewed.access_token).crm.contacts.basic_api.get_page(limit=1).results
    with pytest.raises(hubspot.oauth.ApiException) as bad:
        tokens.create(grant_type="refresh_token", client_id="client-1", client_secret="secret-1", refresh_token="nope")
    assert bad.value.status == 400 and json.loads(bad.value.body)["status"] == "BAD_REFRESH_TOKEN"


@pytest.mark.parametrize(
    "fresh",
    [{"limits": {"default": Limit(rps=10, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING")}}],
    indirect=True,
)
def test_burst_limit_headers_and_429(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = fresh
    api = client(server.url).crm.companies.basic_api
    remaining = []
    for _ in range(10):
        _, status, headers = api.get_page_with_http_info(limit=1)
        assert status == 200 and all(name in headers for name in RATE_HEADERS)
        remaining.append(int(headers["X-HubSpot-RateLimit-Remaining"]))
    assert remaining == list(range(9, -1, -1))
    assert (
        headers["X-HubSpot-RateLimit-Max"] == "10" and headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    )
    with pytest.raises(hubspot.crm.companies.exceptions.ApiException) as info:
        api.get_page(limit=1)
    body = json.loads(info.value.body)
    assert (
        info.value.status == 429 and body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    )
    assert 1 <= int(info.value.headers["Retry-After"]) <= 10
    assert client(server.url, OTHER).crm.companies.basic_api.get_page(limit=1).results  # another app, another window
    assert emu.stats.throttled()[0]["policy"] == "TEN_SECONDLY_ROLLING"


def test_search_has_its_own_tighter_limit_without_headers(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    _, server = fresh
    api = client(server.url).crm.contacts.search_api
    request = PublicObjectSearchRequest(limit=1)
    for _ in range(5):
        _, status, headers = api.do_search_with_http_info(public_object_search_request=request)
        assert status == 200 and not any(h.lower().startswith("x-hubspot-ratelimit") for h in headers)
    with pytest.raises(ApiException) as info:
        api.do_search(public_object_search_request=request)
    assert info.value.status == 429 and json.loads(info.value.body)["policyName"] == "SECONDLY"
    assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in info.value.headers)
    assert client(server.url).crm.contacts.basic_api.get_page(limit=1).results  # normal endpoints unaffected


@pytest.mark.parametrize("fresh", [{"daily_limit": 3}], indirect=True)
def test_daily_limit(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    _, server = fresh
    api = client(server.url).crm.deals.basic_api
    left = [int(api.get_page_with_http_info(limit=1)[2]["X-HubSpot-RateLimit-Daily-Remaining"]) for _ in range(3)]
    assert left == [2, 1, 0]
    with pytest.raises(hubspot.crm.deals.exceptions.ApiException) as info:
        api.get_page(limit=1)
    assert json.loads(info.value.body)["policyName"] == "DAILY"


def test_missing_scope_is_403(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = fresh
    emu.add_private_app("pat-na1-contacts-only", emu.portal_for(TOKEN).portal_id, scopes=["crm.objects.contacts.read"])
    scoped = client(server.url, "pat-na1-contacts-only").crm
    assert scoped.contacts.basic_api.get_page(limit=1).results
    with pytest.raises(hubspot.crm.deals.exceptions.ApiException) as info:
        scoped.deals.basic_api.get_page(limit=1)
    assert info.value.status == 403 and json.loads(info.value.body)["category"] == "MISSING_SCOPES"


def test_changes_show_up_for_an_incremental_load(fresh: tuple[HubSpotEmulator, FakeServer]) -> None:
    emu, server = fresh
    portal = emu.portal_for(TOKEN)
    cursor = max(r["u"] for r in portal.records["contacts"].values())
    emu.advance_clock(120)
    target = portal.ids["contacts"][0]
    emu.update_record(TOKEN, "contacts", target, {"dativo_tier": "gold"})
    created = emu.create_record(TOKEN, "contacts", {"email": "new@example.com"})
    gone = portal.ids["contacts"][1]
    emu.archive_record(TOKEN, "contacts", gone)
    window = {"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": str(cursor)}]}
    changed = client(server.url).crm.contacts.search_api.do_search(
        public_object_search_request=PublicObjectSearchRequest(filter_groups=[window], properties=["dativo_tier"])
    )
    assert sorted(int(r.id) for r in changed.results) == sorted([target, int(created["id"])])
    assert next(r for r in changed.results if int(r.id) == target).properties["dativo_tier"] == "gold"
    assert changed.results[0].updated_at.timestamp() == NOW + 120
    archived = client(server.url).crm.contacts.basic_api.get_page(limit=100, archived=True).results
    assert gone in {int(r.id) for r in archived}
