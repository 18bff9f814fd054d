"""Alerts: runner.yaml's alerts section, what an alert says, and how delivery retries."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import ValidationError

from dativo_dagster.alerts import CHECK_SENSOR_NAME, RUN_SENSOR_NAME
from dativo_dagster.alerts.delivery import deliver
from dativo_dagster.alerts.evaluate import PartialRun, TickCursor, job_secret_values, parse_cursor, parse_tick_cursor
from dativo_dagster.alerts.notifications import Alert, error_code_in, redacted_message, run_url, slack_payload
from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.models import AlertRoute, AlertsConfig, RunnerConfig
from dativo_dagster.config.secrets import SecretResolver
from tests.fakes.alert_receiver import alert_receiver

# --------------------------------------------------------------------------- config


def runner(alerts: dict[str, Any], jobs: list[dict[str, Any]] | None = None) -> RunnerConfig:
    return RunnerConfig.model_validate({"alerts": alerts, "jobs": jobs or []})


def problems(alerts: dict[str, Any], jobs: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        runner(alerts, jobs)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_routes_default_tenant_and_job_routing() -> None:
    config = runner(
        {
            "routes": {
                "hook": {"type": "webhook", "url": "${HOOK_URL}", "headers": {"Authorization": "Bearer ${TOKEN}"}},
                "slack": {"type": "slack", "url": "https://hooks.slack.com/services/x"},
                "ops_log": {"type": "log"},
            },
            "default": ["ops_log"],
            "tenants": {"acme": ["hook", "slack"], "quiet": []},
        },
        [{"tenant": "acme", "job": "billing", "alerts": ["slack"]}],
    )
    alerts = config.alerts
    assert alerts.enabled
    assert alerts.route_names("demo") == ["ops_log"]
    assert alerts.route_names("acme") == ["hook", "slack"]
    assert alerts.route_names("quiet") == []
    assert alerts.route_names("acme", config.jobs[0].alerts) == ["slack"]
    assert not RunnerConfig().alerts.enabled


@pytest.mark.parametrize(
    ("alerts", "jobs", "where", "message"),
    [
        ({"routes": {}, "default": ["pager"]}, None, "alerts.default", "default[0]: unknown alert route 'pager'"),
        (
            {"routes": {"a": {"type": "log"}}, "tenants": {"acme": ["a", "b"]}},
            None,
            "alerts.tenants",
            "tenants.acme[1]: unknown alert route 'b' (routes: a)",
        ),
        (
            {"routes": {"a": {"type": "log"}}},
            [{"tenant": "acme", "job": "x", "alerts": ["z"]}],
            "jobs",
            "jobs[0].alerts[0]: unknown alert route 'z'",
        ),
        (
            {"routes": {"h": {"type": "webhook", "url": "ftp://x/y"}}},
            None,
            "alerts.routes.h.url",
            "http:// or https://",
        ),
        (
            {"routes": {"h": {"type": "webhook", "url": "hooks.example.com"}}},
            None,
            "alerts.routes.h.url",
            "with a host",
        ),
        ({"routes": {"h": {"type": "webhook", "url": "${BROKEN"}}}, None, "alerts.routes.h.url", "malformed variable"),
        ({"routes": {"h": {"type": "slack"}}}, None, "alerts.routes.h", "a 'slack' route needs 'url'"),
        ({"routes": {"h": {"type": "log", "url": "https://x.example"}}}, None, "alerts.routes.h", "takes no 'url'"),
        ({"routes": {"h": {"type": "pager"}}}, None, "alerts.routes.h.type", "Input should be"),
        ({"routes": {"h": {"type": "log", "retries": 3}}}, None, "alerts.routes.h.retries", "Extra inputs"),
        (
            {"routes": {"h": {"type": "webhook", "url": "https://x.example", "max_attempts": 0}}},
            None,
            "alerts.routes.h.max_attempts",
            "greater than or equal to 1",
        ),
        ({"routes": {"Bad-Name": {"type": "log"}}}, None, "alerts.routes.Bad-Name.[key]", "safe identifier"),
        ({"base_url": "dagster.example.com"}, None, "alerts.base_url", "address of the Dagster UI"),
        (
            {"routes": {"h": {"type": "webhook", "url": "https://x.example", "headers": {"X-A": "a\nb"}}}},
            None,
            "alerts.routes.h.headers",
            "line break",
        ),
    ],
)
def test_bad_alert_config_names_the_field(
    alerts: dict[str, Any], jobs: list[dict[str, Any]] | None, where: str, message: str
) -> None:
    found = problems(alerts, jobs)
    assert len(found) == 1
    loc, text = found[0]
    assert loc.startswith(where)
    assert message in text


def test_a_bad_alerts_section_is_cfg001_naming_runner_yaml_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "runner.yaml").write_text("version: 1\nalerts:\n  routes: {ops: {type: log}}\n  default: [pager]\n")
    with pytest.raises(ConfigProblems) as info:
        load_plan(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("runner.yaml: alerts.default: ") and "unknown alert route 'pager'" in problem


# --------------------------------------------------------------------------- what an alert says


def make_alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "kind": "run_failure",
        "tenant": "acme",
        "job": "billing",
        "assets": ("acme/stripe/charges",),
        "error_code": "RETRY001",
        "error_class": "permanent",
        "message": "RETRY001: acme/billing: retries exhausted after 4 attempt(s); last failure: EXT001 <timeout> & co",
        "run_id": "abc-123",
        "run_url": run_url("abc-123", "https://dagster.example.com/"),
        "last_success": {"acme/stripe/charges": "2026-01-01T00:00:00Z"},
    }
    return Alert(**{**fields, **overrides})


def test_the_json_body_carries_every_field() -> None:
    body = make_alert().as_json()
    assert body == {
        "kind": "run_failure",
        "title": "dativo RETRY001: acme/billing: run failed (acme/stripe/charges)",
        "tenant": "acme",
        "job": "billing",
        "assets": ["acme/stripe/charges"],
        "check": None,
        "error_code": "RETRY001",
        "error_class": "permanent",
        "message": make_alert().message,
        "last_success": {"acme/stripe/charges": "2026-01-01T00:00:00Z"},
        "run_id": "abc-123",
        "run_url": "https://dagster.example.com/runs/abc-123",
    }
    assert run_url("abc-123", None) == "/runs/abc-123"


def test_the_slack_body_is_text_and_blocks_with_escaped_text_and_a_link() -> None:
    body = slack_payload(make_alert(kind="check_failure", check="rows_conform_to_contract", error_code="QUAL001"))
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith(
        "dativo QUAL001: acme/billing: check rows_conform_to_contract on acme/stripe/charges"
    )
    sections = [block for block in body["blocks"] if block["type"] == "section"]
    facts = " ".join(field["text"] for field in sections[1]["fields"])
    assert "*Tenant*\nacme" in facts and "*Check*\nrows_conform_to_contract" in facts
    assert "QUAL001 (permanent)" in facts and "2026-01-01T00:00:00Z" in facts
    assert "&lt;timeout&gt; &amp; co" in sections[2]["text"]["text"]  # Slack's control characters escaped
    assert (
        body["blocks"][-1]["elements"][0]["text"]
        == "<https://dagster.example.com/runs/abc-123|Open the run in Dagster>"
    )
    without_base = slack_payload(make_alert(run_url="/runs/abc-123"))
    assert "`/runs/abc-123`" in without_base["blocks"][-1]["elements"][0]["text"]


def test_messages_are_redacted_and_cut() -> None:
    secret = "sk_live_abcdef123456"
    assert redacted_message(f"auth failed for key {secret}", {secret}) == "auth failed for key ***"
    long = redacted_message("x" * 5000)
    assert len(long) == 2000 and long.endswith("…")


def test_the_sensor_scrubs_the_jobs_resolved_credentials(tmp_path: Path) -> None:
    class Job:
        credentials = {"api_key": "${ACME_KEY}", "missing": "${NOT_SET_ANYWHERE}"}
        connection = {"dsn": "postgresql://app:pa55word-x@db:5432/x", "host": "db"}

    values = job_secret_values(Job(), {"ACME_KEY": "sk_live_abcdef123456"})  # type: ignore[arg-type]
    assert {"sk_live_abcdef123456", "pa55word-x"} <= values and "db" not in values
    assert redacted_message("key sk_live_abcdef123456 was refused", values) == "key *** was refused"


def test_error_codes_are_read_from_the_start_of_a_message() -> None:
    assert error_code_in("QUAL001: 4 of 4 rows") == "QUAL001"
    assert error_code_in("BUG: a connector bug") == "BUG"
    assert error_code_in("ABC123: not ours") is None
    assert error_code_in("rows rejected") is None


def test_the_check_sensor_cursor_is_read_back_or_started_afresh() -> None:
    assert parse_cursor('{"failure": 12, "success": 40}') == {"failure": 12, "success": 40}
    for bad in (None, "", "12", "{}", '{"failure": "x", "success": 1}', '{"failure": true, "success": 1}'):
        assert parse_cursor(bad) is None
    assert parse_cursor('{"failure": 3}', {"failure": object()}) == {"failure": 3}
    assert parse_cursor('{"failure": 3, "success": 4}', {"failure": object()}) is None


def test_sensors_exist_only_with_routes_and_start_running(project: Path) -> None:
    import dagster as dg

    alert_sensors = {RUN_SENSOR_NAME, CHECK_SENSOR_NAME}
    without = build_definitions(load_plan(project, strict=True)).sensors or []
    assert not alert_sensors & {sensor.name for sensor in without}
    with (project / "runner.yaml").open("a") as handle:
        handle.write("alerts:\n  routes: {ops: {type: log}}\n  default: [ops]\n")
    defs = build_definitions(load_plan(project, strict=True))
    sensors = {sensor.name: sensor for sensor in defs.sensors or [] if sensor.name in alert_sensors}
    assert set(sensors) == alert_sensors
    for sensor in sensors.values():
        assert isinstance(sensor, dg.SensorDefinition)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 30


# --------------------------------------------------------------------------- delivery


def route(url: str, **overrides: Any) -> AlertRoute:
    return AlertRoute.model_validate({"type": "webhook", "url": url, "backoff_s": 0.01, **overrides})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_503_is_retried_and_the_alert_delivered_once() -> None:
    with alert_receiver() as receiver:
        receiver.statuses.extend([503])
        (delivery,) = deliver(make_alert(), {"hook": route(receiver.url)}, ["hook"])
    assert (delivery.outcome, delivery.attempts) == ("delivered", 2)
    assert [body["run_id"] for body in receiver.delivered()] == ["abc-123"]
    assert receiver.requests[-1]["headers"]["Content-Type"] == "application/json"


def test_a_429_is_retried_a_400_is_not() -> None:
    with alert_receiver() as receiver:
        receiver.statuses.extend([429, 400])
        (delivery,) = deliver(make_alert(), {"hook": route(receiver.url)}, ["hook"])
    assert (delivery.outcome, delivery.attempts, delivery.reason) == ("refused", 2, "HTTP 400")
    assert receiver.delivered() == []
    assert len(receiver.requests) == 2


def test_a_dead_route_is_logged_without_its_url_and_the_others_still_get_the_alert(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/secret-token"
    monkeypatch.setenv("DEAD_HOOK", dead_url)
    with structlog.testing.capture_logs() as events, alert_receiver() as receiver:
        routes = {
            "dead": route("${DEAD_HOOK}", max_attempts=3),
            "slack": route(receiver.url, type="slack"),
            "ops_log": AlertRoute(type="log"),
        }
        deliveries = deliver(make_alert(), routes, ["dead", "slack", "ops_log"])
    assert [(d.route, d.outcome, d.attempts) for d in deliveries] == [
        ("dead", "dead", 3),
        ("slack", "delivered", 1),
        ("ops_log", "delivered", 1),
    ]
    assert set(receiver.delivered()[0]) == {"text", "blocks"}
    (failed,) = [e for e in events if e["event"] == "alert_route_failed"]
    assert failed["route"] == "dead" and failed["log_level"] == "error" and failed["outcome"] == "dead"
    assert "secret-token" not in repr(events)
    (logged,) = [e for e in events if e["event"] == "alert"]
    assert logged["log_level"] == "error" and logged["tenant"] == "acme" and logged["error_code"] == "RETRY001"


def test_a_retry_after_longer_than_the_deadline_defers_the_route_instead_of_waiting() -> None:
    # Slack rate-limits with Retry-After: 30: waiting would outlast the sensor's tick.
    with alert_receiver() as receiver:
        receiver.statuses.extend([429])
        receiver.retry_after = "30"
        started = time.monotonic()
        (delivery,) = deliver(make_alert(), {"hook": route(receiver.url)}, ["hook"], deadline=started + 3.0)
        took = time.monotonic() - started
    assert (delivery.outcome, delivery.attempts, delivery.reason) == ("deferred", 1, "HTTP 429")
    assert not delivery.final and took < 2.0


def test_a_hanging_endpoint_is_cut_off_at_the_deadline() -> None:
    # A blackholed webhook: 3 attempts of timeout_s each would take 30 s; the deadline is 1.5 s away.
    with alert_receiver() as receiver:
        receiver.delays.extend([60.0] * 3)
        started = time.monotonic()
        hook = route(receiver.url, timeout_s=10, max_attempts=3)
        (delivery,) = deliver(make_alert(), {"hook": hook}, ["hook"], deadline=started + 1.5)
        took = time.monotonic() - started
    assert delivery.outcome == "deferred" and delivery.attempts >= 1
    assert took < 2.5


def test_attempts_made_at_earlier_ticks_count_against_max_attempts() -> None:
    with alert_receiver() as receiver:
        receiver.statuses.extend([503, 503, 503])
        hook = route(receiver.url, max_attempts=3)
        (delivery,) = deliver(make_alert(), {"hook": hook}, ["hook"], attempts_made={"hook": 2})
    assert (delivery.outcome, delivery.attempts) == ("dead", 3)
    assert len(receiver.requests) == 1


def test_the_cursor_keeps_a_half_handled_run_per_kind() -> None:
    kinds = {"failure": object(), "success": object()}
    text = (
        '{"failure": 12, "success": 40, "partial": {"failure": {"id": 15, "done": ["a/b>hook"], '
        '"tries": {"a/b>x": 2}}, "success": {"id": 41, "done": ["c:d>hook"], "errors": 1}}}'
    )
    cursor = parse_tick_cursor(text, kinds)
    assert cursor is not None and cursor.ends == {"failure": 12, "success": 40}
    assert cursor.partial == {
        "failure": PartialRun(15, ["a/b>hook"], {"a/b>x": 2}, 0),
        "success": PartialRun(41, ["c:d>hook"], {}, 1),
    }
    assert parse_tick_cursor(cursor.text(), kinds) == cursor
    # Handling a run end of one kind keeps the other kind's half-handled run.
    cursor.partial_for("success", 42)
    cursor.finish("success", 42)
    assert set(cursor.partial) == {"failure"} and cursor.ends["success"] == 42
    # A partial run the cursor already moved past, or a malformed one, is dropped (the ends hold).
    for partial in ('{"failure": {"id": 12}}', '{"other": {"id": 20}}', '{"failure": {"id": "x"}}', "[1]"):
        found = parse_tick_cursor(f'{{"failure": 12, "partial": {partial}}}', {"failure": object()})
        assert found == TickCursor({"failure": 12})
    assert parse_cursor(text, kinds) == {"failure": 12, "success": 40}


def test_a_route_whose_variable_is_not_set_is_logged_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_HOOK", raising=False)
    with structlog.testing.capture_logs() as events:
        (delivery,) = deliver(make_alert(), {"hook": route("${UNSET_HOOK}")}, ["hook"], resolver=SecretResolver({}))
    assert delivery.outcome == "unusable" and "UNSET_HOOK is not set" in delivery.reason
    assert [e["event"] for e in events] == ["alert_route_failed"]


def test_headers_are_resolved_when_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    with alert_receiver() as receiver:
        hook = route(receiver.url, headers={"Authorization": "Bearer ${HOOK_TOKEN}"})
        deliver(make_alert(), {"hook": hook}, ["hook"], resolver=SecretResolver({"HOOK_TOKEN": "t0ken-value"}))
    assert receiver.requests[0]["headers"]["Authorization"] == "Bearer t0ken-value"


def test_routing_an_alert_to_no_route_sends_nothing() -> None:
    assert deliver(make_alert(), {}, []) == []
    assert AlertsConfig().route_names("acme") == []


def test_definitions_with_alerts_load_without_the_delivery_imports(project: Path) -> None:
    """The sensors come with the code location; HTTP and retry libraries wait for a tick."""
    import subprocess
    import sys

    with (project / "runner.yaml").open("a") as handle:
        handle.write('alerts:\n  routes: {hook: {type: webhook, url: "${HOOK_URL}"}}\n  default: [hook]\n')
    code = (
        "import sys\n"
        "from dativo_dagster.definitions import defs\n"
        "defs.get_repository_def().load_all_definitions()\n"
        "print(sorted(s.name for s in defs.sensors))\n"
        "heavy = ('tenacity', 'urllib3', 'dativo_dagster.alerts.evaluate', 'dativo_dagster.alerts.delivery')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=project)
    sensors, heavy = out.stdout.strip().splitlines()[-2:]
    assert sensors == str(sorted([CHECK_SENSOR_NAME, RUN_SENSOR_NAME, "demo__shop__schedule"]))
    assert heavy == "[]"


def test_a_run_is_matched_to_its_tenant_job_by_what_it_ran_never_by_its_tags_alone(project: Path) -> None:
    import dagster as dg

    from dativo_dagster.alerts.evaluate import PlanIndex, jobs_of_run
    from dativo_dagster.translator import DativoTranslator

    index = PlanIndex(load_plan(project, strict=True), DativoTranslator())
    orders = dg.AssetKey(["demo", "csv", "orders"])
    tagged = dg.DagsterRun(
        job_name="__ASSET_JOB",
        asset_selection=frozenset({orders}),
        tags={"dativo/tenant": "demo", "dativo/job": "shop"},
    )
    from_ui = dg.DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset({orders}))
    foreign = dg.DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset({dg.AssetKey(["other", "x"])}))
    assert [job.label for job in jobs_of_run(tagged, index)] == ["demo/shop"]
    assert [job.label for job in jobs_of_run(from_ui, index)] == ["demo/shop"]
    assert jobs_of_run(foreign, index) == []
    assert jobs_of_run(dg.DagsterRun(job_name="__ASSET_JOB"), index) == []
    # Without an asset selection, the steps the run executed say which job it ran.
    whole = dg.DagsterRun(job_name="__ASSET_JOB")
    assert [job.label for job in jobs_of_run(whole, index, ["demo__shop", "unrelated_op"])] == ["demo/shop"]


def test_tags_naming_another_tenant_never_route_its_alerts(project: Path) -> None:
    # A UI user ran demo's assets tagged dativo/tenant=globex: the alert stays demo's.
    import dagster as dg

    from dativo_dagster.alerts.evaluate import PlanIndex, jobs_of_run
    from dativo_dagster.translator import DativoTranslator

    index = PlanIndex(load_plan(project, strict=True), DativoTranslator())
    orders = dg.AssetKey(["demo", "csv", "orders"])
    lying = dg.DagsterRun(
        job_name="__ASSET_JOB",
        asset_selection=frozenset({orders}),
        tags={"dativo/tenant": "globex", "dativo/job": "shop"},
    )
    with structlog.testing.capture_logs() as events:
        assert [job.label for job in jobs_of_run(lying, index)] == ["demo/shop"]
    assert [e["event"] for e in events] == ["alert_run_tags_ignored"]
    # Tags alone (nothing the run ran belongs to a tenant job here) route nothing.
    only_tags = dg.DagsterRun(job_name="__ASSET_JOB", tags={"dativo/tenant": "demo", "dativo/job": "shop"})
    assert jobs_of_run(only_tags, index) == []


def test_runner_yaml_cannot_set_dativo_or_dagster_tags(tmp_path: Path) -> None:
    (tmp_path / "runner.yaml").write_text(
        "version: 1\njobs:\n  - tenant: acme\n    job: shop\n    tags: {team: data, dativo/tenant: globex}\n"
        "  - tenant: acme\n    job: crm\n    tags: {dagster/priority: '9'}\n"
    )
    with pytest.raises(ConfigProblems) as info:
        load_plan(tmp_path)
    first, second = info.value.problems
    assert first.startswith("runner.yaml: jobs[0].tags: ") and "'dativo/tenant'" in first and "reserved" in first
    assert second.startswith("runner.yaml: jobs[1].tags: ") and "'dagster/priority'" in second


def test_dativos_own_run_tags_come_last() -> None:
    from types import SimpleNamespace

    from dativo_dagster.translator import DativoTranslator

    # Were a job's tags ever to hold a dativo key (built in code, not from runner.yaml), dativo's win.
    job = SimpleNamespace(tenant="acme", name="shop", tags={"dativo/tenant": "globex", "team": "data"})
    tags = DativoTranslator().run_tags(job)  # type: ignore[arg-type]
    assert tags == {"dativo/tenant": "acme", "dativo/job": "shop", "team": "data"}


def test_validate_names_an_alert_routes_unset_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dativo_dagster.cli import main

    with (project / "runner.yaml").open("a") as handle:
        handle.write('alerts:\n  routes: {hook: {type: webhook, url: "${ALERTS_HOOK_URL}"}}\n  default: [hook]\n')
    monkeypatch.delenv("ALERTS_HOOK_URL", raising=False)
    assert main(["--project", str(project), "validate", "--offline"]) == 2
    out = capsys.readouterr()
    assert "CFG001 runner.yaml alerts.routes: environment variable(s) not set: ALERTS_HOOK_URL" in out.out + out.err
    monkeypatch.setenv("ALERTS_HOOK_URL", "https://hooks.example.com/x")
    assert main(["--project", str(project), "validate", "--offline"]) == 0


def test_a_failed_run_waits_for_dagsters_retry_decision() -> None:
    import dagster as dg

    from dativo_dagster.alerts.evaluate import RETRY_DECISION_WAIT_S, retry_decided

    failed = dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE)
    tagged = dg.DagsterRun(
        job_name="__ASSET_JOB", status=dg.DagsterRunStatus.FAILURE, tags={"dagster/will_retry": "false"}
    )
    succeeded = dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.SUCCESS)
    assert retry_decided(failed, 1000.0, run_retries_enabled=False, now=1001.0)
    assert not retry_decided(failed, 1000.0, run_retries_enabled=True, now=1001.0)  # the tag is on its way
    assert retry_decided(failed, 1000.0, run_retries_enabled=True, now=1001.0 + RETRY_DECISION_WAIT_S)
    assert retry_decided(tagged, 1000.0, run_retries_enabled=True, now=1001.0)
    assert retry_decided(succeeded, 1000.0, run_retries_enabled=True, now=1001.0)
