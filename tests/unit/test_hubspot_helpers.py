"""The HubSpot source's pure helpers: search bodies, window splitting, type mapping, cursor codec,
error classification and tokens, with canned data (no emulator)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from dativo_dagster.api.transport import HttpResponse
from dativo_dagster.errors import AuthError, ConfigError, PaginationError
from dativo_dagster.sources.hubspot import (
    NUMBER_TYPE,
    HubSpotCursorCodec,
    MissingScopesError,
    SearchPage,
    _TokenExpired,
    _Tokens,
    association_column,
    classify_api_error,
    error_info,
    hubspot_sender,
    iso_ms,
    modified_property,
    oldest_body,
    parse_time_ms,
    property_arrow_type,
    search_body,
    slice_windows,
    split_at,
    window_pages,
)

# ----------------------------------------------------------------------------- search bodies


def test_search_body_filters_a_half_open_window_sorted_by_id() -> None:
    body = search_body("lastmodifieddate", 1_000, 2_000, ["email", "lastmodifieddate"])
    assert body == {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1000"},
                    {"propertyName": "lastmodifieddate", "operator": "LT", "value": "2000"},
                ]
            }
        ],
        "sorts": ["hs_object_id"],
        "properties": ["email", "lastmodifieddate"],
        "limit": 200,
    }


def test_search_body_pages_by_id_or_by_offset_and_sorts_by_time_to_split() -> None:
    by_id = search_body("hs_lastmodifieddate", 5, 6, [], after_id=42)
    assert by_id["filterGroups"][0]["filters"][-1] == {"propertyName": "hs_object_id", "operator": "GT", "value": "42"}
    assert "after" not in by_id
    assert search_body("hs_lastmodifieddate", 5, 6, [], after="400")["after"] == "400"
    probe = search_body("hs_lastmodifieddate", 5, 600, ["hs_lastmodifieddate"], after="9999", limit=1, by_time=True)
    assert probe["sorts"] == ["hs_lastmodifieddate"] and probe["after"] == "9999" and probe["limit"] == 1


def test_oldest_body_sorts_ascending_by_the_time_property() -> None:
    body = oldest_body("hs_lastmodifieddate")
    assert body["sorts"] == ["hs_lastmodifieddate"] and body["limit"] == 1
    assert body["filterGroups"][0]["filters"] == [{"propertyName": "hs_lastmodifieddate", "operator": "HAS_PROPERTY"}]


def test_modified_property_per_object_type() -> None:
    assert modified_property("contacts") == "lastmodifieddate"
    assert modified_property("deals") == modified_property("2-1234") == "hs_lastmodifieddate"


def test_search_bodies_conform_to_hubspots_spec() -> None:
    from tests.fakes import specs

    specs.require_vendor_specs("hubspot")
    for body in (
        search_body("lastmodifieddate", 1, 2, ["email"]),
        search_body("lastmodifieddate", 1, 2, ["email"], after_id=7),
        search_body("lastmodifieddate", 1, 2, ["email"], after="200"),
        search_body("lastmodifieddate", 1, 2, ["lastmodifieddate"], after="9999", limit=1, by_time=True),
        oldest_body("lastmodifieddate"),
    ):
        assert specs.validate_request("hubspot", "POST", "/crm/v3/objects/contacts/search", None, body) == []


# ----------------------------------------------------------------------------- windows


def test_split_at_cuts_before_the_capped_record_or_isolates_a_full_millisecond() -> None:
    assert split_at(0, 100, 40) == [(0, 40), (40, 100)]
    assert split_at(7, 100, 7) == [(7, 8), (8, 100)]
    with pytest.raises(PaginationError, match="outside"):
        split_at(0, 100, 100)


def test_slice_windows_cover_the_range_without_gaps() -> None:
    assert slice_windows(0, 25, 10) == [(0, 10), (10, 20), (20, 25)]
    assert slice_windows(5, 5, 10) == []
    with pytest.raises(ValueError):
        slice_windows(0, 1, 0)


class FakeIndex:
    """HubSpot's search over ``(id, modified)`` records: filters, sorts, offset paging, the cap."""

    def __init__(self, records: dict[int, int], *, page: int = 10, cap: int = 50) -> None:
        self.records = records
        self.page = page
        self.cap = cap
        self.calls: list[dict[str, Any]] = []
        self.before_call: Callable[[int], None] = lambda number: None

    def __call__(
        self,
        low: int,
        high: int,
        *,
        after_id: int | None = None,
        after: str | None = None,
        by_time: bool = False,
        limit: int = 200,
    ) -> SearchPage:
        self.before_call(len(self.calls))
        self.calls.append({"window": (low, high), "after_id": after_id, "after": after, "by_time": by_time})
        matched = [i for i, t in self.records.items() if low <= t < high and (after_id is None or i > after_id)]
        matched.sort(key=lambda i: (self.records[i], i) if by_time else i)
        offset = int(after or 0)
        if offset >= self.cap:
            raise AssertionError(f"HTTP 400: paged past the cap (after={offset})")
        end = min(offset + min(limit, self.page), len(matched), self.cap)
        items = [{"id": str(i), "t": self.records[i]} for i in matched[offset:end]]
        return SearchPage(len(matched), items, str(end) if end < len(matched) else None)


