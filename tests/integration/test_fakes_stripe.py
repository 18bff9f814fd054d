"""The Stripe emulator, driven through the official ``stripe`` client wherever it can be."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.fakes.server import FakeClock, FakeServer, Limit
from tests.fakes.stripe_api import EVENT_RETENTION_SECONDS, RESOURCES, StripeEmulator

stripe = pytest.importorskip("stripe")

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed clock keeps the seeded data identical run to run
KEY_A = "sk_test_dativo_tenant_a"
KEY_B = "sk_test_dativo_tenant_b"
RESTRICTED = "rk_test_dativo_customers_only"


def client(url: str, key: str = KEY_A, retries: int = 0) -> Any:
    """An official client pointed at the emulator."""
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=retries)


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[StripeEmulator, FakeServer]]:
    """Read-only: tenant A with 20,000 customers, tenant B small, one restricted key."""
    emu = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emu.add_account(KEY_A, seed=1, customers=20_000, charges=3_000)
    emu.add_account(KEY_B, seed=2, customers=30, charges=40)
    emu.add_restricted_key(RESTRICTED, KEY_A, ["customers"])
    with emu.serve() as server:
        yield emu, server


@pytest.fixture
def small() -> Iterator[tuple[StripeEmulator, FakeServer]]:
    """A fresh, small account for tests that change data or limits."""
    emu = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emu.add_account(KEY_A, seed=3, customers=50, charges=200)
    emu.add_account(KEY_B, seed=4, customers=20, charges=20)
    with emu.serve() as server:
        yield emu, server


def raw(url: str, path: str, key: str | None = KEY_A, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(url + path, params=params, headers=headers, timeout=10)


def test_pages_twenty_thousand_customers_newest_first(big: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = big
    seen = [(c.created, c.id) for c in client(server.url).v1.customers.list(params={"limit": 100}).auto_paging_iter()]
    assert len(seen) == 20_000 == len({i for _, i in seen})
    # newest first; within one second, by descending id
    assert seen == sorted(seen, reverse=True)
    assert sum(1 for a, b in itertools.pairwise(seen) if a[0] == b[0]) > 100
    assert emu.stats.count(key=KEY_A, path="/v1/customers") == 200


def test_cursors_limits_and_created_filters(big: tuple[StripeEmulator, FakeServer]) -> None:
    _, server = big
    everything = raw(server.url, "/v1/charges", limit=100).json()
    assert everything["object"] == "list" and everything["url"] == "/v1/charges" and everything["has_more"] is True
    ids = [c["id"] for c in everything["data"]]
    default = raw(server.url, "/v1/charges").json()
    assert [c["id"] for c in default["data"]] == ids[:10]
    after = raw(server.url, "/v1/charges", limit=5, starting_after=ids[20]).json()
    assert [c["id"] for c in after["data"]] == ids[21:26]
    before = raw(server.url, "/v1/charges", limit=5, ending_before=ids[20]).json()
    assert [c["id"] for c in before["data"]] == ids[15:20] and before["has_more"] is True
    first = raw(server.url, "/v1/charges", limit=5, ending_before=ids[3]).json()
    assert [c["id"] for c in first["data"]] == ids[:3] and first["has_more"] is False
    stamps = [c["created"] for c in everything["data"]]
    mid = stamps[50]
    for op, expected in [
        ("gt", [s for s in stamps if s > mid]),
        ("gte", [s for s in stamps if s >= mid]),
    ]:
        got = raw(server.url, "/v1/charges", limit=100, **{f"created[{op}]": mid}).json()["data"]
        assert [c["created"] for c in got] == expected
    window = raw(server.url, "/v1/charges", limit=100, **{"created[gte]": stamps[60], "created[lt]": stamps[40]}).json()
    assert all(stamps[60] <= c["created"] < stamps[40] for c in window["data"]) and window["data"]
    exact = raw(server.url, "/v1/charges", limit=100, created=mid).json()["data"]
    assert exact and all(c["created"] == mid for c in exact)


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": 0}, "limit", None),
        ({"limit": 101}, "limit", None),
        ({"limit": "ten"}, "limit", "parameter_invalid_integer"),
        ({"starting_after": "ch_doesnotexist"}, "starting_after", "resource_missing"),
        ({"ending_before": "cus_wrongtype"}, "ending_before", "resource_missing"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
        ({"expand": ["customer"]}, "expand", None),
        ({"expand": ["data.nonsense"]}, "expand", None),
    ],
)
def test_invalid_list_requests(
    big: tuple[StripeEmulator, FakeServer], params: dict[str, Any], param: str, code: str
) -> None:
    _, server = big
    with pytest.raises(stripe.InvalidRequestError) as info:
        client(server.url).v1.charges.list(params=params)
    assert info.value.http_status == 400
    assert info.value.param == param
    assert code is None or info.value.code == code
    assert info.value.error.type == "invalid_request_error"


def test_expand_and_retrieve(big: tuple[StripeEmulator, FakeServer]) -> None:
    _, server = big
    stripe_client = client(server.url)
    page = stripe_client.v1.charges.list(params={"limit": 20, "expand": ["data.customer", "data.balance_transaction"]})
    with_customer = [c for c in page.data if c.customer is not None]
    assert with_customer and all(c.customer.object == "customer" for c in with_customer)
    succeeded = [c for c in page.data if c.status == "succeeded"]
    assert all(c.balance_transaction.object == "balance_transaction" for c in succeeded)
    plain = stripe_client.v1.charges.retrieve(with_customer[0].id)
    assert isinstance(plain.customer, str) and plain.customer == with_customer[0].customer.id
    nested = stripe_client.v1.invoices.list(params={"limit": 5, "expand": ["data.subscription.customer"]})
    subscribed = [i for i in nested.data if i.subscription is not None]
    assert all(i.subscription.customer.object == "customer" for i in subscribed)
    with pytest.raises(stripe.InvalidRequestError) as info:
        stripe_client.v1.charges.retrieve("ch_missing")
    assert info.value.http_status == 404 and info.value.code == "resource_missing"


def test_every_resource_lists_with_stripe_shapes(big: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = big
    counts = emu.counts(KEY_A)
    for name, rdef in RESOURCES.items():
        body = raw(server.url, f"/v1/{name}", limit=3).json()
        assert body["object"] == "list" and body["url"] == f"/v1/{name}"
        assert counts[name] > 0 and body["data"], name
        for obj in body["data"]:
            assert obj["object"] == rdef.object and obj["id"].startswith(rdef.prefix + "_")
            assert isinstance(obj["created"], int) and obj["livemode"] is False
            if "amount" in obj:
                assert isinstance(obj["amount"], int)
            if name != "events" and "metadata" in obj:
                assert isinstance(obj["metadata"], dict)


def test_authentication_and_permissions(big: tuple[StripeEmulator, FakeServer]) -> None:
    _, server = big
    with pytest.raises(stripe.AuthenticationError) as info:
        client(server.url, "sk_test_unknown_key_1234").v1.customers.list()
    assert info.value.http_status == 401
    assert re.search(r"Invalid API Key provided: sk_test_\*+1234", str(info.value))
    missing = raw(server.url, "/v1/customers", key=None)
    assert missing.status_code == 401 and "did not provide an API key" in missing.json()["error"]["message"]
    restricted = client(server.url, RESTRICTED)
    assert len(restricted.v1.customers.list(params={"limit": 2}).data) == 2
    with pytest.raises(stripe.PermissionError) as denied:
        restricted.v1.charges.list()
    assert denied.value.http_status == 403 and "rak_charge_read" in str(denied.value)
    unknown = raw(server.url, "/v1/teapots")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/teapots)")
    assert unknown.headers["Request-Id"].startswith("req_")


def test_two_keys_are_two_isolated_accounts(big: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = big
    a_ids = {c["id"] for c in raw(server.url, "/v1/customers", limit=100).json()["data"]}
    b_page = raw(server.url, "/v1/customers", key=KEY_B, limit=100).json()
    assert len(b_page["data"]) == 30 and not a_ids & {c["id"] for c in b_page["data"]}
    with pytest.raises(stripe.InvalidRequestError):
        client(server.url, KEY_B).v1.customers.retrieve(next(iter(a_ids)))
    assert emu.account(KEY_A).id != emu.account(KEY_B).id


def test_rate_limit_per_account_answers_429_with_retry_after(small: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = small
    emu.configure(limits={"default": Limit(rps=2, burst=4)})
    stripe_a = client(server.url)
    for _ in range(4):
        stripe_a.v1.customers.list(params={"limit": 1})
    with pytest.raises(stripe.RateLimitError) as info:
        stripe_a.v1.customers.list(params={"limit": 1})
    assert info.value.http_status == 429 and info.value.json_body["error"]["code"] == "rate_limit"
    assert int(info.value.headers["Retry-After"]) >= 1
    # the other account has its own bucket
    assert client(server.url, KEY_B).v1.customers.list(params={"limit": 1}).data
    throttled = emu.stats.throttled()
    assert len(throttled) == 1 and throttled[0]["key"] == KEY_A and throttled[0]["path"] == "/v1/customers"


def test_official_client_retries_injected_500(small: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = small
    emu.inject("status", status=500, path="/v1/charges")
    page = client(server.url, retries=2).v1.charges.list(params={"limit": 3})
    assert len(page.data) == 3
    assert emu.stats.status_count(500) == 1 and emu.stats.count(path="/v1/charges") == 2
    emu.inject("status", status=503)
    with pytest.raises(stripe.APIError) as info:
        client(server.url).v1.charges.list()
    assert info.value.http_status == 503


def test_events_keep_thirty_days(small: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = small
    stored = emu.account(KEY_A).tables["events"].rows.values()
    assert any(e["created"] < NOW - EVENT_RETENTION_SECONDS for e in stored)  # older ones exist...
    listed = list(client(server.url).v1.events.list(params={"limit": 100}).auto_paging_iter())
    assert listed and all(e.created >= NOW - EVENT_RETENTION_SECONDS for e in listed)  # ...but are not listed
    assert len(listed) == sum(1 for e in stored if e["created"] >= NOW - EVENT_RETENTION_SECONDS)
    oldest = min(listed, key=lambda e: (e.created, e.id))
    emu.advance_clock(oldest.created + EVENT_RETENTION_SECONDS - NOW + 1)
    assert oldest.id not in {e.id for e in client(server.url).v1.events.list(params={"limit": 100}).auto_paging_iter()}
    typed = raw(server.url, "/v1/events", limit=100, type="customer.*").json()["data"]
    assert typed and all(e["type"].startswith("customer.") for e in typed)


def test_changes_show_up_for_an_incremental_load(small: tuple[StripeEmulator, FakeServer]) -> None:
    emu, server = small
    stripe_a = client(server.url)
    cursor = max(c.created for c in stripe_a.v1.customers.list(params={"limit": 100}).auto_paging_iter())
    existing = stripe_a.v1.customers.list(params={"limit": 1}).data[0]
    charge = next(c for c in stripe_a.v1.charges.list(params={"limit": 50}).data if c.status == "succeeded")
    emu.advance_clock(3600)
    created = emu.create_object(KEY_A, "customers", email="new@example.com", metadata={"source": "test"})
    emu.update_object(KEY_A, "customers", existing.id, email="changed@example.com", metadata={"tier": "gold"})
    emu.refund_charge(KEY_A, charge.id)
    new_customers = stripe_a.v1.customers.list(params={"created": {"gt": cursor}}).data
    assert [c.id for c in new_customers] == [created["id"]] and new_customers[0].created == NOW + 3600
    events = stripe_a.v1.events.list(params={"created": {"gt": NOW}}).data
    assert sorted(e.type for e in events) == ["charge.refunded", "customer.created", "customer.updated"]
    updated = next(e for e in events if e.type == "customer.updated")
    assert updated.data.object.id == existing.id and updated.data.object.email == "changed@example.com"
    assert updated.data.previous_attributes.email == existing.email
    assert updated.data.object.metadata.tier == "gold"
    refunded = next(e for e in events if e.type == "charge.refunded")
    assert refunded.data.object.refunded is True and refunded.data.object.amount_refunded == charge.amount
    assert stripe_a.v1.refunds.list(params={"charge": charge.id}).data[0].amount == charge.amount
    emu.delete_object(KEY_A, "customers", created["id"])
    assert created["id"] not in {c.id for c in stripe_a.v1.customers.list(params={"limit": 100}).data}
    assert stripe_a.v1.customers.retrieve(created["id"]).deleted is True
    assert stripe_a.v1.events.list(params={"type": "customer.deleted"}).data[0].data.object.id == created["id"]


def test_subscriptions_hide_canceled_unless_asked(small: tuple[StripeEmulator, FakeServer]) -> None:
    _, server = small
    default = raw(server.url, "/v1/subscriptions", limit=100).json()["data"]
    everything = raw(server.url, "/v1/subscriptions", limit=100, status="all").json()["data"]
    assert all(s["status"] != "canceled" for s in default)
    assert len(everything) > len(default)
    canceled = raw(server.url, "/v1/subscriptions", limit=100, status="canceled").json()["data"]
    assert canceled and all(s["status"] == "canceled" for s in canceled)


def test_seed_is_deterministic() -> None:
    def ids(seed: int) -> list[str]:
        emu = StripeEmulator(clock=FakeClock(NOW, frozen=True))
        emu.add_account(KEY_A, seed=seed, customers=20, charges=30)
        acct = emu.account(KEY_A)
        return [k[1] for k in acct.tables["charges"].keys] + [str(k[0]) for k in acct.tables["customers"].keys]

    assert ids(5) == ids(5) != ids(6)
