"""One credential's token bucket shared by several processes through Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from dativo_dagster.api.limits import LimiterRegistry, RateLimitSettings

CHILD = """
import json, sys, time
from dativo_dagster.api.limits import LimiterRegistry, RateLimitSettings
registry = LimiterRegistry(redis_url=sys.argv[1])
bucket = registry.bucket(sys.argv[2], "default", RateLimitSettings(rps=20, burst=5))
print("ready", flush=True)
sys.stdin.readline()  # start together
stamps = []
for _ in range(int(sys.argv[3])):
    bucket.acquire()
    stamps.append(time.time())
print(json.dumps(stamps), flush=True)
"""


def _take_together(redis_url: str, fingerprints: list[str], tokens: int) -> list[float]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, fingerprint, str(tokens)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for fingerprint in fingerprints
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    stamps: list[float] = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        stamps.extend(json.loads(out.strip().splitlines()[-1]))
    return sorted(stamps)


def _max_in_any_second(stamps: list[float]) -> int:
    return max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps)


def test_two_processes_with_one_credential_share_its_limit(redis_url: str) -> None:
    fingerprint = "test-" + uuid.uuid4().hex[:12]
    stamps = _take_together(redis_url, [fingerprint, fingerprint], tokens=30)
    # 60 tokens at 20/s with a burst of 5: together they can never exceed 25 in one second.
    assert _max_in_any_second(stamps) <= 25
    assert stamps[-1] - stamps[0] >= (60 - 5) / 20 - 0.3


def test_different_credentials_do_not_share(redis_url: str) -> None:
    stamps = _take_together(redis_url, ["a-" + uuid.uuid4().hex, "b-" + uuid.uuid4().hex], tokens=20)
    # each has its own 20/s: together they do twice the work of one in the same time
    assert stamps[-1] - stamps[0] < (40 - 10) / 20


def test_without_redis_a_bucket_is_shared_by_threads_only() -> None:
    registry = LimiterRegistry(redis_url="")
    bucket = registry.bucket("k", "default", RateLimitSettings(rps=50, burst=50))
    assert not bucket.shared
    started = time.monotonic()
    for _ in range(50):
        bucket.acquire()
    assert time.monotonic() - started < 0.5
