"""The Stripe source against the emulator: paging, windows and slices, events, retention, errors,
rate limits through Dagster, tenant isolation, spec conformance, and kill -9 during a backfill."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import structlog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError

from dativo_dagster.api.source import ApiRuntime
from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.errors import ConfigError, UnexpectedError
from dativo_dagster.state import PROP_CURSOR, CursorState
from tests.conftest import REPO
from tests.fakes import specs
from tests.fakes.server import AdminClient, FakeClock, FakeServer, Limit, ServerProcess, wait_until
from tests.fakes.stripe_api import StripeEmulator
from tests.integration.harness_stripe import (
    NOW,
    StripeRunner,
    source_clock,
    stripe_object,
    write_stripe_project,
)

stripe = pytest.importorskip("stripe")

KEY = "sk_test_dativo_stripe_a"
KEY_B = "sk_test_dativo_stripe_b"
FAST = {"rate_limit": {"rps": 1000, "burst": 1000}, "slice_days": 400}
"""Tests that are not about rate limits or slices neither wait for Stripe's 25 requests per second nor
commit a year of history month by month."""


@pytest.fixture
def emu() -> Iterator[tuple[StripeEmulator, FakeServer]]:
    """A small account on a frozen clock; the source reads time from the emulator's clock."""
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(KEY, seed=7, customers=120, charges=600)
    with emulator.serve() as server, source_clock(emulator):
        yield emulator, server


def ids_at_stripe(url: str, key: str, resource: str, **params: Any) -> list[str]:
    """Every id the emulator lists for ``resource`` (through the official client, unthrottled)."""
    client = stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0)
    if resource == "subscriptions":
        params.setdefault("status", "all")
    ids: list[str] = []
    while True:
        page = client.raw_request("get", f"/v1/{resource}", limit=100, **params).data
        ids += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            return ids
        params["starting_after"] = ids[-1]


def runner(tmp_path: Path, url: str, objects: list[dict[str, Any]], **connection: Any) -> StripeRunner:
    root = write_stripe_project(tmp_path / "project", url, objects, connection={**FAST, **connection})
    return StripeRunner(root, {"STRIPE_API_KEY": KEY})


# --------------------------------------------------------------------------------------------- paging and windows


