"""The Stripe source's pure helpers: parameters, windows, cursor positions, flattening, error mapping."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json

import pyarrow as pa
import pytest
import yaml

from dativo_dagster.config.models import ObjectConfig, SchemaContract
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import AuthError, ConfigError, ExtractError, PaginationError, UnexpectedError
from dativo_dagster.sources.stripe import (
    RESOURCES,
    ColumnSpec,
    StripeCursorCodec,
    StripeOptions,
    StripeStats,
    cell,
    classify_stripe_error,
    column_specs,
    created_windows,
    cursor_positions,
    cursor_value,
    expand_params,
    list_params,
    oldest_window_start,
    retention_lost,
    to_batch,
    value_at,
)
from dativo_dagster.types import ContractEnforcer

stripe = pytest.importorskip("stripe")

UTC = dt.timezone.utc
DAY = 86_400


# --------------------------------------------------------------------------------------------- parameters


def test_expand_paths_are_prefixed_checked_and_deduplicated() -> None:
    charges = RESOURCES["charges"]
    assert expand_params(charges, ["customer", "data.customer", "invoice.subscription"]) == [
        "data.customer",
        "data.invoice.subscription",
    ]
    with pytest.raises(ValueError, match="charges cannot expand 'lines'"):
        expand_params(charges, ["lines"])
    with pytest.raises(ValueError, match="deeper than the 4 levels"):
        expand_params(charges, ["customer.a.b.c.d"])
    with pytest.raises(ValueError, match="not a field path"):
        expand_params(charges, ["customer..email"])


def test_list_parameters_for_a_window_a_page_and_events() -> None:
    charges, subscriptions, events = RESOURCES["charges"], RESOURCES["subscriptions"], RESOURCES["events"]
    assert list_params(charges, lo=10, hi=20, page_size=100, expand=["data.customer"], after="ch_1") == {
        "limit": 100,
        "created": {"gte": 10, "lt": 20},
        "expand": ["data.customer"],
        "starting_after": "ch_1",
    }
    assert list_params(charges, lo=None, hi=None, page_size=5) == {"limit": 5}
    # canceled subscriptions are listed only when asked for
    assert list_params(subscriptions, lo=None, hi=20, page_size=100) == {
        "limit": 100,
        "status": "all",
        "created": {"lt": 20},
    }
    assert list_params(events, lo=1, hi=2, page_size=100, event_type="customer.*")["type"] == "customer.*"


def test_options_are_checked_against_the_named_resource() -> None:
    assert StripeOptions.model_validate({"resource": "charges", "expand": ["customer"]}).expand == ["customer"]
    assert StripeOptions.model_validate({"expand": ["anything"]}).resource is None  # checked at run time
    with pytest.raises(ValueError, match="cannot expand 'nope'"):
        StripeOptions.model_validate({"resource": "invoices", "expand": ["nope"]})
    with pytest.raises(ValueError, match="no update events for balance_transactions"):
        StripeOptions.model_validate({"resource": "balance_transactions", "track_updates": True})
    with pytest.raises(ValueError, match="Extra inputs"):
        StripeOptions.model_validate({"resource": "charges", "colour": "red"})


# --------------------------------------------------------------------------------------------- windows


def test_created_windows_partition_the_range() -> None:
    assert created_windows(None, 100, 30) == [(None, 100)]
    assert created_windows(100, 100, 30) == []
    assert created_windows(0, 100, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert created_windows(0, 100, 30, open_start=True)[0] == (None, 30)
    assert created_windows(0, 10, 30) == [(0, 10)]


def test_the_oldest_window_is_found_by_bisection_within_the_resolution() -> None:
    created = sorted([1_400_000_000 + 86_400 * i for i in range(0, 300, 7)])
    probes: list[int] = []

    def exists_before(t: int) -> bool:
        probes.append(t)
        return bisect.bisect_left(created, t) > 0

    start = oldest_window_start(exists_before, 1_262_304_000, 1_800_000_000, 30 * DAY)
    assert start is not None and start <= created[0] < start + 30 * DAY
    assert len(probes) <= 10
    assert oldest_window_start(lambda t: False, 0, 1_000, 10) is None


# --------------------------------------------------------------------------------------------- cursor


def test_cursor_positions_and_values() -> None:
    assert cursor_positions(None) == (None, None)
    assert cursor_positions(100) == (100, None)
    assert cursor_positions({"created": 100, "events": 200}) == (100, 200)
    assert cursor_positions("2024-01-01") == (1_704_067_200, None)
    assert cursor_positions("2024-01-01T01:00:00+01:00") == (1_704_067_200, None)
    assert cursor_value(100, 200, tracking=True) == {"created": 100, "events": 200}
    assert cursor_value(100, 200, tracking=False) == 100
    assert cursor_value(None, 200, tracking=True) is None  # nothing read yet: nothing to commit


def test_codec_orders_each_position_and_never_lets_one_move_back() -> None:
    codec = StripeCursorCodec()
    a, b = {"created": 100, "events": 500}, {"created": 200, "events": 400}
    assert codec.later(a, b) == {"created": 200, "events": 500}
    assert codec.later(100, 200) == 200 and codec.later(None, 5) == 5
    assert codec.is_before(b, a)  # the events position went back
    assert codec.is_before({"created": 50, "events": 900}, a)
    assert not codec.is_before({"created": 100, "events": 500}, a)
    assert not codec.is_before({"created": 300, "events": 600}, 250)  # an object newly tracked
    assert codec.is_before(None, 10)
    assert codec.order_key(a) < codec.order_key(b)
    assert codec.parse("2024-01-01") == 1_704_067_200
    assert codec.parse({"created": "10", "events": None}) == {"created": 10, "events": None}
    assert codec.minus_lookback({"created": 10 * DAY, "events": 5}, 2) == 8 * DAY
    assert codec.minus_lookback(10 * DAY, 0.5) == 9.5 * DAY
    assert codec.from_arrow(dt.datetime(2024, 1, 1, tzinfo=UTC)) == 1_704_067_200
    assert codec.from_arrow(dt.date(2024, 1, 1)) == 1_704_067_200 and codec.from_arrow(7) == 7
    assert codec.from_arrow("not a time") is None
    assert codec.display(1_704_067_200, "created") == "created<2024-01-01T00:00:00+00:00"
    assert codec.display({"created": 1_704_067_200, "events": 1_704_153_600}) == (
        "created<2024-01-01T00:00:00+00:00 events>=2024-01-02T00:00:00+00:00"
    )


def test_retention_edge_with_a_margin() -> None:
    now = 1_800_000_000
    assert retention_lost(now - 31 * DAY, now)
    assert retention_lost(now - 30 * DAY + 60, now)  # within the margin: the read comes later
    assert not retention_lost(now - 29 * DAY, now)


def test_stats_carry_the_events_counters_into_metadata() -> None:
    stats = StripeStats()
    stats.add(api_calls=3, events_retention_fallback=1)
    other = StripeStats()
    other.absorb(stats)
    metadata = other.as_metadata()
    assert metadata["api_calls"] == 3 and metadata["events_retention_fallback"] == 1
    assert {"events_read", "updates_from_events", "events_retention_gap", "http_429"} <= set(metadata)


# --------------------------------------------------------------------------------------------- flattening


CHARGE = {
    "id": "ch_1",
    "created": 1_704_067_200,
    "amount": 1999,
    "customer": {"id": "cus_9", "object": "customer", "email": "a@b.c"},
    "billing_details": {"address": {"country": "DE", "city": None}},
    "metadata": {"b": "2", "a": "1"},
    "payment_method_types": ["card"],
    "refunded": False,
}


def test_values_are_found_by_path_and_shaped_for_their_column() -> None:
    assert value_at(CHARGE, ("billing_details", "address", "country")) == "DE"
    assert value_at(CHARGE, ("billing_details", "nope", "country")) is None
    assert value_at(CHARGE, ("amount", "deeper")) is None
    string, stamp = ColumnSpec("x", (), pa.string()), ColumnSpec("t", (), pa.timestamp("us", tz="UTC"))
    assert cell(CHARGE["customer"], string) == "cus_9"  # an expanded object stands for its id
    assert cell({"k": 1}, string) == '{"k":1}' and cell(True, string) == "true" and cell(5, string) == "5"
    assert cell(CHARGE["metadata"], ColumnSpec("m", (), pa.string(), json=True)) == '{"a":"1","b":"2"}'
    assert cell(1_704_067_200, stamp) == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert cell(1_704_067_200, ColumnSpec("d", (), pa.date32())) == dt.date(2024, 1, 1)
    assert cell(1_704_067_200, ColumnSpec("n", (), pa.timestamp("us"))) == dt.datetime(2024, 1, 1)
    assert cell(None, stamp) is None


def test_a_contract_flattens_nested_fields_and_quarantines_what_does_not_fit() -> None:
    contract = SchemaContract.model_validate(
        yaml.safe_load(
            """
