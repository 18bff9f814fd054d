"""The API toolkit with canned responses: limits, retries, breaker, classification, paginators."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pytest

from dativo_dagster.api.limits import LimiterRegistry, RateLimitSettings, credential_fingerprint, effective_limit
from dativo_dagster.api.paging import (
    Page,
    next_after,
    next_offset,
    page_token,
    paginate,
    parse_json_object,
    starting_after,
)
from dativo_dagster.api.transport import (
    ApiTransport,
    BreakerSettings,
    Guard,
    HttpResponse,
    RetrySettings,
    TransportFailure,
    retry_after_seconds,
)
from dativo_dagster.errors import AuthError, ConfigError, PaginationError, RetryExhaustedError
from dativo_dagster.sources.base import SourceStats


class Script:
    """A sender answering from a list of canned responses (or failures), recording each call."""

    def __init__(self, *answers: HttpResponse | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float
    ) -> HttpResponse:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(body: bytes = b"{}", **headers: str) -> HttpResponse:
    return HttpResponse(200, {k.replace("_", "-").lower(): v for k, v in headers.items()}, body)


def status(code: int, **headers: str) -> HttpResponse:
    return HttpResponse(code, {k.replace("_", "-").lower(): v for k, v in headers.items()}, b'{"error": "x"}')


def transport(
    sender: Script, *, attempts: int = 5, failures: int = 5, stats: SourceStats | None = None
) -> ApiTransport:
    registry = LimiterRegistry(redis_url="")
    bucket = registry.bucket(credential_fingerprint("k"), "default", RateLimitSettings(rps=1000, burst=1000))
    waits: list[float] = []
    return ApiTransport(
        name="test api",
        sender=sender,
        buckets={"default": bucket},
        guard=Guard("test api", BreakerSettings(failures=failures, reset_s=30)),
        retry=RetrySettings(attempts=attempts, initial_s=0.01, max_s=0.02),
        stats=stats or SourceStats(),
        sleep=waits.append,
    )


def test_success_passes_through_and_counts() -> None:
    stats = SourceStats()
    answer = transport(Script(ok(b'{"a": 1}')), stats=stats).request("GET", "http://x/v1/charges")
    assert answer.status == 200 and stats.api_calls == 1 and stats.retries == 0


def test_5xx_and_timeouts_are_retried_then_succeed() -> None:
    stats = SourceStats()
    script = Script(status(503), TransportFailure("timed out"), ok())
    assert transport(script, stats=stats).request("GET", "http://x/v1/a").status == 200
    assert script.calls == 3 and stats.retries == 2


def test_429_honours_retry_after_and_is_counted_as_throttling() -> None:
    stats = SourceStats()
    sleeps: list[float] = []
    api = transport(Script(status(429, retry_after="3"), ok()), stats=stats)
    api._sleep = sleeps.append
    assert api.request("GET", "http://x/v1/a").status == 200
    assert sleeps and sleeps[0] >= 3.0
    assert stats.http_429 == 1 and stats.throttled_s >= 3.0


def test_retries_spent_is_retry001_naming_the_last_failure() -> None:
    with pytest.raises(RetryExhaustedError, match=r"failed 3 time\(s\); last failure: EXT001 GET /v1/a: HTTP 502"):
        transport(Script(status(502)), attempts=3).request("GET", "http://x/v1/a")


@pytest.mark.parametrize("code", [401, 403])
def test_auth_failures_are_auth001_and_never_retried(code: int) -> None:
    script = Script(status(code))
    with pytest.raises(AuthError):
        transport(script).request("GET", "http://x/v1/a")
    assert script.calls == 1


@pytest.mark.parametrize("code", [400, 404, 409, 422])
def test_other_client_errors_go_back_to_the_caller_unretried(code: int) -> None:
    script = Script(status(code))
    assert transport(script).request("GET", "http://x/v1/a").status == code
    assert script.calls == 1


def test_a_quota_reset_far_away_ends_the_run_instead_of_sleeping() -> None:
    with pytest.raises(RetryExhaustedError, match="quota is exhausted"):
        transport(Script(status(429, retry_after="86400"))).request("GET", "http://x/v1/a")


def test_the_breaker_opens_after_consecutive_failures_and_stops_calls() -> None:
    script = Script(status(500))
    api = transport(script, attempts=2, failures=3)
    for _ in range(2):
        with pytest.raises(RetryExhaustedError):
            api.request("GET", "http://x/v1/a")
    assert api.guard.openings == 1
    calls = script.calls
    with pytest.raises(RetryExhaustedError, match="circuit breaker open"):
        api.request("GET", "http://x/v1/a")
    assert script.calls == calls  # nothing was sent while open


def test_throttling_does_not_open_the_breaker() -> None:
    api = transport(Script(status(429, retry_after="0"), status(429, retry_after="0"), ok()), failures=2)
    assert api.request("GET", "http://x/v1/a").status == 200
    assert api.guard.openings == 0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"x-hubspot-ratelimit-remaining": "0", "x-hubspot-ratelimit-interval-milliseconds": "10000"}, 10.0),
        ({"x-hubspot-ratelimit-secondly-remaining": "0"}, 1.0),
        ({}, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(HttpResponse(429, headers, b"")) == seconds


def test_a_bucket_is_shared_by_the_threads_of_a_credential_and_paces_them() -> None:
    registry = LimiterRegistry(redis_url="")
    settings = RateLimitSettings(rps=20, burst=5)
    first = registry.bucket(credential_fingerprint("key-a"), "default", settings)
    assert registry.bucket(credential_fingerprint("key-a"), "default", settings) is first
    assert registry.bucket(credential_fingerprint("key-b"), "default", settings) is not first
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [first.acquire() for _ in range(5)]) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 15 tokens: 5 at once, then 10 at 20/s: at least ~0.5 s
    assert time.monotonic() - started >= 0.4


def test_the_rate_can_be_overridden_by_the_environment() -> None:
    assert effective_limit(RateLimitSettings(rps=25, burst=25), {"DATIVO_API_RPS": "5"}).rps == 5
    assert effective_limit(RateLimitSettings(rps=25, burst=20), {"DATIVO_API_RPS": "90"}).rps == 90
    # a vendor's endpoint bucket (HubSpot's search) is capped, never raised
    assert effective_limit(RateLimitSettings(rps=4.7, burst=1), {"DATIVO_API_RPS": "90"}, bucket="search").rps == 4.7
    assert effective_limit(RateLimitSettings(rps=4.7, burst=1), {"DATIVO_API_RPS": "2"}, bucket="search").rps == 2
    with pytest.raises(ConfigError):
        effective_limit(RateLimitSettings(rps=25), {"DATIVO_API_RPS": "fast"})


# ----------------------------------------------------------------------------- paginators


def test_starting_after() -> None:
    page = starting_after({"data": [{"id": "a"}, {"id": "b"}], "has_more": True}, where="w")
    assert page == Page([{"id": "a"}, {"id": "b"}], "b")
    assert starting_after({"data": [], "has_more": False}, where="w").next_token is None
    with pytest.raises(PaginationError, match="lacks the required field"):
        starting_after({"data": [{"x": 1}], "has_more": False}, where="w")
    with pytest.raises(PaginationError, match="'has_more'"):
        starting_after({"data": []}, where="w")


def test_next_after_and_page_token_and_offset() -> None:
    assert next_after({"results": [{"id": "1"}], "paging": {"next": {"after": "2"}}}, where="w").next_token == "2"
    assert next_after({"results": [{"id": "1"}]}, where="w").next_token is None
    assert page_token({"files": [{"id": 1}], "nextPageToken": "t"}, where="w", data_key="files").next_token == "t"
    assert (
        next_offset(0, 100, 100) == 100
        and next_offset(100, 100, 40) is None
        and next_offset(0, 10, 10, total=10) is None
    )


def test_a_body_that_is_not_json_is_page001() -> None:
    with pytest.raises(PaginationError, match="not valid JSON"):
        parse_json_object(b'{"data": [', where="acme/j/o page 3")
    with pytest.raises(PaginationError, match="not an object"):
        parse_json_object(b"[1]", where="w")


def test_paginate_follows_tokens_and_stops_loops_and_runaways() -> None:
    pages = {None: Page([{"id": 1}], "a"), "a": Page([{"id": 2}], "b"), "b": Page([{"id": 3}], None)}
    assert [i for items in paginate(lambda t, n: pages[t], where="w") for i in items] == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
    ]
    looping = {None: Page([{"id": 1}], "a"), "a": Page([{"id": 2}], "a")}
    with pytest.raises(PaginationError, match="cursor loop"):
        list(paginate(lambda t, n: looping[t], where="w"))
    with pytest.raises(PaginationError, match="more than 2 pages"):
        list(paginate(lambda t, n: pages[t], where="w", max_pages=2))


def test_requests_of_one_credential_run_in_parallel() -> None:
    both_in_flight = threading.Barrier(2, timeout=10)

    def sender(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float) -> HttpResponse:
        both_in_flight.wait()  # returns only when two requests are inside the sender at once
        return ok()

    api = transport(Script(ok()))
    api.sender = sender
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(api.request("GET", "http://x/a").status)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200, 200]


def test_the_breaker_half_opens_after_its_cooldown_and_closes_on_success(monkeypatch: pytest.MonkeyPatch) -> None:
    import dativo_dagster.api.transport as transport_module

    now = [1000.0]
    monkeypatch.setattr(transport_module.time, "monotonic", lambda: now[0])
    script = Script(status(500), status(500), status(500), ok())
    api = transport(script, attempts=1, failures=3)
    for _ in range(3):
        with pytest.raises(RetryExhaustedError):
            api.request("GET", "http://x/a")
    assert api.guard.state == "open"
    with pytest.raises(RetryExhaustedError, match="circuit breaker open"):
        api.request("GET", "http://x/a")
    now[0] += 31  # past the 30 s cooldown: one probe goes through and succeeds
    assert api.request("GET", "http://x/a").status == 200
    assert api.guard.state == "closed" and api.guard.openings == 1


def test_errors_carry_the_failing_request_and_observers_see_every_exchange() -> None:
    from dativo_dagster.api.transport import Exchange, TransportFailure

    secret = "sk_test_observed_secret_value_123"
    seen: list[Exchange] = []
    wire = transport(
        Script(ok(b'{"ok": true}'), HttpResponse(401, {}, f'{{"error": "bad key {secret}"}}'.encode())), attempts=1
    )
    wire.observers.append(seen.append)
    wire._redact = (secret,)
    wire.request("GET", f"http://x/v1/charges?key={secret}", headers={"Authorization": f"Bearer {secret}", "A": "b"})
    with pytest.raises(AuthError) as refused:
        wire.request("GET", "http://x/v1/customers")
    request = refused.value.context["request"]
    assert request["method"] == "GET" and request["path"] == "/v1/customers" and request["status"] == 401
    assert secret not in str(request) and "bad key" in str(request["response_excerpt"])
    assert [e.status for e in seen] == [200, 401]
    assert secret not in seen[0].url and "authorization" not in {k.lower() for k in seen[0].request_headers}
    assert seen[0].request_headers == {"A": "b"}

    down = transport(Script(TransportFailure("connection refused")), attempts=2)
    with pytest.raises(RetryExhaustedError) as exhausted:
        down.request("GET", "http://x/v1/charges")
    assert exhausted.value.context["request"]["failure"] == "connection refused"
    assert exhausted.value.context["request"]["status"] is None