def test_pages_through_thousands_of_objects_newest_first(tmp_path: Path) -> None:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(KEY, seed=3, customers=50, charges=4_500, same_second_rate=0.3)
    with emulator.serve() as server, source_clock(emulator):
        run = runner(tmp_path, server.url, [stripe_object("charges", incremental={"slice_days": 3650})])
        result = run.ok("charges")
        log = [r for r in emulator.request_log if r.path == "/v1/charges" and ("limit", "100") in r.query]
        expected = ids_at_stripe(server.url, KEY, "charges", created={"lt": NOW - 60})
    loaded = [row["id"] for row in run.rows("charges")]
    assert len(loaded) == len(set(loaded)) == len(expected) > 4_400
    assert set(loaded) == set(expected)
    assert result.source_stats["pages"] == len(log) == -(-len(expected) // 100)
    # each page starts after the last id of the one before (ties on `created` broken by id)
    afters = [dict(r.query).get("starting_after") for r in log]
    assert afters[0] is None and all(afters[1:])
    assert result.write is not None and result.write.rows_written == len(expected)


def test_a_backfill_commits_one_snapshot_per_slice_each_with_its_cursor(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path
) -> None:
    _, server = emu
    run = runner(tmp_path, server.url, [stripe_object("charges", incremental={"slice_days": 45})])
    result = run.ok("charges")
    snapshots = [s for s in run.snapshots("charges") if s.summary and PROP_CURSOR in s.summary.additional_properties]
    assert result.source_stats["slices"] >= 8
    assert len(snapshots) >= 8  # windows with charges in them; an empty window commits nothing
    cursors = [
        CursorState.from_json(s.summary.additional_properties[PROP_CURSOR], where="test").value for s in snapshots
    ]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    rows = run.rows("charges")
    assert cursors[-1] == max(int(r["created"].timestamp()) for r in rows) + 1
    # re-run: nothing new, nothing committed, the cursor stays where it is
    again = run.ok("charges")
    assert again.write is not None and not again.write.committed and again.write.cursor == result.write.cursor  # type: ignore[union-attr]


def test_lookback_rereads_recent_windows(emu: tuple[StripeEmulator, FakeServer], tmp_path: Path) -> None:
    emulator, server = emu
    objects = [
        stripe_object("charges", incremental={"lookback_days": 1}),
        stripe_object("charges_plain", contract=False, options={"resource": "charges"}),
    ]
    run = runner(tmp_path, server.url, objects)
    first = run.ok("charges")
    run.ok("charges_plain")
    cursor = first.write.cursor.value  # type: ignore[union-attr]
    # objects that show up late with an older `created` (beyond the settle lag)
    within = emulator.create_object(KEY, "charges", created=cursor - 3_600, amount=4_242)
    beyond = emulator.create_object(KEY, "charges", created=cursor - 3 * 86_400, amount=4_343)
    second = run.ok("charges")
    assert second.write is not None and second.write.rows_written >= 1
    loaded = {row["id"]: row for row in run.rows("charges")}
    assert within["id"] in loaded and loaded[within["id"]]["amount"] == 4_242
    assert beyond["id"] not in loaded  # older than the lookback: documented limit
    plain = run.ok("charges_plain")
    assert plain.write is not None and plain.write.rows_written == 0
    assert within["id"] not in {row["id"] for row in run.rows("charges_plain")}
    # the discovered schema of an object without contract: id, created, the object as JSON
    assert set(run.rows("charges_plain")[0]) == {"id", "created", "data"}


# --------------------------------------------------------------------------------------------- events


def test_updates_arrive_through_events_and_listed_versions_win(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path
) -> None:
    emulator, server = emu
    objects = [stripe_object("customers"), stripe_object("subscriptions")]
    run = runner(tmp_path, server.url, objects, settle_lag_s=60)
    first = run.ok("customers")
    run.ok("subscriptions")
    old = sorted(run.rows("customers"), key=lambda r: r["created"])
    changed, removed = old[0]["id"], old[1]["id"]
    emulator.update_object(KEY, "customers", changed, email="new@example.com", metadata={"tier": "gold"})
    emulator.update_object(KEY, "customers", changed, email="newer@example.com")
    emulator.delete_object(KEY, "customers", removed)
    # a customer created after the last run, changed before and after this run's settle point
    fresh = emulator.create_object(KEY, "customers", created=NOW - 30, email="v1@example.com")
    emulator.update_object(KEY, "customers", fresh["id"], email="v2@example.com")
    subscription = run.rows("subscriptions")[0]["id"]
    emulator.update_object(KEY, "subscriptions", subscription, metadata={"plan": "pro"})
    emulator.advance_clock(120)
    emulator.update_object(KEY, "customers", fresh["id"], email="v3@example.com")  # after this run's settle point

    second = run.ok("customers")
    rows = {row["id"]: row for row in run.rows("customers")}
    assert rows[changed]["email"] == "newer@example.com"  # the newest event wins
    assert rows[changed]["metadata"] == '{"tier":"gold"}'
    assert rows[removed]["deleted"] is True
    assert rows[fresh["id"]]["email"] == "v3@example.com"  # listed by this run: its current version
    assert second.source_stats["updates_from_events"] == 2
    assert second.source_stats["slices"] == 2  # the events replay, then the new window
    before, after = (r.write.cursor.value for r in (first, second))  # type: ignore[union-attr]
    assert after["events"] > before["events"] and after["created"] > before["created"]

    run.ok("subscriptions")
    assert {r["id"]: r for r in run.rows("subscriptions")}[subscription]["metadata"] == '{"plan":"pro"}'
    # nothing new since: nothing committed
    third = run.ok("customers")
    assert third.write is not None and not third.write.committed


def test_expanded_objects_changed_by_events_are_fetched_again_with_their_expansions(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path
) -> None:
    emulator, server = emu
    contract = "name: stripe/subs_expanded\nversion: 1\nprimary_key: [id]\ncolumns:\n" + "".join(
        f"  - {column}\n"
        for column in (
            "{name: id, type: string, required: true}",
            "{name: created, type: timestamptz, required: true}",
            "{name: customer, type: string}",
            "{name: customer_email, type: string, source_name: customer.email}",
            "{name: metadata, type: json}",
        )
    )
    obj = stripe_object("subscriptions", contract=False, options={"expand": ["customer"]})
    obj["contract"] = {"name": "stripe/subs_expanded", "version": 1}
    root = write_stripe_project(tmp_path, server.url, [obj], connection=FAST)
    (root / "connectors/schemas/stripe/subs_expanded.v1.yaml").write_text(contract)
    run = StripeRunner(root, {"STRIPE_API_KEY": KEY})
    run.ok("subscriptions")
    rows = run.rows("subscriptions")
    assert all(r["customer"].startswith("cus_") and "@" in r["customer_email"] for r in rows)
    target = rows[0]["id"]
    emulator.update_object(KEY, "subscriptions", target, metadata={"seats": "5"})
    emulator.advance_clock(120)
    run.ok("subscriptions")
    row = {r["id"]: r for r in run.rows("subscriptions")}[target]
    assert row["metadata"] == '{"seats":"5"}' and "@" in row["customer_email"]
    assert any(r.path == f"/v1/subscriptions/{target}" for r in emulator.request_log)


def test_past_the_event_retention_the_object_is_refreshed_in_full(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path
) -> None:
    emulator, server = emu
    run = runner(tmp_path, server.url, [stripe_object("customers")])
    run.ok("customers")
    gone = run.rows("customers")[5]["id"]
    emulator.delete_object(KEY, "customers", gone)
    emulator.advance_clock(31 * 86_400)  # the saved events position is now older than Stripe keeps
    added = emulator.create_object(KEY, "customers", created=int(emulator.clock.now()) - 600)
    with structlog.testing.capture_logs() as logs:
        result = run.ok("customers")
    warnings = [e for e in logs if e["event"] == "events_retention_exceeded"]
    assert warnings and warnings[0]["log_level"] == "warning" and warnings[0]["action"] == "full refresh"
    assert result.source_stats["events_retention_fallback"] == 1
    rows = {row["id"] for row in run.rows("customers")}
    # the table was replaced: the customer deleted while updates could not be followed is gone
    assert gone not in rows and added["id"] in rows
    assert rows == set(ids_at_stripe(server.url, KEY, "customers"))
    snapshot = run.snapshots("customers")[-1]
    assert snapshot.summary is not None and snapshot.summary.operation.value == "overwrite"
    # and the next run follows events again
    again = run.ok("customers")
    assert again.source_stats["events_retention_fallback"] == 0 and not again.write.committed  # type: ignore[union-attr]


def test_a_quiet_object_keeps_its_events_position_inside_the_retention(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path
) -> None:
    emulator, server = emu
    run = runner(tmp_path, server.url, [stripe_object("products")])
    first = run.ok("products")
    emulator.advance_clock(86_400)
    quiet = run.ok("products")  # a day without changes: nothing to commit
    assert quiet.write is not None and not quiet.write.committed
    emulator.advance_clock(7 * 86_400)
    moved = run.ok("products")  # a week without changes: the events position moves, no row is written
    assert moved.write is not None and moved.write.committed and moved.write.rows_written == 0
    assert moved.write.cursor.value["events"] == int(emulator.clock.now()) - 60  # type: ignore[union-attr]
    assert moved.write.cursor.value["created"] == first.write.cursor.value["created"]  # type: ignore[union-attr]
    emulator.advance_clock(25 * 86_400)  # 33 days after the first run, yet within the retention
    assert run.ok("products").source_stats["events_retention_fallback"] == 0


# --------------------------------------------------------------------------------------------- errors


RETRY_FAST = {"retry": {"attempts": 2, "initial_s": 0.01, "max_s": 0.02}, "timeout_s": 0.5}


@pytest.mark.parametrize(
    ("fault", "code", "says"),
    [
        (
            {"kind": "status", "status": 404},
            "CFG001",
            ["GET /v1/charges page 1: HTTP 404", "/v1/charges does not exist", "API version"],
        ),
        ({"kind": "malformed_json"}, "PAGE001", ["acme/payments/charges", "page 1", "not valid JSON"]),
        ({"kind": "truncated"}, "PAGE001", ["acme/payments/charges", "page 1", "not valid JSON"]),
        ({"kind": "missing_field", "field": "id"}, "PAGE001", ["page 1", "lacks the required field(s) id"]),
        ({"kind": "status", "status": 500, "count": 5}, "RETRY001", ["failed 2 time(s)", "HTTP 500"]),
        ({"kind": "status", "status": 503, "count": 5}, "RETRY001", ["HTTP 503"]),
        ({"kind": "hang", "seconds": 3, "count": 5}, "RETRY001", ["no answer"]),
        ({"kind": "status", "status": 402}, "BUG", ["CardError"]),
    ],
)
def test_faults_become_coded_errors(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path, fault: dict[str, Any], code: str, says: list[str]
) -> None:
    emulator, server = emu
    # A saved starting point: the first request is page 1 of the first window (no history search).
    obj = stripe_object("charges", incremental={"initial_value": NOW - 400 * 86_400, "slice_days": 3650})
    run = runner(tmp_path, server.url, [obj], **RETRY_FAST)
    emulator.inject(path="/v1/charges", **fault)
    result = run.run("charges")
    assert result.error is not None and result.error.code == code, result.error
    for text in says:
        assert text in str(result.error)
    if code == "BUG":
        assert isinstance(result.error, UnexpectedError) and not result.error.transient
    assert run.writer.load_table("acme", "charges") is None or not run.rows("charges")


def test_credentials_and_stripe_refusals_are_coded(emu: tuple[StripeEmulator, FakeServer], tmp_path: Path) -> None:
    emulator, server = emu
    emulator.add_restricted_key("rk_test_dativo_customers_only", KEY, ["customers"])
    emulator.add_restricted_key("rk_test_dativo_customers_events", KEY, ["customers", "events"])
    bad_expand = stripe_object("charges", options={"expand": ["customer.nonsense"]})
    root = write_stripe_project(tmp_path / "p", server.url, [bad_expand, stripe_object("customers")], connection=FAST)
    refused = StripeRunner(root, {"STRIPE_API_KEY": KEY}).run("charges")
    assert refused.error is not None and refused.error.code == "CFG001"
    assert "This property cannot be expanded (data.customer.nonsense)" in str(refused.error)
    unknown = StripeRunner(root, {"STRIPE_API_KEY": "sk_test_nobody_knows"}).run("customers")
    assert (
        unknown.error is not None
        and unknown.error.code == "AUTH001"
        and "sk_test_nobody_knows" not in str(unknown.error)
    )
    restricted = StripeRunner(root, {"STRIPE_API_KEY": "rk_test_dativo_customers_only"})
    assert restricted.run("customers").error is None
    forbidden = restricted.run("charges")
    assert forbidden.error is not None and forbidden.error.code == "AUTH001" and "403" in str(forbidden.error)
    # following updates needs the events permission too, and the error says which
    emulator.update_object(KEY, "customers", restricted.rows("customers")[0]["id"], name="Changed")
    emulator.advance_clock(120)
    no_events = restricted.run("customers")
    assert no_events.error is not None and no_events.error.code == "AUTH001"
    assert "/v1/events" in str(no_events.error) and "rak_event_read" in str(no_events.error)
    # an injected dropped connection is retried and counted, then the read goes on
    emulator.inject("short_read", path="/v1/events")
    recovered = StripeRunner(root, {"STRIPE_API_KEY": "rk_test_dativo_customers_events"}).ok("customers")
    assert recovered.source_stats["retries"] == 1 and recovered.source_stats["updates_from_events"] == 1


def test_configuration_mistakes_are_cfg001_at_load(tmp_path: Path) -> None:
    objects = [
        stripe_object("charges", options={"expand": ["lines"]}),
        stripe_object("refunds", options={"track_updates": True}),
        stripe_object("customers", incremental={"cursor_field": "updated"}, contract=False),
    ]
    root = write_stripe_project(tmp_path, "http://127.0.0.1:9", objects)
    plan = load_plan(root)
    problems = "\n".join(plan.problems)
    assert "objects[0].options" in problems and "charges cannot expand 'lines'" in problems
    assert "objects[1].options" in problems and "no update events for refunds" in problems
    fixed = write_stripe_project(tmp_path / "b", "http://127.0.0.1:9", [objects[2]])
    result = StripeRunner(fixed, {"STRIPE_API_KEY": KEY}).run("customers")
    assert (
        result.error is not None and result.error.code == "CFG001" and "filter on 'created' only" in str(result.error)
    )
    publishable = StripeRunner(fixed, {"STRIPE_API_KEY": "pk_test_publishable"})
    with pytest.raises(ConfigError, match="publishable key"):
        publishable.run("customers")


# --------------------------------------------------------------------------------------------- limits and tenants


def test_429_with_retry_after_is_honoured_and_shows_in_dagster_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True), limits={"default": Limit(rps=4, burst=2)})
    emulator.add_account(KEY, seed=5, customers=20, charges=400)
    obj = stripe_object("charges", incremental={"initial_value": NOW - 400 * 86_400, "slice_days": 3650})
    with emulator.serve() as server, source_clock(emulator):
        root = write_stripe_project(tmp_path, server.url, [obj], connection={"page_size": 50, **FAST})
        monkeypatch.setenv("STRIPE_API_KEY", KEY)  # resolved by the run's resource, as in production
        defs = build_definitions(load_plan(root, strict=True))
        result = dg.materialize(
            assets=list(defs.assets or []), resources=defs.resources, instance=dg.DagsterInstance.ephemeral()
        )
        refused = emulator.stats.status_count(429)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    assert metadata["dativo/rows_written"] == 400
    assert metadata["dativo/http_429"] == refused > 0
    assert metadata["dativo/retries"] >= refused
    # every 429 asked for at least one second (Retry-After), and the transport waited it out
    assert metadata["dativo/throttled_s"] >= refused * 1.0