name: test/charges
version: 1
primary_key: [id]
columns:
  - {name: id, type: string, required: true}
  - {name: created, type: timestamptz, required: true}
  - {name: amount, type: int64}
  - {name: customer, type: string}
  - {name: customer_email, type: string, source_name: customer.email}
  - {name: country, type: string, source_name: billing_details.address.country}
  - {name: metadata, type: json}
  - {name: payment_method_types, type: list, item_type: string}
  - {name: refunded, type: boolean}
"""
        )
    )
    obj = ObjectPlan(
        tenant="t",
        job="j",
        source_name="stripe",
        config=ObjectConfig.model_validate(
            {"name": "charges", "incremental": {"strategy": "created", "cursor_field": "created"}}
        ),
        contract=contract,
        options={},
        primary_key=("id",),
        namespace="t",
        table="charges",
        max_rejected_rate=1.0,
    )
    specs = column_specs(obj)
    assert [s.name for s in specs][4:6] == ["customer.email", "billing_details.address.country"]
    odd = {**CHARGE, "id": "ch_2", "amount": "a lot"}
    batch = to_batch([CHARGE, odd], specs)
    assert batch.schema.field("amount").type == pa.string()  # handed over as text for the enforcer
    enforced = ContractEnforcer.for_contract(contract, ("id",)).enforce(batch, "run")
    assert enforced.good.to_pylist() == [
        {
            "id": "ch_1",
            "created": dt.datetime(2024, 1, 1, tzinfo=UTC),
            "amount": 1999,
            "customer": "cus_9",
            "customer_email": "a@b.c",
            "country": "DE",
            "metadata": '{"a":"1","b":"2"}',
            "payment_method_types": ["card"],
            "refunded": False,
        }
    ]
    assert enforced.rejected is not None and "amount" in enforced.rejected.column("_dativo_reason")[0].as_py()
    plain = to_batch([CHARGE], specs)
    assert plain.schema.field("amount").type == pa.int64()
    assert json.loads(plain.column("metadata")[0].as_py()) == {"a": "1", "b": "2"}


# --------------------------------------------------------------------------------------------- errors


def classify(exc: Exception) -> object:
    return classify_stripe_error(exc, where="t/j/charges: GET /v1/charges page 3", path="/v1/charges", api_version=None)


def test_the_clients_errors_map_to_codes() -> None:
    missing = classify(stripe.InvalidRequestError("Unrecognized request URL", None, http_status=404))
    assert isinstance(missing, ConfigError) and "page 3: HTTP 404" in str(missing) and "API version" in str(missing)
    bad = classify(stripe.InvalidRequestError("This property cannot be expanded (data.x).", "expand", http_status=400))
    assert isinstance(bad, ConfigError) and "cannot be expanded (data.x)" in str(bad) and "options.expand" in str(bad)
    gone = classify(
        stripe.InvalidRequestError("No such charge: 'ch_1'", "starting_after", code="resource_missing", http_status=400)
    )
    assert isinstance(gone, PaginationError)
    garbled = classify(stripe.APIError("Invalid response body from API: {'a'", http_body="{'a'", http_status=200))
    assert isinstance(garbled, PaginationError) and "page 3" in str(garbled) and "not valid JSON" in str(garbled)
    assert isinstance(classify(stripe.AuthenticationError("Invalid API Key", http_status=401)), AuthError)
    assert isinstance(classify(stripe.PermissionError("no", http_status=403)), AuthError)
    limited = classify(stripe.RateLimitError("slow down", http_status=400))
    assert isinstance(limited, ExtractError) and limited.transient
    for odd in (
        stripe.CardError("declined", None, "card_declined", http_status=402),
        stripe.IdempotencyError("reused key", http_status=400),
        stripe.APIError("teapot", http_status=418),
    ):
        bug = classify(odd)
        assert isinstance(bug, UnexpectedError) and not bug.transient and bug.__cause__ is odd


def test_sub_windows_cover_the_window_exactly_once() -> None:
    from dativo_dagster.sources.stripe.streams import sub_windows

    parts = sub_windows(1_000, 1_000 + 86_400 * 30, 3)
    assert parts[0][0] == 1_000 and parts[-1][1] == 1_000 + 86_400 * 30
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
    assert sub_windows(5, 6, 3) == [(5, 6)]


def test_parallel_pages_yield_every_page_and_raise_a_chains_failure() -> None:
    import pytest

    from dativo_dagster.errors import PaginationError
    from dativo_dagster.sources.stripe.streams import parallel_pages

    def chain(n: int):  # type: ignore[no-untyped-def]
        return lambda: iter([[{"id": f"{n}-{i}"}] for i in range(50)])

    ids = sorted(item["id"] for page in parallel_pages([chain(0), chain(1), chain(2)]) for item in page)
    assert len(ids) == 150 == len(set(ids))

    def broken():  # type: ignore[no-untyped-def]
        yield [{"id": "x"}]
        raise PaginationError("page 2 is truncated")

    with pytest.raises(PaginationError, match="truncated"):
        list(parallel_pages([chain(0), broken]))
