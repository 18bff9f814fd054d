"""The emulators' shared core: limiters, clock, faults, counters, admin API and shutdown."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.fakes.server import (
    AdminClient,
    DailyQuota,
    Emulator,
    FakeClock,
    Fault,
    Limit,
    RateLimiter,
    Request,
    Response,
    RollingWindow,
    TokenBucket,
    wait_until,
)


class EchoEmulator(Emulator):
    """A minimal vendor: ``GET /items`` lists three items; bearer ``good`` is the only key."""

    name = "echo"
    list_key = "items"
    admin_methods = frozenset({"echo"})

    def echo(self, value: str) -> str:
        """Whitelisted admin method."""
        return value.upper()

    def error_response(self, status: int, req: Request) -> Response:
        """Vendor error body."""
        return Response(status, {"error": {"status": status}})

    def handle(self, req: Request) -> Response:
        """Route."""
        if req.bearer() != "good":
            return Response(401, {"error": "bad key"})
        decisions = self.limiter.check(req.bearer() or "-", "default")
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is not None:
            return Response(
                429, {"error": "slow down"}, headers={"Retry-After": str(max(1, round(refused.retry_after)))}
            )
        return Response(200, {"items": [{"id": i, "name": f"n{i}"} for i in range(3)], "path": req.path})


@pytest.fixture
def echo() -> Iterator[tuple[EchoEmulator, str]]:
    emu = EchoEmulator()
    with emu.serve() as server:
        yield emu, server.url


AUTH = {"Authorization": "Bearer good"}


def test_token_bucket_allows_burst_then_reports_wait() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    now = time.monotonic()
    assert [bucket.try_acquire(now).allowed for _ in range(4)] == [True, True, True, False]
    refused = bucket.try_acquire(now)
    assert refused.retry_after == pytest.approx(0.1, abs=0.01)
    assert bucket.try_acquire(now + 0.11).allowed


def test_rolling_window_and_daily_quota() -> None:
    window = RollingWindow(limit=2, window=10.0, name="TEN_SECONDLY_ROLLING")
    assert window.try_acquire(100.0).allowed and window.try_acquire(101.0).allowed
    refused = window.try_acquire(102.0)
    assert not refused.allowed and refused.retry_after == pytest.approx(8.0)
    assert window.try_acquire(110.5).allowed
    day = [86400.0 * 3 + 10]
    quota = DailyQuota(2, clock=lambda: day[0])
    assert quota.try_acquire(0).allowed and quota.try_acquire(0).allowed
    assert not quota.try_acquire(0).allowed
    day[0] += 86400
    assert quota.try_acquire(0).allowed


def test_limiter_counts_nothing_when_refused() -> None:
    limiter = RateLimiter({"default": Limit(rps=1, burst=2), "search": Limit(rps=1, kind="rolling", window=1.0)})
    quota = DailyQuota(100)
    assert all(d.allowed for d in limiter.check("k", "default", extra=[quota]))
    assert all(d.allowed for d in limiter.check("k", "default", extra=[quota]))
    assert not all(d.allowed for d in limiter.check("k", "default", extra=[quota]))
    assert quota.peek(0).remaining == 98  # the refused request was not charged to the day
    assert all(d.allowed for d in limiter.check("other", "default"))  # per key
    assert all(d.allowed for d in limiter.check("k", "search"))  # per class


def test_fake_clock() -> None:
    frozen = FakeClock(1_000_000, frozen=True)
    assert frozen.now() == 1_000_000
    assert frozen.advance(60) == 1_000_060
    running = FakeClock(5_000)
    before = running.now()
    running.advance(3600)
    assert running.now() >= before + 3600


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
    with pytest.raises(ValueError, match="needs a status"):
        Fault("status")
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"kind": "reset", "colour": "red"})


def test_status_faults_over_admin_http(echo: tuple[EchoEmulator, str]) -> None:
    emu, url = echo
    admin = AdminClient(url)
    assert admin.health() == {"ok": True, "api": "echo"}
    pending = admin.inject("status", count=2, status=503, path="/items")
    assert pending[0]["count"] == 2
    with requests.Session() as s:
        assert s.get(url + "/other", headers=AUTH).status_code == 200  # path does not match
        assert [s.get(url + "/items", headers=AUTH).status_code for _ in range(3)] == [503, 503, 200]
    assert admin.stats()["faults_fired"] == {"status": 2}
    admin.clear_faults()
    assert emu.pending_faults() == []


def test_payload_faults(echo: tuple[EchoEmulator, str]) -> None:
    emu, url = echo
    with requests.Session() as s:
        emu.inject("truncated")
        resp = s.get(url + "/items", headers=AUTH)
        assert resp.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(resp.content)
        emu.inject("malformed_json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(s.get(url + "/items", headers=AUTH).content)
        emu.inject("missing_field", field="name")
        items = s.get(url + "/items", headers=AUTH).json()["items"]
        assert "name" not in items[0] and items[1]["name"] == "n1"
        assert s.get(url + "/items", headers=AUTH).json()["items"][0]["name"] == "n0"


def test_transport_faults(echo: tuple[EchoEmulator, str]) -> None:
    emu, url = echo
    emu.inject("reset")
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/items", headers=AUTH, timeout=5)
    emu.inject("short_read")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        requests.get(url + "/items", headers=AUTH, timeout=5)
    emu.inject("hang", seconds=30)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url + "/items", headers=AUTH, timeout=0.3)
    assert time.monotonic() - started < 5
    assert requests.get(url + "/items", headers=AUTH, timeout=5).status_code == 200
    # reset and hang were never answered (status 0); the hang ends once the client hangs up
    wait_until(lambda: emu.stats.status_count(0) == 2, timeout=5)


def test_hang_ends_when_the_server_stops() -> None:
    emu = EchoEmulator()
    emu.inject("hang", seconds=120)
    outcome: list[str] = []
    with emu.serve() as server:

        def call() -> None:
            try:
                requests.get(server.url + "/items", headers=AUTH, timeout=60)
                outcome.append("answered")
            except requests.RequestException as exc:
                outcome.append(type(exc).__name__)

        thread = threading.Thread(target=call)
        thread.start()
        wait_until(lambda: emu.stats.faults_fired().get("hang") == 1, timeout=5)
        started = time.monotonic()
    thread.join(timeout=10)
    assert time.monotonic() - started < 5 and outcome and outcome[0] != "answered"


def test_rate_limit_and_throttle_timestamps(echo: tuple[EchoEmulator, str]) -> None:
    emu, url = echo
    admin = AdminClient(url)
    config = admin.configure(limits={"default": {"rps": 1, "burst": 3}})
    assert config["limits"]["default"][0]["burst"] == 3
    admin.reset_stats()
    with requests.Session() as s:
        codes = [s.get(url + "/items", headers=AUTH) for _ in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
    assert codes[3].headers["Retry-After"] == "1"
    stats = admin.stats()
    assert stats["by_status"] == {"200": 3, "429": 2}
    assert stats["by_key"] == {"good": 5}
    assert len(stats["throttled"]) == 2 and all(e["t"] >= 0 for e in stats["throttled"])
    assert emu.stats.throttled(after=3600) == []
    assert emu.stats.count(key="good", path="/items") == 5


def test_latency_and_admin_calls(echo: tuple[EchoEmulator, str]) -> None:
    emu, url = echo
    admin = AdminClient(url)
    admin.configure(latency_ms=150)
    started = time.monotonic()
    requests.get(url + "/items", headers=AUTH, timeout=5)
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    admin.health()  # the admin API is not delayed
    assert time.monotonic() - started < 0.15
    assert admin.call("echo", value="hi") == "HI"
    with pytest.raises(Exception, match="404"):
        admin.call("handle", req=None)
    assert admin.advance_clock(10) >= emu.clock.now() - 1
    assert emu.request_log[-1].path == "/items"


def test_stop_closes_keepalive_connections_and_frees_the_port() -> None:
    emu = EchoEmulator()
    session = requests.Session()
    with emu.serve() as server:
        assert session.get(server.url + "/items", headers=AUTH).status_code == 200
        port = server.port
    session.close()
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))
    probe.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/items", headers=AUTH, timeout=2)