def pages_of(index: FakeIndex, low: int, high: int) -> list[int]:
    pages = window_pages(index, low, high, time_of=lambda item: int(item["t"]), cap=index.cap)
    return [int(item["id"]) for page in pages for item in page]


def test_a_window_under_the_cap_pages_by_offset() -> None:
    index = FakeIndex({i: 1_000 + i for i in range(1, 36)})
    assert pages_of(index, 0, 10_000) == list(range(1, 36))
    assert [call["after"] for call in index.calls] == [None, "10", "20", "30"]


def test_a_window_over_the_cap_is_split_where_its_capped_record_lies() -> None:
    index = FakeIndex({i: i * 10 for i in range(1, 121)})  # 120 records over [10, 1200]
    assert pages_of(index, 0, 2_000) == list(range(1, 121))
    probes = [call for call in index.calls if call["by_time"]]
    assert [call["after"] for call in probes] == ["49", "49"]  # 120 records: two splits
    # Record 50 (rank 50, at 500) and record 99 (at 990) are where the windows are cut.
    assert {call["window"] for call in index.calls if not call["by_time"]} >= {(0, 500), (500, 990), (990, 2000)}


def test_one_instant_over_the_cap_pages_by_id() -> None:
    records = {i: 500 for i in range(1, 131)}  # a bulk import: 130 records, one timestamp
    records.update({200 + i: 900 + i for i in range(1, 21)})
    index = FakeIndex(records)
    assert sorted(pages_of(index, 0, 1_000)) == sorted(records)
    by_id = [call for call in index.calls if call["window"] == (500, 501) and call["after_id"] is not None]
    assert by_id and all(call["after"] is None for call in by_id)


def test_a_record_leaving_the_window_mid_way_skips_nothing_and_repeats_nothing() -> None:
    records = {i: 100 for i in range(1, 31)}
    index = FakeIndex(records)

    def modify(number: int) -> None:
        if number == 1:  # after the first page: record 3 is modified (its time moves to now)
            records[3] = 10**12

    index.before_call = modify
    got = pages_of(index, 0, 1_000)
    assert got == list(range(1, 31))  # 3 was read before it left; 11 is not skipped
    assert index.calls[2]["after_id"] == 10  # continued by id from the last record read


def test_ids_going_backwards_are_page001() -> None:
    def broken(low: int, high: int, **_: Any) -> SearchPage:
        return SearchPage(3, [{"id": "5"}, {"id": "4"}], None)

    with pytest.raises(PaginationError, match="not sorted by id"):
        list(window_pages(broken, 0, 10, time_of=lambda item: 0))


def test_an_empty_page_that_announces_more_is_page001() -> None:
    def broken(low: int, high: int, **_: Any) -> SearchPage:
        return SearchPage(3, [], "10")

    with pytest.raises(PaginationError, match="empty page"):
        list(window_pages(broken, 0, 10, time_of=lambda item: 0))


# ----------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("hubspot_type", "name", "expected"),
    [
        ("number", "amount", NUMBER_TYPE),
        ("number", "hs_object_id", pa.int64()),
        ("datetime", "closedate", pa.timestamp("us", tz="UTC")),
        ("date", "birthday", pa.date32()),
        ("bool", "dativo_newsletter", pa.bool_()),
        ("enumeration", "dealstage", pa.string()),
        ("string", "email", pa.string()),
        ("phone_number", "phone", pa.string()),
        ("object_coordinates", "x", pa.string()),
    ],
)
def test_property_types(hubspot_type: str, name: str, expected: pa.DataType) -> None:
    assert property_arrow_type(hubspot_type, name) == expected


def test_association_columns_are_safe_names() -> None:
    assert association_column("companies") == "associations_companies"
    assert association_column("2-1234") == "associations_2_1234"


def test_number_type_is_exact_decimal() -> None:
    assert pa.decimal128(38, 18) == NUMBER_TYPE


# ----------------------------------------------------------------------------- cursor codec


def test_times_parse_to_epoch_milliseconds() -> None:
    assert parse_time_ms("2024-01-02T03:04:05.678Z") == 1_704_164_645_678
    assert parse_time_ms("2024-01-02T03:04:05Z") == 1_704_164_645_000
    assert parse_time_ms("2024-01-02") == 1_704_153_600_000
    assert parse_time_ms("1704164645678") == 1_704_164_645_678
    assert parse_time_ms(dt.datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.timezone.utc)) == 1_704_164_645_678
    assert iso_ms(1_704_164_645_678) == "2024-01-02T03:04:05.678Z"
    with pytest.raises(ValueError):
        parse_time_ms("soon")


