"""API sources → Iceberg: achieved request rate against the vendor's limit, 429s, wall time, memory.

Each measurement runs ``dativo run TENANT/JOB`` in a subprocess (wall time and peak RSS of its
process tree, sampled every 20 ms) against a local emulator started as a subprocess, on a
throw-away project (temp dir) holding the shipped recipe and contracts of the source:

* **Stripe**: the emulator at 50 ms latency and 25 req/s (burst 25) per key, with 50,000 charges
  and 20,000 customers; one job loads both objects (full backfill, ``max_workers: 2``, so both
  objects page at once on the one key, sharing its token bucket).
* **HubSpot**: contacts (default 25,000) read through the search endpoint, which the emulator
  limits to 5 requests per second per token (the rolling one-second window HubSpot applies),
  at the same 50 ms latency.
* **Shared**: two ``dativo run`` processes (two projects, the same job) with the SAME Stripe key,
  started together with ``DATIVO_RATE_LIMIT_URL`` (the key's bucket lives in Redis); then, as
  the reference that shows the problem, the same two processes without it (each process has its
  own bucket, so together they may offer up to twice the limit and are throttled).

The emulator counts requests per key and stamps every 429; the benchmark polls its counters
(``/__fake__/stats``, every 20 ms until a run's first request, then every 50 ms), so each figure is
computed over the window the requests actually span, from the first request of the run(s) to
the last one (each end known to within half a polling interval):

* ``*_rate_fraction``: (requests - 1) / (last - first) / the limit. Every request the emulator
  received for the key counts, 429s included (for HubSpot: search requests only);
  ``*_served_fraction`` counts only the requests answered 200. A limiter honouring a bucket that
  starts full may pass ``burst`` requests more than ``limit x window``: ``*_net_of_burst_fraction``
  subtracts those 25 (for the shared runs this is the figure that must stay at or below 1).
* ``*_429s_after_first_s``: 429s stamped one second or more after the run's first request;
  ``*_429_at_s`` lists when the first ten came, in seconds after that first request.
* ``*_s``: wall time of the ``dativo run`` process (interpreter start, Dagster run, commits).
* ``*_throttled_s``: seconds dativo's requests waited for its own bucket (its processing summary).
* ``peak_rss_mb``: the largest peak RSS of any one ``dativo run`` process of the benchmark.

Rows: the Stripe tables must hold exactly the seeded objects (distinct ids), the HubSpot table
every live contact (the emulator's search total, asked after the run); anything else ends the
benchmark with an error. Emulated objects are stamped up to an hour before the run, so none falls
inside a source's settle lag (the newest minutes a run leaves to the next one).

Targets: rate fractions >= 0.9 (the shared one <= 1), no 429 after the first second, peak RSS
<= 300 MB.

Run: ``python benchmarks/api_extract.py [--quick] [--skip-shared] [--contacts N] [--redis-url URL]``
(``--quick``: 5,000 charges, 2,000 customers, 2,000 contacts). The shared runs need Redis
(default ``redis://127.0.0.1:6379/0``). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Measured, run_measured

sys.path.insert(0, str(REPO))
from tests.fakes.server import ServerProcess

STRIPE_RPS = 25
STRIPE_BURST = 25
LATENCY_MS = 50
HUBSPOT_SEARCH_RPS = 5
RATE_TARGET = 0.9
RSS_TARGET_MB = 300
SEEDED_BEFORE_S = 3_600
"""Emulated data ends this long before now: older than any source's settle lag."""

STRIPE_KEYS = {"solo": "sk_test_bench_solo", "redis": "sk_test_bench_shared", "local": "sk_test_bench_unshared"}
"""One emulated account per measurement, so no measurement inherits another's bucket state."""
HUBSPOT_TOKEN = "pat-na1-bench0000-0000-4000-8000-000000000001"
TARGET = "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
ENV_DROPPED = ("DAGSTER_HOME", "DATIVO_HOME", "DATIVO_RATE_LIMIT_URL", "DATIVO_API_RPS")
"""Variables of the caller's environment that would change what is measured."""
EMULATORS: set[int] = set()
"""Pids of the running emulators (stopped by :meth:`Bench.close`, not by the SIGTERM handler)."""


