"""The diagnosis table, failure records, the debug report, the compare.json contract and status judgements."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from dativo_dagster.config.secrets import register_secrets
from dativo_dagster.diagnose import (
    KINDS,
    Report,
    RunView,
    classify,
    compare_path,
    config_diff,
    config_file_copy,
    failure_record,
    read_compare,
    render_report,
    shape_diff,
    top_reasons,
)
from dativo_dagster.errors import AuthError, QualityError, RetryExhaustedError, UnexpectedError
from dativo_dagster.status import ObjectStatus, cursor_time, lag_text

CANARY = "sk_test_CANARY_unit_5f1e2d3c"


def request(status: int | None, excerpt: str = "", failure: str | None = None) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": "/v1/customers",
        "status": status,
        "failure": failure,
        "response_excerpt": excerpt,
        "elapsed_s": 0.01,
    }


CASES: list[tuple[str, str | None, str, dict[str, Any] | None, dict[str, Any]]] = [
    ("credentials", "AUTH001", "stripe: GET /v1/customers: HTTP 401 Invalid API Key provided", request(401), {}),
    ("credentials", "AUTH001", "postgres: password authentication failed for user 'app'", None, {}),
    ("credentials", "AUTH001", "hubspot: the access token expired", None, {}),
    ("missing_scope", "AUTH001", "stripe: HTTP 403 does not have the required permissions", request(403), {}),
    ("missing_scope", "AUTH001", "hubspot: MISSING_SCOPES: crm.objects.deals.read", None, {}),
    (
        "rate_limited",
        "RETRY001",
        "stripe: GET /v1/charges: rate limited and asked to wait 3600 s (more than 120 s): the quota is exhausted",
        request(429),
        {"cause_code": "RETRY001"},
    ),
    (
        "rate_limited",
        "RETRY001",
        "GET /v1/charges failed 5 time(s); last failure: EXT001 HTTP 429 rate limited",
        None,
        {},
    ),
    ("endpoint_gone", "CFG001", "GET /v1/customers page 1: HTTP 404 (Unrecognized request URL.)", request(404), {}),
    ("endpoint_gone", "CFG001", "GET /v1/customers page 1: HTTP 404 (Unrecognized request URL.)", None, {}),
    ("response_shape", "PAGE001", "GET /v1/customers page 1: the response is not valid JSON", None, {}),
    ("response_shape", "PAGE001", "page 1: item 0 is missing the field 'created'", None, {}),
    (
        "response_shape",
        "QUAL001",
        "100 of 100 rows violate the contract",
        None,
        {
            "cause_code": "QUAL001",
            "rejections": [{"reason": "email: required column missing from the source", "rows": 10}],
        },
    ),
    (
        "connectivity",
        "RETRY001",
        "GET /v1/customers failed 1 time(s); last failure: EXT001 no answer (NewConnectionError: Connection refused)",
        request(None, failure="NewConnectionError: Connection refused"),
        {"cause_code": "RETRY001"},
    ),
    ("connectivity", "EXT001", "could not translate host name 'db.invalid' to address", None, {}),
    (
        "connectivity",
        "RETRY001",
        "GET /x failed 5 time(s); last failure: EXT001 GET /x: no answer (timed out)",
        None,
        {},
    ),
    (
        "source_error",
        "RETRY001",
        "GET /v1/charges failed 5 time(s); last failure: EXT001 HTTP 503 <html>",
        request(503),
        {},
    ),
    ("storage", "STG001", "another run committed demo.orders while this run was reading", None, {}),
    (
        "data_quality",
        "QUAL001",
        "1500 of 3000 rows (50.0%) violate the contract",
        None,
        {"rejections": [{"reason": "amount: cannot convert '…' to decimal(12,2)", "rows": 10}]},
    ),
    ("pagination", "PAGE001", "the page cursor loops back to page 3", None, {}),
    ("config", "CFG001", "tenants/demo/jobs/shop.yaml: objects[0].options.path: no such file", None, {}),
    ("state", "STATE001", "cursor would move backwards from 10 to 5", None, {}),
    ("bug", "BUG", "unexpected TypeError: a connector bug", None, {}),
    ("retries_exhausted", "RETRY001", "retries exhausted after 3 attempt(s)", None, {}),
    ("unknown", None, "the run failed without recording a result", None, {}),
]


@pytest.mark.parametrize(("kind", "code", "message", "req", "context"), CASES)
def test_each_failure_kind_is_recognised(
    kind: str, code: str | None, message: str, req: dict[str, Any] | None, context: dict[str, Any]
) -> None:
    diagnosis = classify(code, message, req, context)
    assert diagnosis.kind.kind == kind, diagnosis.evidence
    assert diagnosis.kind.cause and diagnosis.kind.fix  # every row of the table says why and what to do


def test_every_kind_of_the_table_is_reached_by_a_case() -> None:
    assert {case[0] for case in CASES} == set(KINDS)


def test_a_failure_record_is_structured_and_redacted() -> None:
    register_secrets([CANARY])
    error = AuthError(f"stripe: GET /v1/customers: HTTP 401 Invalid API Key provided: {CANARY}", hint="check the key")
    error.context["request"] = request(401, excerpt=f'{{"error": "bad key {CANARY}"}}')
    record = failure_record(error, duration_s=1.23456, cursor_before="created=2026-01-01", config_files={})
    assert record["code"] == "AUTH001" and record["class"] == "permanent" and record["error_type"] == "AuthError"
    assert record["request"]["status"] == 401 and record["request"]["path"] == "/v1/customers"
    assert record["duration_s"] == 1.235 and record["hint"] == "check the key"
    assert CANARY not in json.dumps(record)


def test_a_quality_record_keeps_a_preview_and_the_top_reasons() -> None:
    sample = [
        {"reason": f"amount: cannot convert 'x{i}' to decimal(12,2)", "values": {"amount": f"x{i}", "id": str(i)}}
        for i in range(8)
    ] + [{"reason": "id: required value is missing; amount: cannot convert 'y' to decimal(12,2)", "values": {}}]
    error = QualityError("9 of 10 rows violate the contract", rows_read=10, rows_rejected=9, quarantine_sample=sample)
    retried = failure_record(RetryExhaustedError("spent"), code="RETRY001")
    assert retried["code"] == "RETRY001"
    record = failure_record(error)
    assert record["rows_rejected"] == 9 and len(record["quarantine_preview"]) == 5
    assert record["rejections"][0] == {"reason": "amount: cannot convert '…' to decimal(12,2)", "rows": 9}
    assert record["rejections"][1] == {"reason": "id: required value is missing", "rows": 1}
    assert top_reasons([]) == []


def test_a_bug_record_keeps_the_end_of_its_traceback() -> None:
    bug = UnexpectedError("unexpected TypeError: boom", traceback="Traceback\n  File x\nTypeError: boom")
    record = failure_record(bug)
    assert record["class"] == "bug" and record["traceback_tail"].endswith("TypeError: boom")


def test_shape_diff_names_missing_required_fields_and_new_ones() -> None:
    records = [{"values": {"id": "1", "email": None, "phone": "+1"}}, {"values": {"id": "2", "email": ""}}]
    assert shape_diff(["id", "email", "name"], ["id", "email"], records) == {"missing": ["email"], "new": ["phone"]}
    assert shape_diff(["id"], ["id"], []) == {"missing": [], "new": []}


def test_config_diff_shows_what_changed_since_the_failing_run(tmp_path: Path) -> None:
    job = tmp_path / "tenants/acme/jobs/pay.yaml"
    job.parent.mkdir(parents=True)
    job.write_text("objects:\n  - name: customers\n")
    name, entry = config_file_copy(job, tmp_path)  # type: ignore[misc]
    assert name == "tenants/acme/jobs/pay.yaml"
    assert config_diff({name: entry}, tmp_path) == []
    job.write_text("objects:\n  - name: customers\n    options: {resource: customers}\n")
    (diff,) = config_diff({name: entry}, tmp_path)
    assert "+    options: {resource: customers}" in diff
    job.unlink()
    assert config_diff({name: entry}, tmp_path) == [f"{name}: removed since the failing run"]


def comparison(tmp_path: Path, **changes: Any) -> Path:
    path = compare_path(tmp_path / ".dativo", "acme", "pay", "customers")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": 1,
        "object": "acme/pay/customers",
        "created_at": "2026-01-02T00:00:00+00:00",
        "passed": False,
        "checks": [{"name": "row_count", "passed": False, "detail": "90 vs 100 rows"}],
        **changes,
    }
    path.write_text(json.dumps(data))
    return path


def test_the_compare_file_contract(tmp_path: Path) -> None:
    path = comparison(tmp_path)
    assert path == tmp_path / ".dativo/diagnose/acme__pay__customers/compare.json"
    found, why = read_compare(path)
    assert why is None and found is not None and found["checks"][0]["name"] == "row_count"
    assert read_compare(comparison(tmp_path, version=2))[1] == "compare.json: not a version 1 comparison"
    assert "'passed'" in str(read_compare(comparison(tmp_path, passed="yes"))[1])
    assert "time zone" in str(read_compare(comparison(tmp_path, created_at="2026-01-02T00:00:00"))[1])
    assert "every check" in str(read_compare(comparison(tmp_path, checks=[{"passed": True}]))[1])
    path.unlink()
    assert "no scratch comparison" in str(read_compare(path)[1])


def test_the_report_has_every_section_and_no_secret(tmp_path: Path) -> None:
    register_secrets([CANARY])
    error = AuthError(f"HTTP 401 Invalid API Key provided: {CANARY}")
    error.context["request"] = request(401, excerpt=f"bad key {CANARY}")
    record = failure_record(error)
    at = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc).timestamp()
    failure = RunView("run-2", "failure", at, duration_s=0.5, code="AUTH001", message=record["message"], record=record)
    success = RunView("run-1", "success", at - 3600, duration_s=2.0, rows_written=120, cursor="created=2026-01-01")
    after = RunView("run-3", "success", at + 60, duration_s=2.1, rows_written=5, rows_rejected=0)
    report = Report(
        label="acme/pay/customers",
        failure=failure,
        diagnosis=classify("AUTH001", record["message"], record["request"], record),
        last_success=success,
        changes_since_success=["tenants/acme/jobs/pay.yaml modified since the last success (before the failure)"],
        fix_diffs=["--- a\n+++ b\n-old\n+new\n"],
        fix_checked=True,
        after=after,
        comparison=read_compare(comparison(tmp_path))[0],
        generated_at=at + 120,
    )
    text = render_report(report)
    for heading in ("## Summary", "## Root-cause analysis", "## Fix applied", "## Validation", "## Next steps"):
        assert heading in text
    assert "**Status:** recovered" in text and "expired or revoked credentials" in text
    assert "GET /v1/customers → HTTP 401" in text and "120 row(s) written" in text
    assert "+new" in text and "FAIL row_count: 90 vs 100 rows" in text
    assert "Data quality: pass" in text and "- [x] The fix is validated" in text
    assert "`dativo status acme/pay`" in text
    assert CANARY not in text and CANARY not in json.dumps(report.as_json())
    report.after, report.fix_diffs, report.comparison = None, [], None
    text = render_report(report)
    assert "**Status:** failing" in text and "No run of the object since the failure." in text
    assert "None detected" in text and "- [ ] Apply the fix" in text


# --------------------------------------------------------------------------- status


def test_cursor_times_and_lags() -> None:
    assert cursor_time("2026-01-01T00:00:00+00:00") == (1_767_225_600.0, "timestamp")
    assert cursor_time("2026-01-01")[0] == 1_767_225_600.0
    assert cursor_time(1_767_225_600, "created") == (1_767_225_600.0, "epoch seconds")
    assert cursor_time(1_767_225_600_000, "updated") == (1_767_225_600.0, "epoch milliseconds")
    assert cursor_time(1_767_225_600, "append") == (None, "n/a")  # an id is no time
    assert cursor_time(42, "created") == (None, "n/a")
    assert cursor_time({"mtime_ns": 1_767_225_600_000_000_000, "files": []}) == (
        1_767_225_600.0,
        "file modification time",
    )
    assert cursor_time("not a time") == (None, "n/a")
    assert [lag_text(s) for s in (None, 5, 125, 7200 + 60, 3 * 86400 + 3600)] == ["n/a", "5s", "2m", "2h 1m", "3d 1h"]


def status_of(*outcomes: str, sla: float | None = None, now: float = 10_000.0) -> ObjectStatus:
    runs = [
        RunView(f"r{i}", outcome, now - 60 * (i + 1), duration_s=float(i + 1), rows_written=10 * (i + 1))
        for i, outcome in enumerate(outcomes)
    ]
    status = ObjectStatus(label="acme/pay/customers", runs=runs, sla_minutes=sla)
    status.judge(3, now)
    return status


def test_three_failures_in_a_row_are_unhealthy() -> None:
    failing = status_of("failure", "failure", "failure", "success")
    assert failing.streak == 3 and failing.unhealthy == ["failed 3 run(s) in a row (threshold 3)"]
    assert failing.last_success is not None and failing.last_success.run_id == "r3"
    assert failing.success_rate == 0.25 and failing.median_duration_s == 2.5
    recovering = status_of("success", "failure", "failure", "failure")
    assert recovering.streak == 0 and not recovering.unhealthy
    assert status_of().unhealthy == [] and status_of().success_rate is None


def test_an_object_past_its_freshness_sla_is_unhealthy() -> None:
    assert status_of("success", sla=5).unhealthy == []
    stale = status_of("failure", "success", sla=1)
    assert stale.unhealthy and "over the freshness SLA (1 min)" in stale.unhealthy[0]
    assert "no successful run" in status_of("failure", sla=1).unhealthy[0]


def test_rows_trend_compares_the_last_run_with_the_median() -> None:
    assert status_of("success", "success", "success").trend == "down 0.5x median"
    assert status_of("success").trend == "n/a"


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        (
            "RETRY001",
            "GET /drive/v3/files: Google's daily quota is spent (dailyLimitExceeded: ...)",
            403,
            "rate_limited",
        ),
        (
            "RETRY001",
            "GET /drive/v3/files failed 5 time(s); last failure: EXT001 HTTP 429 rate limited",
            403,
            "rate_limited",
        ),
        ("STG001", "writing data files failed: [Errno 122] Disk quota exceeded", None, "storage"),
        (
            "AUTH001",
            "acme/db/orders: (1142, \"SELECT command denied to user 'etl'@'%' for table 'orders'\")",
            None,
            "missing_scope",
        ),
        (
            "AUTH001",
            "acme/db/orders: Access denied for user 'etl'@'10.0.0.1' (using password: YES)",
            None,
            "credentials",
        ),
        ("AUTH001", "GET /v1/charges: HTTP 403 insufficient permissions", 403, "missing_scope"),
    ],
)
def test_the_layer_decides_before_the_wording(code: str, message: str, status: int | None, kind: str) -> None:
    request = {"method": "GET", "path": "/x", "status": status} if status is not None else None
    assert classify(code, message, request).kind.kind == kind
