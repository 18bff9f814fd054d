"""The emulators as benchmark subprocesses: start-up, limits under load, the admin API across processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fakes.server import AdminClient, ServerProcess

pytestmark = pytest.mark.slow

KEY = "sk_test_dativo_bench"


def test_stripe_process_for_benchmarks() -> None:
    started = time.monotonic()
    args = ["--port", "0", "--latency-ms", "50", "--rps", "25", "--burst", "25"]
    args += ["--charges", "50000", "--customers", "20000", "--keys", f"{KEY},sk_test_dativo_bench_2"]
    with ServerProcess("tests.fakes.stripe_api", args) as proc:
        ready = time.monotonic() - started
        assert ready < 20, f"a 50,000-charge account took {ready:.1f}s to be served"
        admin = AdminClient(proc.url)
        assert admin.health()["api"] == "stripe"
        admin.reset_stats()
        session = requests.Session()
        headers = {"Authorization": f"Bearer {KEY}"}

        def fetch(_: int) -> int:
            return session.get(f"{proc.url}/v1/charges", params={"limit": 1}, headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(fetch, range(48)))
        assert codes.count(200) >= 25 and codes.count(429) > 0
        stats = admin.stats()
        assert stats["by_status"]["429"] == codes.count(429) == len(stats["throttled"])
        assert all(0 <= event["t"] < 30 and event["key"] == KEY for event in stats["throttled"])
        other = session.get(
            f"{proc.url}/v1/charges", headers={"Authorization": "Bearer sk_test_dativo_bench_2"}, timeout=10
        )
        assert other.status_code == 200  # the second account's bucket is untouched
        admin.configure(limits={"default": None})
        customer = session.get(f"{proc.url}/v1/customers", params={"limit": 1}, headers=headers, timeout=10).json()
        cid = customer["data"][0]["id"]
        admin.advance_clock(60)
        changed = admin.call("update_object", key=KEY, resource="customers", obj_id=cid, email="bench@example.com")
        assert changed["email"] == "bench@example.com"
        events = session.get(f"{proc.url}/v1/events", params={"type": "customer.updated"}, headers=headers, timeout=10)
        assert events.json()["data"][0]["data"]["object"]["id"] == cid
        admin.inject("status", status=502, path="/v1/charges")
        assert session.get(f"{proc.url}/v1/charges", headers=headers, timeout=10).status_code == 502
        session.close()
    assert proc.proc is not None and proc.proc.poll() is not None


def test_hubspot_process_for_benchmarks() -> None:
    args = ["--port", "0", "--contacts", "3000", "--token", "pat-na1-bench", "--ten-secondly", "5"]
    with ServerProcess("tests.fakes.hubspot_api", args) as proc:
        headers = {"Authorization": "Bearer pat-na1-bench"}
        codes = [
            requests.get(f"{proc.url}/crm/v3/objects/contacts", headers=headers, timeout=10).status_code
            for _ in range(6)
        ]
        assert codes == [200] * 5 + [429]
        assert AdminClient(proc.url).stats()["throttled"][0]["policy"] == "TEN_SECONDLY_ROLLING"