@dataclass(frozen=True)
class Sizes:
    """Seeded data of one benchmark run."""

    charges: int
    customers: int
    contacts: int


FULL = Sizes(charges=50_000, customers=20_000, contacts=25_000)
QUICK = Sizes(charges=5_000, customers=2_000, contacts=2_000)


# --------------------------------------------------------------------------------------------
# the emulator's counters, polled


@dataclass
class Window:
    """The requests one measurement made, as the emulator counted them.

    Attributes:
        requests: Requests received (429s included).
        throttled: Server times (seconds since the emulator's counters started) of the 429s.
        first_s: Server time of the first request (midpoint of the polls around it).
        last_s: Server time of the last request.
        resolution_s: Largest polling interval around either end.
    """

    requests: int
    throttled: list[float]
    first_s: float
    last_s: float
    resolution_s: float

    @property
    def span_s(self) -> float:
        """Seconds from the first request to the last."""
        return self.last_s - self.first_s

    def rate(self, discount: int = 0) -> float:
        """Requests per second over the span (intervals between requests / span), less ``discount`` requests."""
        return (self.requests - 1 - discount) / self.span_s if self.span_s > 0 else float("nan")

    def served_rate(self) -> float:
        """Requests answered (not 429) per second over the span."""
        return self.rate(discount=len(self.throttled))

    def throttled_after(self, seconds: float = 1.0) -> int:
        """429s stamped ``seconds`` or more after the first request."""
        return sum(1 for t in self.throttled if t >= self.first_s + seconds)

    def throttled_at(self, most: int = 10) -> list[float]:
        """Seconds from the first request to each of the first ``most`` 429s."""
        return [round(t - self.first_s, 2) for t in self.throttled[:most]]


Counter = Callable[[dict[str, Any]], int]


def key_requests(key: str, path_suffix: str | None = None) -> Counter:
    """A counter of the requests of ``key`` (optionally only paths ending in ``path_suffix``)."""

    def count(snapshot: dict[str, Any]) -> int:
        return sum(
            int(row["count"])
            for row in snapshot["by_key_path"]
            if row["key"] == key and (path_suffix is None or row["path"].endswith(path_suffix))
        )

    return count


class StatsPoller:
    """Polls an emulator's ``/__fake__/stats`` on one keep-alive connection in a thread.

    Each counter's value is kept with the server time of every poll at which it changed, so a
    measurement knows when its first and last requests were counted, to within a poll.

    Args:
        url: The emulator's base URL.
        counters: Name → function of a stats snapshot returning a request count.
        fast_s: Polling interval until every counter has moved.
        slow_s: Polling interval afterwards.
    """

    def __init__(self, url: str, counters: dict[str, Counter], fast_s: float = 0.02, slow_s: float = 0.05) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._counters = counters
        self._fast_s, self._slow_s = fast_s, slow_s
        self._connection: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._baseline: dict[str, int] = {}
        self._start_s = 0.0
        self._changes: dict[str, list[tuple[float, float, int]]] = {name: [] for name in counters}
        self._last: dict[str, tuple[float, int]] = {}
        self.snapshot: dict[str, Any] = {}
        self.error: BaseException | None = None

    def _fetch(self) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(*self._address, timeout=10)
                self._connection.request("GET", "/__fake__/stats")
                response = self._connection.getresponse()
                return dict(json.loads(response.read()))
            except (OSError, http.client.HTTPException):
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _sample(self) -> None:
        snapshot = self._fetch()
        now = float(snapshot["uptime_s"])
        for name, counter in self._counters.items():
            value = counter(snapshot) - self._baseline[name]
            before_s, before = self._last[name]
            if value != before:
                self._changes[name].append((before_s, now, value))
            self._last[name] = (now, value)
        self.snapshot = snapshot

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._sample()
                moving = all(self._changes[name] for name in self._counters)
                self._stop.wait(self._slow_s if moving else self._fast_s)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> StatsPoller:
        """Read the counters' starting values and start polling."""
        snapshot = self._fetch()
        self._baseline = {name: counter(snapshot) for name, counter in self._counters.items()}
        self._start_s = float(snapshot["uptime_s"])
        self._last = dict.fromkeys(self._counters, (self._start_s, 0))
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling after one last poll."""
        self._stop.set()
        self._thread.join()
        try:
            if self.error is not None:
                raise RuntimeError(f"polling the emulator failed: {self.error}") from self.error
            self._sample()
        finally:
            if self._connection is not None:
                self._connection.close()

    def window(self, name: str, key: str, path_suffix: str | None = None, since: str | None = None) -> Window:
        """The requests counted by ``name``, and the 429s of ``key`` (paths ending in ``path_suffix``).

        Args:
            name: The counter.
            key: Whose 429s count.
            path_suffix: Only 429s of these paths.
            since: Another counter whose first request, if earlier, starts the "after the first
                second" clock (default: ``name``'s own first request).
        """
        changes = self._changes[name]
        if not changes:
            raise RuntimeError(f"the emulator received no request for {name}")
        first_before, first_after, _ = changes[0]
        last_before, last_after, total = changes[-1]
        first_s = (first_before + first_after) / 2
        if since is not None and self._changes[since]:
            before, after, _ = self._changes[since][0]
            first_s = min(first_s, (before + after) / 2)
        throttled = [
            float(entry["t"])
            for entry in self.snapshot["throttled"]
            if entry["key"] == key
            and (path_suffix is None or entry["path"].endswith(path_suffix))
            and float(entry["t"]) >= self._start_s
        ]
        return Window(
            requests=total,
            throttled=throttled,
            first_s=first_s,
            last_s=(last_before + last_after) / 2,
            resolution_s=max(first_after - first_before, last_after - last_before),
        )


@contextlib.contextmanager
def polling(url: str, counters: dict[str, Counter]) -> Iterator[StatsPoller]:
    """Poll ``url``'s counters for the duration of the block."""
    poller = StatsPoller(url, counters).start()
    try:
        yield poller
    finally:
        poller.stop()


