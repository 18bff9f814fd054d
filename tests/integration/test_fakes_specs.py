"""Every kind of answer the emulators give validates against the vendors' own OpenAPI specs.

Also checks the requests the official clients send, and that the checker itself catches
problems (a checker that accepts everything would prove nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import specs
from tests.fakes.hubspot_api import HubSpotEmulator
from tests.fakes.server import FakeClock, Limit, Request, Response
from tests.fakes.stripe_api import RESOURCES, StripeEmulator

NOW = 1_767_225_600
SK = "sk_test_dativo_specs"
PAT = "pat-na1-dativo-specs"


@pytest.fixture(scope="module")
def stripe_emu() -> StripeEmulator:
    specs.require_vendor_specs("stripe")
    emu = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emu.add_account(SK, customers=300, charges=600)
    emu.add_restricted_key("rk_test_dativo_specs", SK, ["customers"])
    return emu


@pytest.fixture(scope="module")
def hubspot_emu() -> HubSpotEmulator:
    specs.require_vendor_specs("hubspot")
    emu = HubSpotEmulator(clock=FakeClock(NOW, frozen=True), limits={"search": Limit(rps=10_000, kind="rolling")})
    pid = emu.add_portal(PAT, contacts=300, companies=50, deals=50, tickets=30)
    emu.add_private_app("pat-na1-dativo-scoped", pid, scopes=["crm.objects.contacts.read"])
    return emu


def call(emu: Any, method: str, target: str, key: str | None, body: Any = None) -> Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    raw = json.dumps(body).encode() if body is not None else b""
    return emu.handle(Request(method, target, headers, raw, "http://127.0.0.1:1"))


def stripe_cases(emu: StripeEmulator) -> Iterator[tuple[str, str, str | None]]:
    acct = emu.account(SK)
    for name in RESOURCES:
        yield f"/v1/{name}?limit=100", "list", SK
        first = acct.tables[name].keys[-1][1]
        yield f"/v1/{name}/{first}", "retrieve", SK
    yield (
        "/v1/charges?limit=20&expand[]=data.customer&expand[]=data.invoice&expand[]=data.payment_intent",
        "expanded",
        SK,
    )
    yield "/v1/charges?limit=20&expand[]=data.balance_transaction&expand[]=data.refunds", "expanded", SK
    yield "/v1/invoices?limit=20&expand[]=data.subscription.customer&expand[]=data.customer", "expanded", SK
    yield "/v1/customers?limit=20&expand[]=data.subscriptions", "expanded", SK
    yield "/v1/prices?limit=20&expand[]=data.product", "expanded", SK
    yield "/v1/refunds?limit=20&expand[]=data.charge&expand[]=data.balance_transaction", "expanded", SK
    yield "/v1/balance_transactions?limit=20&expand[]=data.source", "expanded", SK
    yield "/v1/charges?limit=101", "400 limit", SK
    yield "/v1/charges?starting_after=ch_nope", "400 cursor", SK
    yield "/v1/charges?colour=red", "400 unknown parameter", SK
    yield "/v1/charges/ch_nope", "404 object", SK
    yield "/v1/charges", "401 unknown key", "sk_test_nobody"
    yield "/v1/charges", "401 no key", None
    yield "/v1/charges", "403 restricted", "rk_test_dativo_specs"


def test_every_stripe_answer_matches_the_spec(stripe_emu: StripeEmulator) -> None:
    problems = []
    for target, kind, key in stripe_cases(stripe_emu):
        resp = call(stripe_emu, "GET", target, key)
        assert (resp.status == 200) == (kind in ("list", "retrieve", "expanded")), (target, resp.payload)
        found = specs.validate_response("stripe", "GET", target.split("?")[0], resp.status, resp.payload)
        problems += [f"{kind}: {p}" for p in found]
    assert problems == []


def test_stripe_rate_limit_and_injected_errors_match_the_spec() -> None:
    specs.require_vendor_specs("stripe")
    emu = StripeEmulator(limits={"default": Limit(rps=1, burst=1)})
    emu.add_account(SK, customers=5, charges=5)
    assert call(emu, "GET", "/v1/customers", SK).status == 200
    limited = call(emu, "GET", "/v1/customers", SK)
    assert limited.status == 429 and limited.headers["Retry-After"]
    assert specs.validate_response("stripe", "GET", "/v1/customers", 429, limited.payload) == []
    for status in (400, 401, 403, 404, 500):
        resp = emu.error_response(status, Request("GET", "/v1/customers", {"Authorization": f"Bearer {SK}"}, b""))
        assert specs.validate_response("stripe", "GET", "/v1/customers", status, resp.payload) == [], status


def hubspot_cases(emu: HubSpotEmulator) -> Iterator[tuple[str, str, Any, str, int]]:
    portal = emu.portal_for(PAT)
    for type_ in ("contacts", "companies", "deals", "tickets", "0-3"):
        name = {"0-3": "deals"}.get(type_, type_)
        first = next(i for i in portal.ids[name] if not portal.records[name][i]["a"])
        yield "GET", f"/crm/v3/objects/{type_}?limit=100", None, PAT, 200
        yield "GET", f"/crm/v3/objects/{type_}?limit=50&properties=createdate&properties=dativo_tier", None, PAT, 200
        associations = "&".join(f"associations={t}" for t in ("contacts", "companies", "deals", "tickets"))
        yield "GET", f"/crm/v3/objects/{type_}?limit=100&{associations}", None, PAT, 200
        yield "GET", f"/crm/v3/objects/{type_}?archived=true", None, PAT, 200
        yield "GET", f"/crm/v3/objects/{type_}/{first}?propertiesWithHistory=createdate&{associations}", None, PAT, 200
        search = {
            "filterGroups": [{"filters": [{"propertyName": "createdate", "operator": "GTE", "value": "0"}]}],
            "sorts": [{"propertyName": "createdate", "direction": "DESCENDING"}],
            "properties": ["hs_object_id", "dativo_tier"],
            "limit": 200,
        }
        yield "POST", f"/crm/v3/objects/{type_}/search", search, PAT, 200
        yield "GET", f"/crm/v3/properties/{type_}", None, PAT, 200
    yield "GET", "/crm/v3/properties/contacts/email", None, PAT, 200
    yield "GET", "/crm/v3/objects/contacts?limit=500", None, PAT, 400
    yield "POST", "/crm/v3/objects/contacts/search", {"after": "10000"}, PAT, 400
    yield "GET", "/crm/v3/objects/widgets", None, PAT, 400
    yield "GET", "/crm/v3/objects/contacts/1", None, PAT, 404
    yield "GET", "/crm/v3/objects/contacts", None, "pat-na1-nobody", 401
    yield "GET", "/crm/v3/objects/deals", None, "pat-na1-dativo-scoped", 403


def test_every_hubspot_answer_matches_the_spec(hubspot_emu: HubSpotEmulator) -> None:
    problems = []
    for method, target, body, key, status in hubspot_cases(hubspot_emu):
        resp = call(hubspot_emu, method, target, key, body)
        assert resp.status == status, (target, resp.payload)
        found = specs.validate_response("hubspot", method, target.split("?")[0], resp.status, resp.payload)
        problems += [f"{method} {target}: {p}" for p in found]
    assert problems == []


def test_hubspot_429s_match_the_spec() -> None:
    specs.require_vendor_specs("hubspot")
    tight = {
        "default": Limit(rps=1, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING"),
        "search": Limit(rps=1, kind="rolling", window=1.0, name="SECONDLY"),
    }
    emu = HubSpotEmulator(limits=tight)
    emu.add_portal(PAT, contacts=5, companies=1, deals=1, tickets=1)
    for method, path in (("GET", "/crm/v3/objects/contacts"), ("POST", "/crm/v3/objects/contacts/search")):
        call(emu, method, path, PAT, {} if method == "POST" else None)
        limited = call(emu, method, path, PAT, {} if method == "POST" else None)
        assert limited.status == 429
        assert specs.validate_response("hubspot", method, path, 429, limited.payload) == []
    injected = emu.error_response(
        429, Request("GET", "/crm/v3/objects/contacts", {"Authorization": f"Bearer {PAT}"}, b"")
    )
    assert specs.validate_response("hubspot", "GET", "/crm/v3/objects/contacts", 429, injected.payload) == []


def test_the_official_clients_requests_match_the_specs(
    stripe_emu: StripeEmulator, hubspot_emu: HubSpotEmulator
) -> None:
    stripe = pytest.importorskip("stripe")
    hubspot = pytest.importorskip("hubspot")
    from hubspot.crm.contacts import PublicObjectSearchRequest

    with stripe_emu.serve() as server:
        client = stripe.StripeClient(SK, base_addresses={"api": server.url}, max_network_retries=0)
        params = {"limit": 100, "created": {"gte": NOW - 86400 * 30}, "expand": ["data.customer"]}
        for _ in client.v1.charges.list(params=params).auto_paging_iter():
            pass
        client.v1.events.list(params={"types": ["customer.updated", "charge.refunded"], "limit": 10})
        recorded = list(stripe_emu.request_log)
    assert len(recorded) >= 2
    for req in recorded:
        assert specs.validate_request("stripe", req.method, req.path, list(req.query)) == [], req
    with hubspot_emu.serve() as server:
        crm = hubspot.HubSpot(access_token=PAT, host=server.url, retry=False).crm
        crm.contacts.basic_api.get_page(limit=100, properties=["email"], associations=["companies"], archived=False)
        crm.contacts.search_api.do_search(
            public_object_search_request=PublicObjectSearchRequest(
                filter_groups=[{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "0"}]}],
                sorts=["lastmodifieddate"],
                properties=["email"],
                limit=200,
            )
        )
        crm.properties.core_api.get_all(object_type="deals")
        recorded = list(hubspot_emu.request_log)
    for req in recorded:
        assert specs.validate_request("hubspot", req.method, req.path, list(req.query), req.json()) == [], req


def test_the_checker_finds_real_problems(stripe_emu: StripeEmulator) -> None:
    page = call(stripe_emu, "GET", "/v1/charges?limit=2", SK).payload
    del page["data"][0]["amount"]
    page["data"][1]["paid"] = "yes"
    page["data"][1]["status"] = "exploded"
    problems = specs.validate_response("stripe", "GET", "/v1/charges", 200, page)
    assert any("'amount' is a required property" in p for p in problems)
    assert any("data[1].paid" in p for p in problems) and any("data[1].status" in p for p in problems)
    assert specs.validate_response("stripe", "GET", "/v1/charges", 200, b'{"object": "li') != []
    assert specs.validate_response("stripe", "GET", "/v1/nowhere", 200, {}) != []
    bad_request = specs.validate_request("stripe", "GET", "/v1/charges", {"limit": "ten", "colour": "red"})
    assert len(bad_request) == 2
    assert (
        specs.validate_request("stripe", "GET", "/v1/charges", {"created[gte]": "1", "expand[]": "data.customer"}) == []
    )
    hub_problems = specs.validate_request(
        "hubspot",
        "POST",
        "/crm/v3/objects/contacts/search",
        None,
        {"filterGroups": [{"filters": [{"operator": "NOPE"}]}]},
    )
    assert len(hub_problems) == 2  # propertyName missing, operator not in the enum
    null_value = {
        "results": [{"id": "1", "properties": {"x": None}, "createdAt": "", "updatedAt": "", "archived": False}]
    }
    assert specs.validate_response("hubspot", "GET", "/crm/v3/objects/contacts", 200, null_value) == []
    assert specs.validate_response("hubspot", "GET", "/crm/v3/objects/contacts", 200, null_value, strict=True) != []
    assert specs.validate_response("hubspot", "GET", "/crm/v3/owners", 200, {"results": []}) == [
        "no operation in the hubspot spec matches GET /crm/v3/owners"
    ]


def test_stripe_spec_is_cached_by_digest() -> None:
    folder = specs.require_vendor_specs("stripe")
    specs.load_api("stripe")
    cached = list(specs.CACHE_DIR.glob("spec3-*.json"))
    assert cached and folder.joinpath("stripe/spec3.yaml").is_file()


def test_missing_specs_skip_or_fail_in_ci(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(specs.SPECS_ENV, str(tmp_path / "absent"))
    monkeypatch.delenv("DATIVO_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="vendor OpenAPI specs not found"):
        specs.require_vendor_specs("stripe")
    monkeypatch.setenv("DATIVO_REQUIRE_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        specs.require_vendor_specs()
    with pytest.raises(specs.SpecsUnavailable):
        specs.load_api("hubspot", False, str(tmp_path / "absent"))
