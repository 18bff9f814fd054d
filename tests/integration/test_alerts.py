"""Alerts through real Dagster runs: the alert sensors evaluated tick after tick against a Dagster
instance on disk, sending to a local HTTP receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import structlog

from dativo_dagster.alerts import CHECK_SENSOR_NAME, RUN_SENSOR_NAME
from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.errors import ExtractError
from dativo_dagster.sources.csv import CsvSource
from tests.fakes.alert_receiver import Receiver, alert_receiver
from tests.integration.test_csv_pipeline import ORDERS, append_csv, run
from tests.integration.test_failure_classes import set_retries
from tests.integration.test_postgres_instance import pg_database  # noqa: F401 (a fixture)

ALERTS = """
alerts:
  base_url: https://dagster.example.com
  routes:
    hook: {type: webhook, url: "${ALERT_HOOK_URL}", backoff_s: 0.01}
    ops_log: {type: log}
  default: [hook, ops_log]
"""


@pytest.fixture
def receiver(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with alert_receiver() as found:
        monkeypatch.setenv("ALERT_HOOK_URL", found.url)
        with (project / "runner.yaml").open("a") as runner:
            runner.write(ALERTS)
        yield found


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    # A Dagster instance on disk (run-sharded SQLite event log), as `dagster dev` uses.
    with dg.instance_for_test() as found:
        yield found


@pytest.fixture(params=["sqlite", "postgres"])
def any_instance(request: pytest.FixtureRequest) -> Iterator[dg.DagsterInstance]:
    """The default instance, and the one a deployment runs (dagster-postgres: storage ids are global)."""
    if request.param == "sqlite":
        with dg.instance_for_test() as found:
            yield found
        return
    url = request.getfixturevalue("pg_database").replace("postgresql://", "postgresql+psycopg2://")
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as found:
        assert type(found.event_log_storage).__name__ == "PostgresEventLogStorage"
        yield found


class Ticks:
    """Evaluates a sensor tick after tick, carrying its cursor forward as the daemon does."""

    def __init__(self, project: Path, instance: dg.DagsterInstance, name: str) -> None:
        self.defs = build_definitions(load_plan(project, strict=True))
        self.sensor = self.defs.get_sensor_def(name)
        self.instance = instance
        self.cursor: str | None = None

    def tick(self) -> Any:
        # Evaluated within its repository, as the daemon does (it then knows its code location).
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs, sensor_name=self.sensor.name
        )
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def failing_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def read(self: CsvSource, request: Any) -> Any:
        raise ExtractError("source timed out")

    monkeypatch.setattr(CsvSource, "read", read)


def test_a_run_failing_after_three_retries_alerts_exactly_once(
    project: Path, receiver: Receiver, any_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retries(project, 3)
    runs = Ticks(project, any_instance, RUN_SENSOR_NAME)
    checks = Ticks(project, any_instance, CHECK_SENSOR_NAME)
    runs.tick()  # the first tick starts the cursor after what already happened
    checks.tick()
    failing_reads(monkeypatch)
    result = run(project, any_instance, ORDERS)
    assert not result.success
    assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 3

    runs.tick()
    (alert,) = receiver.bodies
    assert alert["kind"] == "run_failure"
    assert (alert["tenant"], alert["job"], alert["assets"]) == ("demo", "shop", ["demo/csv/orders"])
    assert (alert["error_code"], alert["error_class"]) == ("RETRY001", "permanent")
    assert "retries exhausted after 4 attempt(s)" in alert["message"] and "EXT001" in alert["message"]
    assert alert["last_success"] == {"demo/csv/orders": None}
    assert alert["run_id"] == result.run_id
    assert alert["run_url"] == f"https://dagster.example.com/runs/{result.run_id}"
    for _ in range(3):
        runs.tick()
    assert len(receiver.bodies) == 1  # never once per tick

    # An extraction that failed (EXT001) judged no rows: no check reports a violation, so no check
    # alert comes with the run's (a failed ERROR check alerting once is tested below).
    checks.tick()
    checks.tick()
    assert [body for body in receiver.bodies if body["kind"] == "check_failure"] == []


def test_the_cursor_survives_a_restart_and_a_dead_route_is_not_fatal(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retries(project, 0)
    runs = Ticks(project, instance, RUN_SENSOR_NAME)
    runs.tick()
    failing_reads(monkeypatch)
    first = run(project, instance, ORDERS)
    receiver.statuses.extend([503, 503, 503])  # the hook is down for the first alert's every attempt
    runs.tick()
    assert [body["run_id"] for body in receiver.bodies] == [first.run_id] * 3
    assert receiver.delivered() == []

    # A daemon restart: a new sensor definition, the cursor Dagster kept.
    restarted = Ticks(project, instance, RUN_SENSOR_NAME)
    restarted.cursor = runs.cursor
    second = run(project, instance, ORDERS)
    restarted.tick()
    restarted.tick()
    assert [body["run_id"] for body in receiver.delivered()] == [second.run_id]


def test_a_run_dagster_will_retry_alerts_only_on_its_last_attempt(
    project: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retries(project, 0)
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        runs = Ticks(project, instance, RUN_SENSOR_NAME)
        runs.tick()
        failing_reads(monkeypatch)
        defs = build_definitions(load_plan(project, strict=True))
        assets = list(defs.assets or [])
        first = dg.materialize(
            assets, selection=[ORDERS], instance=instance, resources=defs.resources, raise_on_error=False
        )
        assert instance.get_run_by_id(first.run_id).tags.get("dagster/will_retry") == "true"  # type: ignore[union-attr]
        runs.tick()
        assert receiver.bodies == []
        last = dg.materialize(
            assets,
            selection=[ORDERS],
            instance=instance,
            resources=defs.resources,
            raise_on_error=False,
            # Stands for the last attempt: a run Dagster's run retries will not re-execute.
            tags={"dagster/max_retries": "0"},
        )
        assert instance.get_run_by_id(last.run_id).tags.get("dagster/will_retry") == "false"  # type: ignore[union-attr]
        runs.tick()
        assert [body["run_id"] for body in receiver.bodies] == [last.run_id]


def test_a_failed_error_check_alerts_once(project: Path, receiver: Receiver, any_instance: dg.DagsterInstance) -> None:
    checks = Ticks(project, any_instance, CHECK_SENSOR_NAME)
    checks.tick()
    assert run(project, any_instance, ORDERS).success
    checks.tick()
    assert receiver.bodies == []  # passing checks say nothing

    append_csv(
        project / "tenants/demo/data/orders.csv",
        [[3000 + i, 1, "paid", "bad", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 5)],
    )
    failed = run(project, any_instance, ORDERS)
    assert not failed.success
    checks.tick()
    checks.tick()
    (alert,) = receiver.bodies
    assert alert["kind"] == "check_failure"
    assert (alert["tenant"], alert["job"], alert["assets"]) == ("demo", "shop", ["demo/csv/orders"])
    assert alert["check"] == "rows_conform_to_contract"
    assert alert["error_code"] == "QUAL001" and "threshold" in alert["message"]
    (last_passed,) = alert["last_success"].values()
    assert last_passed is not None  # the first run's check passed
    assert alert["run_url"] == f"https://dagster.example.com/runs/{failed.run_id}"


def test_only_failed_error_checks_alert(project: Path, receiver: Receiver, instance: dg.DagsterInstance) -> None:
    @dg.asset_check(asset=ORDERS, name="warn_only")
    def warn_only() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)

    @dg.asset_check(asset=ORDERS, name="must_hold")
    def must_hold() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="orders vanished")

    checks = Ticks(project, instance, CHECK_SENSOR_NAME)
    checks.tick()
    defs = build_definitions(load_plan(project, strict=True))
    result = dg.materialize(
        [*list(defs.assets or []), warn_only, must_hold],
        selection=dg.AssetSelection.keys(ORDERS),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success
    checks.tick()
    assert [(body["check"], body["message"]) for body in receiver.bodies] == [("must_hold", "orders vanished")]


def test_runs_of_other_assets_never_alert(project: Path, receiver: Receiver, instance: dg.DagsterInstance) -> None:
    @dg.asset(key=["someone_else", "report"])
    def report() -> None:
        raise RuntimeError("not a tenant's asset")

    runs = Ticks(project, instance, RUN_SENSOR_NAME)
    runs.tick()
    assert not dg.materialize([report], instance=instance, raise_on_error=False).success
    runs.tick()
    assert receiver.bodies == []


def test_a_tick_past_its_time_budget_leaves_the_rest_to_the_next(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.alerts import evaluate

    set_retries(project, 0)
    runs = Ticks(project, instance, RUN_SENSOR_NAME)
    runs.tick()
    failing_reads(monkeypatch)
    failed = run(project, instance, ORDERS)
    monkeypatch.setattr(evaluate, "TICK_BUDGET_S", -1.0)
    started = runs.cursor
    runs.tick()
    assert receiver.bodies == [] and runs.cursor == started  # nothing handled, nothing skipped
    monkeypatch.setattr(evaluate, "TICK_BUDGET_S", 30.0)
    runs.tick()
    assert [body["run_id"] for body in receiver.bodies] == [failed.run_id]


def test_a_failed_dativo_run_from_the_command_line_alerts(
    project: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dativo run`` executes in-process, with no code-location origin: its failures alert too."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    home = project / ".dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DATIVO_DAGSTER_PG_URL", raising=False)
    (project / "tenants/demo/data/orders.csv").unlink()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = Ticks(project, instance, RUN_SENSOR_NAME)
        runs.tick()
        done = subprocess.run(
            [sys.executable, "-m", "dativo_dagster.cli", "run", "demo/shop"],
            env={**os.environ},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 1, done.stderr[-3000:]  # partial: customers committed
        runs.tick()
        runs.tick()
    (alert,) = receiver.bodies
    assert (alert["tenant"], alert["job"], alert["assets"]) == ("demo", "shop", ["demo/csv/orders"])
    assert (alert["error_code"], alert["error_class"]) == ("CFG001", "permanent")
    assert "no file matches options.path 'orders.csv'" in alert["message"]


def test_a_run_of_two_tenants_alerts_the_failed_one_on_its_own_routes(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(project / "tenants/demo", project / "tenants/acme")
    job = project / "tenants/acme/jobs/shop.yaml"
    job.write_text(job.read_text().replace("tenant: demo", "tenant: acme").replace("tenants/demo/", "tenants/acme/"))
    runner = project / "runner.yaml"
    text = runner.read_text().replace("jobs:\n", "jobs:\n  - {tenant: acme, job: shop}\n", 1)
    text = text.replace(
        "  default: [hook, ops_log]\n",
        '    acme_hook: {type: webhook, url: "${ALERT_HOOK_URL}/acme", backoff_s: 0.01}\n'
        "  default: [hook, ops_log]\n  tenants:\n    acme: [acme_hook]\n",
    )
    runner.write_text(text)
    set_retries(project, 0)
    original = CsvSource.read

    def read(self: CsvSource, request: Any) -> Any:
        if request.obj.tenant == "acme":
            raise ExtractError("acme's files are gone")
        return original(self, request)

    monkeypatch.setattr(CsvSource, "read", read)
    runs = Ticks(project, instance, RUN_SENSOR_NAME)
    runs.tick()
    # Every asset of both tenants in one run, as the UI's "Materialize all" launches it.
    keys = [dg.AssetKey([tenant, "csv", name]) for tenant in ("demo", "acme") for name in ("orders", "customers")]
    result = run(project, instance, *keys)
    assert not result.success
    runs.tick()
    (request,) = receiver.requests
    assert request["path"] == "/hook/acme"
    alert = request["body"]
    assert (alert["tenant"], alert["job"]) == ("acme", "shop")
    assert sorted(alert["assets"]) == ["acme/csv/customers", "acme/csv/orders"]


# --------------------------------------------------------------------------- ticks within Dagster's timeout


def failing_error_checks(count: int) -> list[dg.AssetChecksDefinition]:
    def make(number: int) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=ORDERS, name=f"must_hold_{number}")
        def must_hold() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="vanished")

        return must_hold

    return [make(number) for number in range(count)]


def run_with_failed_checks(project: Path, instance: dg.DagsterInstance, count: int) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_plan(project, strict=True))
    result = dg.materialize(
        [*list(defs.assets or []), *failing_error_checks(count)],
        selection=dg.AssetSelection.keys(ORDERS),
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    assert result.success
    return result


def timed_tick(ticks: Ticks) -> float:
    started = time.monotonic()
    ticks.tick()
    return time.monotonic() - started


def test_a_rate_limited_route_waits_for_the_next_tick_not_past_the_tick_timeout(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.alerts import evaluate

    set_retries(project, 0)
    runs = Ticks(project, instance, RUN_SENSOR_NAME)
    runs.tick()
    failing_reads(monkeypatch)
    failed = run(project, instance, ORDERS)
    monkeypatch.setattr(evaluate, "TICK_BUDGET_S", 3.0)
    receiver.statuses.append(429)
    receiver.retry_after = "30"  # Slack's answer when rate-limited: waiting would outlast the tick
    with structlog.testing.capture_logs() as events:
        assert timed_tick(runs) < 3.0 + 2.0
        assert receiver.delivered() == [] and len(receiver.requests) == 1
        assert '"partial"' in (runs.cursor or "")  # the run is half handled: its log route is done
        runs.tick()
        runs.tick()
    assert [body["run_id"] for body in receiver.delivered()] == [failed.run_id]
    assert len(receiver.requests) == 2
    assert [e["event"] for e in events].count("alert") == 1  # the log route once, not at every tick
    assert '"partial"' not in (runs.cursor or "")


def test_a_blackholed_route_never_makes_a_tick_overrun_nor_an_alert_repeat(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.alerts import evaluate

    checks = Ticks(project, instance, CHECK_SENSOR_NAME)
    checks.tick()
    run_with_failed_checks(project, instance, 4)
    monkeypatch.setattr(evaluate, "TICK_BUDGET_S", 2.0)
    receiver.delays.extend([0.0, 60.0])  # the second alert's request hangs (timeout_s is 5)
    assert timed_tick(checks) < 2.0 + 2.0
    assert len(receiver.delivered()) == 1
    for _ in range(3):
        checks.tick()
    delivered = sorted(body["check"] for body in receiver.delivered())
    assert delivered == [f"must_hold_{number}" for number in range(4)]  # each exactly once


def test_an_error_inside_a_tick_is_logged_and_the_run_finished_next_tick(
    project: Path, receiver: Receiver, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.alerts import evaluate

    checks = Ticks(project, instance, CHECK_SENSOR_NAME)
    checks.tick()
    run_with_failed_checks(project, instance, 3)
    real_deliver = evaluate.deliver
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # e.g. the instance's database, reached while sending
            raise RuntimeError("database is locked: postgresql://dagster:hunter2@db/dagster")
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(evaluate, "deliver", flaky)
    with structlog.testing.capture_logs() as events:
        checks.tick()  # never fails the tick
    assert len(receiver.delivered()) == 1
    (logged,) = [e for e in events if e["event"] == "alert_run_failed"]
    assert logged["log_level"] == "error" and logged["code"] == "BUG" and "hunter2" not in logged["error"]
    checks.tick()
    checks.tick()
    assert sorted(body["check"] for body in receiver.delivered()) == [f"must_hold_{n}" for n in range(3)]


class Killed(BaseException):
    """Stands for Dagster cutting a tick off: nothing of the tick comes back, its cursor included."""


def test_a_tick_killed_midway_does_not_send_again_what_it_delivered(
    project: Path, receiver: Receiver, any_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.alerts import evaluate

    checks = Ticks(project, any_instance, CHECK_SENSOR_NAME)
    checks.tick()
    run_with_failed_checks(project, any_instance, 3)
    real_deliver = evaluate.deliver
    calls: list[int] = []

    def killed_at_the_third(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(evaluate, "deliver", killed_at_the_third)
    started_from = checks.cursor
    with pytest.raises(Killed):
        checks.tick()
    assert checks.cursor == started_from and len(receiver.delivered()) == 2
    monkeypatch.setattr(evaluate, "deliver", real_deliver)
    checks.tick()
    checks.tick()
    assert sorted(body["check"] for body in receiver.delivered()) == [f"must_hold_{n}" for n in range(3)]