def test_two_tenants_in_one_process_share_neither_limits_nor_data(tmp_path: Path) -> None:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(KEY, seed=11, customers=60, charges=300)
    emulator.add_account(KEY_B, seed=12, customers=40, charges=200)
    with emulator.serve() as server, source_clock(emulator):
        root = write_stripe_project(
            tmp_path,
            server.url,
            [stripe_object("charges"), stripe_object("customers")],
            connection=FAST,
            tenants={"alpha": "KEY_ALPHA", "beta": "KEY_BETA"},
            per_tenant={"alpha": {"rate_limit": {"rps": 20, "burst": 2}}},
        )
        environ = {"KEY_ALPHA": KEY, "KEY_BETA": KEY_B}
        runtime = ApiRuntime()  # one run's shared state, as the Dagster resource builds it
        runners = {t: StripeRunner(root, environ, f"{t}/payments", runtime) for t in ("alpha", "beta")}
        results: dict[tuple[str, str], Any] = {}

        def work(tenant: str, name: str) -> None:
            results[(tenant, name)] = runners[tenant].run(name)

        threads = [threading.Thread(target=work, args=(t, n)) for t in runners for n in ("charges", "customers")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sent = {key: sum(1 for r in emulator.request_log if r.key == key) for key in (KEY, KEY_B)}
        expected = {
            (key, name): set(ids_at_stripe(server.url, key, name, created={"lt": NOW - 60}))
            for key in (KEY, KEY_B)
            for name in ("charges", "customers")
        }
    for (tenant, name), result in results.items():
        assert result.error is None, result.error
        key = KEY if tenant == "alpha" else KEY_B
        assert {row["id"] for row in runners[tenant].rows(name)} == expected[(key, name)]
    stats = {t: [results[(t, n)].source_stats for n in ("charges", "customers")] for t in runners}
    # every request of a tenant carried its own key ...
    assert sent == {KEY: sum(s["api_calls"] for s in stats["alpha"]), KEY_B: sum(s["api_calls"] for s in stats["beta"])}
    # ... and each key has its own bucket and breaker: alpha's tight limit never slowed beta
    fingerprints = {fingerprint for fingerprint, _ in runtime.limits._buckets}
    assert len(fingerprints) == 2 and len(runtime._guards) == 2
    assert sum(s["throttled_s"] for s in stats["alpha"]) > 0.5
    assert sum(s["throttled_s"] for s in stats["beta"]) < 0.1


def test_requests_dativo_sends_conform_to_stripes_spec(emu: tuple[StripeEmulator, FakeServer], tmp_path: Path) -> None:
    specs.require_vendor_specs("stripe")
    emulator, server = emu
    names = ["customers", "charges", "invoices", "subscriptions", "payment_intents", "products", "prices"]
    names += ["balance_transactions", "refunds", "events"]
    objects = [
        stripe_object(n, options={"expand": ["customer"]} if n in ("charges", "subscriptions") else {}) for n in names
    ]
    run = runner(tmp_path, server.url, objects)
    for name in names:
        run.ok(name)
    emulator.update_object(KEY, "subscriptions", run.rows("subscriptions")[0]["id"], metadata={"a": "b"})
    emulator.update_object(KEY, "customers", run.rows("customers")[0]["id"], name="Renamed")
    emulator.advance_clock(120)
    run.ok("subscriptions")
    run.ok("customers")
    log = list(emulator.request_log)
    paths = {r.path.rsplit("/", 1)[0] if r.path.count("/") == 3 else r.path for r in log}
    assert {f"/v1/{n}" for n in names} <= paths
    assert any(("type", "customer.subscription.*") in r.query for r in log)
    problems = [p for r in log for p in specs.validate_request("stripe", r.method, r.path, list(r.query))]
    assert problems == []


# --------------------------------------------------------------------------------------------- kill -9


def _table_ids(project: Path, name: str) -> list[str]:
    home = project / ".dativo"
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    table = catalog.load_table(("acme", name))
    return table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()


@pytest.mark.slow
def test_kill_9_at_random_instants_of_a_sliced_backfill_then_every_object_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20260101)
    key = "sk_test_dativo_kill"
    args = ["--keys", key, "--customers", "1000", "--charges", "4000", "--now", str(int(time.time()) - 3_600)]
    with ServerProcess("tests.fakes.stripe_api", args) as process:
        admin = AdminClient(process.url)
        project = write_stripe_project(
            tmp_path / "project",
            process.url,
            [stripe_object("charges", incremental={"slice_days": 20}), stripe_object("customers")],
        )
        env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
        env["STRIPE_API_KEY"] = key
        env.pop("DAGSTER_HOME", None)
        env.pop("DATIVO_FAULT_INJECT", None)
        command = [sys.executable, "-m", "dativo_dagster.cli", "run", "acme/payments"]
        kills = 0
        partial: list[int] = []  # charges committed when a run was killed
        for _attempt in range(3):
            started = admin.stats()["requests_total"]
            proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # a random instant of the backfill: after a random number of its ~110 requests were answered
            target = started + rng.randint(15, 90)

            def reached(proc: subprocess.Popen[bytes] = proc, target: int = target) -> bool:
                return proc.poll() is not None or admin.stats()["requests_total"] >= target

            wait_until(reached, timeout=60)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
            if (project / ".dativo/catalog.db").exists():
                with contextlib.suppress(NoSuchTableError):
                    partial.append(len(_table_ids(project, "charges")))
        assert kills >= 2, "the backfill finished before it could be killed"
        assert any(0 < n < 4_000 for n in partial), f"no kill landed between two slice commits: {partial}"
        final = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
        for name in ("charges", "customers"):
            loaded = _table_ids(project, name)
            expected = ids_at_stripe(process.url, key, name)
            assert len(loaded) == len(set(loaded)), f"{name}: duplicates after kill -9 and re-run"
            assert set(loaded) == set(expected), f"{name}: gap after kill -9 and re-run"