def test_cursor_codec_orders_shows_and_moves_back() -> None:
    codec = HubSpotCursorCodec()
    assert codec.display(1_704_164_645_678, "lastmodifieddate") == "lastmodifieddate<2024-01-02T03:04:05.678Z"
    assert codec.minus_lookback(1_704_164_645_678, 1) == 1_704_164_645_678 - 86_400_000
    assert codec.minus_lookback(1_704_164_645_678, 0.5) == 1_704_164_645_678 - 43_200_000
    # An ISO initial_value orders with stored integers.
    assert codec.later("2024-01-01", 1_704_164_645_678) == 1_704_164_645_678
    assert codec.is_before(1_704_067_199_999, "2024-01-01")
    assert codec.from_arrow("2024-01-02T03:04:05.678Z") == 1_704_164_645_678
    assert codec.from_arrow(dt.datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.timezone.utc)) == 1_704_164_645_678
    with pytest.raises(ConfigError):
        codec.parse("not a time")


# ----------------------------------------------------------------------------- errors


def body(**fields: Any) -> bytes:
    return json.dumps({"status": "error", **fields}).encode()


def test_error_info_reads_category_message_and_scopes() -> None:
    info = error_info(
        body(
            category="MISSING_SCOPES",
            message="no scope",
            errors=[{"context": {"requiredGranularScopes": ["crm.objects.deals.read"]}}],
        )
    )
    assert info.category == "MISSING_SCOPES" and info.scopes == ("crm.objects.deals.read",)
    assert error_info(b"<html>502</html>").message == "<html>502</html>"


def test_classify_api_errors() -> None:
    missing = classify_api_error(
        404, body(category="OBJECT_NOT_FOUND", message="x"), what="GET /crm/v3/objects/widgets", label="a/b/c"
    )
    assert isinstance(missing, ConfigError) and "GET /crm/v3/objects/widgets" in str(missing)
    assert missing.hint is not None and "API" in missing.hint and "object type" in missing.hint
    refused = classify_api_error(400, body(category="VALIDATION_ERROR", message="bad filter"), what="w", label="l")
    assert isinstance(refused, ConfigError) and "bad filter" in str(refused)
    token = classify_api_error(
        400, body(message="missing or unknown refresh token"), what="w", label="l", token_call=True
    )
    assert isinstance(token, AuthError) and "refresh token" in str(token)
    assert classify_api_error(409, body(category="CONFLICT", message="x"), what="w", label="l") is None
    assert classify_api_error(418, b"", what="w", label="l") is None


def canned(status: int, payload: bytes) -> Callable[..., HttpResponse]:
    def send(method: str, url: str, headers: Any, data: bytes | None, timeout_s: float) -> HttpResponse:
        return HttpResponse(status, {}, payload, url)

    return send


def test_sender_turns_expired_tokens_into_a_refresh_and_names_missing_scopes() -> None:
    url = "http://hubspot/crm/v3/objects/contacts/search"
    expired = hubspot_sender(canned(401, body(category="EXPIRED_AUTHENTICATION", message="expired")), "hubspot")
    with pytest.raises(_TokenExpired):
        expired("POST", url, {}, None, 1.0)
    invalid = hubspot_sender(canned(401, body(category="INVALID_AUTHENTICATION", message="bad token")), "hubspot")
    with pytest.raises(AuthError, match="INVALID_AUTHENTICATION"):
        invalid("POST", url, {}, None, 1.0)
    scopes = body(
        category="MISSING_SCOPES",
        message="missing scopes",
        errors=[{"context": {"requiredGranularScopes": ["crm.objects.contacts.read"]}}],
    )
    with pytest.raises(MissingScopesError, match=r"scope\(s\) crm.objects.contacts.read"):
        hubspot_sender(canned(403, scopes), "hubspot")("POST", url, {}, None, 1.0)
    assert hubspot_sender(canned(200, b"{}"), "hubspot")("GET", url, {}, None, 1.0).status == 200


# ----------------------------------------------------------------------------- tokens


def test_credentials_need_one_complete_kind() -> None:
    with pytest.raises(ConfigError, match="both"):
        _Tokens({"access_token": "pat-1", "client_id": "c"}, label="x", clock=lambda: 0.0)
    with pytest.raises(ConfigError, match="missing client_secret, refresh_token"):
        _Tokens({"client_id": "c"}, label="x", clock=lambda: 0.0)
    assert _Tokens({"access_token": "pat-1"}, label="x", clock=lambda: 0.0).fixed == "pat-1"


def test_oauth_tokens_refresh_before_expiry_and_once_after_a_stale_one() -> None:
    now = [1_000.0]
    issued: list[str] = []

    def exchange(oauth: Any) -> tuple[str, float]:
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1], 1800.0

    tokens = _Tokens({"client_id": "c", "client_secret": "s", "refresh_token": "r"}, label="x", clock=lambda: now[0])
    assert tokens.current(exchange) == "token-1"
    assert tokens.current(exchange) == "token-1"
    now[0] += 1800 - 30  # inside the safety margin before expiry
    assert tokens.current(exchange) == "token-2"
    assert tokens.renew("token-1", exchange) == "token-2"  # another call already renewed it
    assert tokens.renew("token-2", exchange) == "token-3"
    assert tokens.refreshes == 3