# --------------------------------------------------------------------------------------------
# projects and runs


def stripe_project(root: Path, url: str, tenant: str) -> Path:
    """A project whose job ``<tenant>/payments`` backfills charges and customers from ``url``."""
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / f"tenants/{tenant}/jobs").mkdir(parents=True)
    shutil.copy(REPO / "connectors/sources/stripe.yaml", root / "connectors/sources/stripe.yaml")
    shutil.copytree(REPO / "connectors/schemas/stripe", root / "connectors/schemas/stripe")
    (root / "connectors/targets/local.yaml").write_text(TARGET)
    (root / "runner.yaml").write_text(yaml.safe_dump({"version": 1, "jobs": [{"tenant": tenant, "job": "payments"}]}))
    job = {
        "tenant": tenant,
        "name": "payments",
        "source": {"recipe": "stripe", "connection": {"base_url": url}, "credentials": {"api_key": "${STRIPE_KEY}"}},
        "target": {"recipe": "local"},
        "max_workers": 2,
        "objects": [
            {
                "name": name,
                "contract": {"name": f"stripe/{name}", "version": 1},
                "incremental": {"strategy": "created", "cursor_field": "created"},
            }
            for name in ("charges", "customers")
        ],
    }
    (root / f"tenants/{tenant}/jobs/payments.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return root


def hubspot_project(root: Path, url: str) -> Path:
    """A project whose job ``crm/contacts`` backfills contacts from ``url`` through the search endpoint."""
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "connectors/schemas/hubspot").mkdir(parents=True)
    (root / "tenants/crm/jobs").mkdir(parents=True)
    shutil.copy(REPO / "connectors/sources/hubspot.yaml", root / "connectors/sources/hubspot.yaml")
    shutil.copy(
        REPO / "connectors/schemas/hubspot/contacts.v1.yaml", root / "connectors/schemas/hubspot/contacts.v1.yaml"
    )
    (root / "connectors/targets/local.yaml").write_text(TARGET)
    (root / "runner.yaml").write_text(yaml.safe_dump({"version": 1, "jobs": [{"tenant": "crm", "job": "contacts"}]}))
    job = {
        "tenant": "crm",
        "name": "contacts",
        "source": {
            "recipe": "hubspot",
            "connection": {"base_url": url},
            "credentials": {"access_token": "${HUBSPOT_TOKEN}"},
        },
        "target": {"recipe": "local"},
        "objects": [
            {
                "name": "contacts",
                "contract": {"name": "hubspot/contacts", "version": 1},
                "incremental": {"strategy": "updated", "cursor_field": "lastmodifieddate"},
            }
        ],
    }
    (root / "tenants/crm/jobs/contacts.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return root


@dataclass
class Run:
    """One ``dativo run`` process: its measurement and processing summary."""

    label: str
    measured: Measured
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Exit code 0."""
        return self.measured.returncode == 0

    def total(self, name: str) -> float:
        """A total of the processing summary (0 when absent)."""
        return float(self.summary.get("totals", {}).get(name, 0) or 0)


def dativo_command() -> list[str]:
    """The ``dativo`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "dativo"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from dativo_dagster.cli import main; main()"]


def run_dativo(project: Path, job: str, variables: dict[str, str]) -> Run:
    """``dativo run JOB`` in ``project`` with ``variables`` set (and nothing of ours that changes it)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env.update(variables)
    summary_file = project / "summary.json"
    command = [*dativo_command(), "--project", str(project), "run", job, "--summary-json", str(summary_file)]
    measured = run_measured(command, env=env, cwd=project)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return Run(job, measured, summary)


def require_ok(run: Run) -> None:
    """Raise with the run's output if it did not succeed."""
    if not run.ok:
        raise RuntimeError(
            f"dativo run {run.label} exited {run.measured.returncode}:\n{run.measured.stdout[-3000:]}\n"
            f"{run.measured.stderr[-3000:]}"
        )


def table_ids(project: Path, job: str, name: str) -> tuple[int, int]:
    """``(rows, distinct ids)`` of an object's Iceberg table."""
    import pyarrow.compute as pc

    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.iceberg.catalog import build_catalog
    from dativo_dagster.iceberg.writer import IcebergWriter

    plan = load_plan(project).job(job)
    writer = IcebergWriter(build_catalog(plan.target, SecretResolver({}), project))
    table = writer.load_table(*plan.object(name).table_identifier)
    if table is None:
        return 0, 0
    ids = table.scan(selected_fields=("id",)).to_arrow()["id"]
    return len(ids), int(pc.count_distinct(ids).as_py())


def row_problems(project: Path, job: str, expected: dict[str, int]) -> list[str]:
    """What differs from each object's table holding exactly ``expected`` distinct ids, once each."""
    problems = []
    for name, count in expected.items():
        rows, distinct = table_ids(project, job, name)
        if rows != count or distinct != count:
            problems.append(
                f"{job} {name}: expected {count:,} rows, the table holds {rows:,} ({distinct:,} distinct ids)"
            )
    return problems


def check_rows(project: Path, job: str, expected: dict[str, int]) -> None:
    """Raise unless each object's table holds exactly ``expected`` distinct ids, once each."""
    problems = row_problems(project, job, expected)
    if problems:
        raise RuntimeError("; ".join(problems))


# --------------------------------------------------------------------------------------------
# the measurements


class Bench:
    """Emulators, temp dirs and figures of one benchmark run (everything is released by :meth:`close`)."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.stack = contextlib.ExitStack()
        self.root = Path(tempfile.mkdtemp(prefix="dativo-bench-api-"))
        self.stack.callback(shutil.rmtree, self.root, ignore_errors=True)
        self.peak_rss_mb = 0.0
        self.figures: dict[str, Any] = {}
        self.redis_prefixes: list[str] = []

    def close(self) -> None:
        """End any ``dativo run`` left running, stop the emulators, remove the temp dirs."""
        try:
            end_children(keep=EMULATORS)
        finally:
            self.stack.close()

    def serve(self, module: str, args: list[str]) -> str:
        """Start an emulator subprocess (stopped by :meth:`close`); its base URL."""
        server = ServerProcess(module, args, startup_timeout=180)
        self.stack.callback(server.stop)
        server.start()
        if server.proc is not None:
            EMULATORS.add(server.proc.pid)
        return server.url

    def project(self, name: str) -> Path:
        """A fresh directory for a project."""
        path = self.root / name
        path.mkdir()
        return path

    def record(self, *runs: Run) -> None:
        """Keep the largest peak RSS."""
        self.peak_rss_mb = max(self.peak_rss_mb, *(run.measured.peak_rss_mb for run in runs))

    def seeded(self) -> dict[str, int]:
        """Rows each Stripe table must hold."""
        return {"charges": self.sizes.charges, "customers": self.sizes.customers}

    def stripe_emulator(self, keys: list[str]) -> str:
        """The Stripe emulator: 50 ms latency, 25 req/s (burst 25) per key, one seeded account per key."""
        return self.serve(
            "tests.fakes.stripe_api",
            [
                "--port", "0", "--latency-ms", str(LATENCY_MS), "--rps", str(STRIPE_RPS), "--burst", str(STRIPE_BURST),
                "--charges", str(self.sizes.charges), "--customers", str(self.sizes.customers),
                "--keys", ",".join(keys), "--now", str(int(time.time()) - SEEDED_BEFORE_S),
            ],
        )  # fmt: skip

    def stripe(self, url: str) -> None:
        """One job, charges and customers at once on one key."""
        key = STRIPE_KEYS["solo"]
        project = stripe_project(self.project("stripe"), url, "acme")
        with polling(url, {"requests": key_requests(key)}) as poller:
            run = run_dativo(project, "acme/payments", {"STRIPE_KEY": key})
        require_ok(run)
        self.record(run)
        check_rows(project, "acme/payments", self.seeded())
        window = poller.window("requests", key)
        fraction = window.rate() / STRIPE_RPS
        self.figures.update(
            stripe_rate_fraction=round(fraction, 3),
            stripe_net_of_burst_fraction=round(window.rate(discount=STRIPE_BURST) / STRIPE_RPS, 3),
            stripe_429s_after_first_s=window.throttled_after(),
            stripe_429s=len(window.throttled),
            stripe_429_at_s=window.throttled_at(),
            stripe_s=round(run.measured.seconds, 2),
            stripe_requests=window.requests,
            stripe_api_calls=int(run.total("api_calls")),
            stripe_request_span_s=round(window.span_s, 2),
            stripe_rows=sum(self.seeded().values()),
            stripe_throttled_s=round(run.total("throttled_s"), 1),
            stripe_peak_rss_mb=round(run.measured.peak_rss_mb, 1),
        )
        print(
            f"Stripe: {self.sizes.charges:,} charges + {self.sizes.customers:,} customers in "
            f"{run.measured.seconds:.1f} s; {window.requests} requests over {window.span_s:.1f} s = "
            f"{window.rate():.2f}/s = {fraction:.3f} of {STRIPE_RPS}/s (target >= {RATE_TARGET}); dativo waited "
            f"{run.total('throttled_s'):.1f} s for its bucket; 429s {len(window.throttled)}, after the first second "
            f"{window.throttled_after()} (target 0); peak RSS {run.measured.peak_rss_mb:.0f} MB",
            flush=True,
        )

    def hubspot(self) -> None:
        """Contacts through the search endpoint at its limit."""
        url = self.serve(
            "tests.fakes.hubspot_api",
            [
                "--port", "0", "--latency-ms", str(LATENCY_MS), "--search-rps", str(HUBSPOT_SEARCH_RPS),
                "--token", HUBSPOT_TOKEN, "--contacts", str(self.sizes.contacts),
                "--companies", "0", "--deals", "0", "--tickets", "0",
                "--now", str(int(time.time()) - SEEDED_BEFORE_S),
            ],
        )  # fmt: skip
        project = hubspot_project(self.project("hubspot"), url)
        counters = {"search": key_requests(HUBSPOT_TOKEN, "/search"), "all": key_requests(HUBSPOT_TOKEN)}
        with polling(url, counters) as poller:
            run = run_dativo(project, "crm/contacts", {"HUBSPOT_TOKEN": HUBSPOT_TOKEN})
        require_ok(run)
        self.record(run)
        live = hubspot_total(url)
        check_rows(project, "crm/contacts", {"contacts": live})
        search = poller.window("search", HUBSPOT_TOKEN, since="all")
        every = poller.window("all", HUBSPOT_TOKEN)
        fraction = search.rate() / HUBSPOT_SEARCH_RPS
        self.figures.update(
            hubspot_rate_fraction=round(fraction, 3),
            hubspot_429s_after_first_s=every.throttled_after(),
            hubspot_429s=len(every.throttled),
            hubspot_429_at_s=every.throttled_at(),
            hubspot_s=round(run.measured.seconds, 2),
            hubspot_search_requests=search.requests,
            hubspot_other_requests=every.requests - search.requests,
            hubspot_request_span_s=round(search.span_s, 2),
            hubspot_rows=live,
            hubspot_throttled_s=round(run.total("throttled_s"), 1),
            hubspot_peak_rss_mb=round(run.measured.peak_rss_mb, 1),
        )
        print(
            f"HubSpot: {live:,} contacts in {run.measured.seconds:.1f} s; {search.requests} search requests over "
            f"{search.span_s:.1f} s = {search.rate():.2f}/s = {fraction:.3f} of {HUBSPOT_SEARCH_RPS}/s "
            f"(target >= {RATE_TARGET}); {every.requests - search.requests} other requests; dativo waited "
            f"{run.total('throttled_s'):.1f} s for its bucket; 429s {len(every.throttled)}, after the first second "
            f"{every.throttled_after()} (target 0); peak RSS {run.measured.peak_rss_mb:.0f} MB",
            flush=True,
        )

    def shared(self, url: str, redis_url: str | None) -> None:
        """Two processes, two projects, one key; the bucket in Redis, or (``None``) one per process."""
        label = "shared" if redis_url else "unshared"
        key = STRIPE_KEYS["redis" if redis_url else "local"]
        tenants = ("north", "south")
        projects = [stripe_project(self.project(f"{label}-{t}"), url, t) for t in tenants]
        variables = {"STRIPE_KEY": key}
        if redis_url:
            variables["DATIVO_RATE_LIMIT_URL"] = redis_url
            self.redis_prefixes.append(redis_prefix(url, key))
        with polling(url, {"requests": key_requests(key)}) as poller, ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(run_dativo, project, f"{t}/payments", variables)
                for project, t in zip(projects, tenants, strict=True)
            ]
            runs = [future.result() for future in futures]
        self.record(*runs)
        window = poller.window("requests", key)
        fraction = window.rate() / STRIPE_RPS
        net = window.rate(discount=STRIPE_BURST) / STRIPE_RPS
        served = window.served_rate() / STRIPE_RPS
        wall = max(run.measured.seconds for run in runs)
        figures: dict[str, Any] = {
            "rate_fraction": round(fraction, 3),
            "net_of_burst_fraction": round(net, 3),
            "served_fraction": round(served, 3),
            "429s_after_first_s": window.throttled_after(),
            "429s": len(window.throttled),
            "429_at_s": window.throttled_at(),
            "s": round(wall, 2),
            "requests": window.requests,
            "request_span_s": round(window.span_s, 2),
            "retries": int(sum(run.total("retries") for run in runs)),
            "throttled_s": round(sum(run.total("throttled_s") for run in runs), 1),
            "peak_rss_mb": round(max(run.measured.peak_rss_mb for run in runs), 1),
        }
        if redis_url:
            for run in runs:
                require_ok(run)
            for project, run in zip(projects, runs, strict=True):
                check_rows(project, run.label, self.seeded())
            outcome = "both loaded every row"
        else:
            # The reference may fail (retries spent on 429s): report it, do not stop.
            exits = [run.measured.returncode for run in runs]
            problems = [
                problem
                for project, run in zip(projects, runs, strict=True)
                for problem in row_problems(project, run.label, self.seeded())
            ]
            figures.update(exit_codes=exits, rows_complete=not problems)
            outcome = f"exit codes {exits}, " + ("both loaded every row" if not problems else "; ".join(problems))
        self.figures.update({f"{label}_{name}": value for name, value in figures.items()})
        print(
            f"{'Shared (Redis)' if redis_url else 'Reference, no Redis'}: two processes, one key, {wall:.1f} s; "
            f"{window.requests} requests over {window.span_s:.1f} s = {window.rate():.2f}/s = {fraction:.3f} of "
            f"{STRIPE_RPS}/s ({net:.3f} net of the {STRIPE_BURST}-request burst, {served:.3f} answered 200); "
            f"429s {len(window.throttled)}, after the first second {window.throttled_after()}; "
            f"{figures['retries']} retries; {outcome}",
            flush=True,
        )


def end_children(keep: Collection[int] = ()) -> None:
    """Terminate this process's child processes (those it started), except the pids in ``keep``."""
    children = [c for c in psutil.Process().children() if c.pid not in keep]
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


def hubspot_total(url: str) -> int:
    """Contacts the search endpoint finds (every live contact), asked after the measurement."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    body = json.dumps({"limit": 1, "properties": ["email"]})
    headers = {"Authorization": f"Bearer {HUBSPOT_TOKEN}", "Content-Type": "application/json"}
    try:
        for _ in range(10):  # the run's last searches may still fill the one-second window
            connection.request("POST", "/crm/v3/objects/contacts/search", body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read() or b"{}")
            if response.status == 200:
                return int(payload["total"])
            time.sleep(1)
    finally:
        connection.close()
    raise RuntimeError("the HubSpot emulator did not answer the contact count")


def redis_prefix(url: str, key: str) -> str:
    """The Redis key prefix of a credential's buckets (as dativo names them; deleted after the run)."""
    from dativo_dagster.api.limits import KEY_PREFIX, credential_fingerprint

    return f"{KEY_PREFIX}{credential_fingerprint(url.rstrip('/'), key)}"


def redis_client(url: str) -> Any:
    """A Redis client, checked with a ping."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis at {url} is not reachable ({exc}); start it or pass --skip-shared") from None
    return client


def missed_targets(figures: dict[str, Any], shared: bool) -> list[str]:
    """Names of the figures that miss their targets."""
    checks = {
        "stripe_rate_fraction": figures["stripe_rate_fraction"] >= RATE_TARGET,
        "stripe_429s_after_first_s": figures["stripe_429s_after_first_s"] == 0,
        "hubspot_rate_fraction": figures["hubspot_rate_fraction"] >= RATE_TARGET,
        "hubspot_429s_after_first_s": figures["hubspot_429s_after_first_s"] == 0,
        "peak_rss_mb": figures["peak_rss_mb"] <= RSS_TARGET_MB,
    }
    if shared:
        checks["shared_net_of_burst_fraction"] = figures["shared_net_of_burst_fraction"] <= 1.0
        checks["shared_429s_after_first_s"] = figures["shared_429s_after_first_s"] == 0
    return [name for name, ok in checks.items() if not ok]


def _terminated(_signum: int, _frame: Any) -> None:
    """SIGTERM: end the ``dativo run`` processes first (a worker thread waits on them), then exit."""
    end_children(keep=EMULATORS)
    sys.exit(143)


def main() -> None:
    """Run the measurements; print one line per measurement, then one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 charges, 2,000 customers, 2,000 contacts")
    parser.add_argument("--skip-shared", action="store_true", help="skip the two-process runs (no Redis needed)")
    parser.add_argument("--contacts", type=int, help="HubSpot contacts (default 25,000)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the shared runs")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.contacts:
        sizes = Sizes(sizes.charges, sizes.customers, args.contacts)
    # A SIGTERM ends the benchmark as Ctrl-C does: runs ended, emulators stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, _terminated)
    redis = None if args.skip_shared else redis_client(args.redis_url)
    bench = Bench(sizes)
    try:
        keys = [STRIPE_KEYS["solo"]] if args.skip_shared else list(STRIPE_KEYS.values())
        stripe_url = bench.stripe_emulator(keys)
        bench.stripe(stripe_url)
        bench.hubspot()
        if not args.skip_shared:
            bench.shared(stripe_url, args.redis_url)
            bench.shared(stripe_url, None)
    finally:
        bench.close()
        if redis is not None:
            for prefix in bench.redis_prefixes:
                for name in redis.scan_iter(match=f"{prefix}*"):
                    redis.delete(name)

    figures = bench.figures
    figures["peak_rss_mb"] = round(bench.peak_rss_mb, 1)
    missed = missed_targets(figures, shared=not args.skip_shared)
    print(
        f"peak RSS {figures['peak_rss_mb']} MB of one dativo run process (target <= {RSS_TARGET_MB}); "
        f"targets missed: {', '.join(missed) or 'none'}",
        flush=True,
    )
    figures.update(charges=sizes.charges, customers=sizes.customers, contacts=sizes.contacts, targets_missed=missed)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
