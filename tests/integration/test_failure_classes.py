"""Failures through Dagster: bugs are not retried and spare their siblings, retries end in RETRY001,
permanent storage problems are CFG001, and the IO manager reads each asset from its own target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.errors import ExtractError
from dativo_dagster.resources import IcebergIOManager
from dativo_dagster.sources.csv import CsvSource
from tests.integration.test_csv_pipeline import CUSTOMERS, ORDERS, metadata, run, step_failures


def failure_metadata(result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    found = []
    for event in step_failures(result):
        data = event.event_specific_data.user_failure_data  # type: ignore[union-attr]
        found.append({k: v.value for k, v in data.metadata.items()} | {"description": data.description})
    return found


def set_retries(project: Path, max_retries: int) -> None:
    runner = project / "runner.yaml"
    runner.write_text(
        runner.read_text().replace("max_retries: 3\n    delay_s: 10", f"max_retries: {max_retries}\n    delay_s: 0")
    )


def test_a_bug_in_one_object_fails_it_once_and_its_sibling_still_commits(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retries(project, 3)
    original = CsvSource.read
    calls: list[str] = []

    def read(self: CsvSource, request: Any) -> Any:
        calls.append(request.obj.name)
        if request.obj.name == "customers":
            raise TypeError("a connector bug")
        return original(self, request)

    monkeypatch.setattr(CsvSource, "read", read)
    result = run(project, dg.DagsterInstance.ephemeral())
    assert not result.success
    assert metadata(result, ORDERS)["dativo/rows_written"] == 3000  # the sibling's event is there
    (failure,) = failure_metadata(result)  # one step failure: no retry of a bug
    assert failure["dativo/error_code"] == "BUG"
    assert failure["dativo/error_class"] == "bug"
    assert "TypeError: a connector bug" in failure["dativo/traceback"]
    assert calls.count("customers") == 1


def test_transient_failures_end_in_retry001_when_the_budget_is_spent(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retries(project, 2)

    def read(self: CsvSource, request: Any) -> Any:
        raise ExtractError("source timed out")

    monkeypatch.setattr(CsvSource, "read", read)
    result = run(project, dg.DagsterInstance.ephemeral(), ORDERS)
    assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 2
    (failure,) = failure_metadata(result)
    assert failure["dativo/error_code"] == "RETRY001"
    assert failure["dativo/error_class"] == "permanent"
    assert failure["description"].startswith("RETRY001: demo/shop: retries exhausted after 3 attempt(s)")
    assert "EXT001" in failure["description"]


def test_an_unusable_warehouse_is_cfg001_naming_it_and_not_retried(project: Path) -> None:
    set_retries(project, 3)
    target = project / "connectors/targets/local.yaml"
    blocker = project / "not-a-directory"
    blocker.write_text("a file where the warehouse should be\n")
    target.write_text(
        target.read_text().replace('warehouse: "${DATIVO_HOME:-.dativo}/warehouse"', "warehouse: not-a-directory/wh")
    )
    result = run(project, dg.DagsterInstance.ephemeral(), ORDERS)
    (failure,) = failure_metadata(result)
    assert failure["dativo/error_code"] == "CFG001"
    assert "not-a-directory/wh" in failure["description"]


def test_a_contract_column_named_like_a_dativo_column_is_cfg001_at_load(project: Path) -> None:
    contract = project / "connectors/schemas/shop/orders.v1.yaml"
    contract.write_text(contract.read_text().replace("name: status", "name: _dativo_reason"))
    plan = load_plan(project)
    assert plan.broken and "uses the prefix '_dativo_'" in plan.problems[0]


def test_the_io_manager_reads_an_asset_from_its_own_target(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = project / "connectors/targets/other.yaml"
    other.write_text(
        "name: other\ntype: iceberg\ncatalog_name: other\n"
        "catalog: {type: sql, uri: 'sqlite:///${DATIVO_HOME:-.dativo}/other.db'}\n"
        "warehouse: '${DATIVO_HOME:-.dativo}/other-warehouse'\n"
    )
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: local", "recipe: other"))
    assert run(project, dg.DagsterInstance.ephemeral(), ORDERS).success

    @dg.asset(ins={"orders": dg.AssetIn(key=ORDERS)}, io_manager_key="memory")
    def order_count(orders: pa.Table) -> int:
        return orders.num_rows

    defs = build_definitions(load_plan(project, strict=True))
    result = dg.materialize(
        [*list(defs.assets or []), order_count],
        selection=[order_count.key],
        resources={
            **defs.resources,
            "io_manager": IcebergIOManager(target="local", project_dir=str(project)),
            "memory": dg.InMemoryIOManager(),
        },
        raise_on_error=False,
    )
    assert result.success
    assert result.output_for_node("order_count") == 3000


def test_a_user_asset_cannot_write_a_tenant_namespace(project: Path) -> None:
    @dg.asset(key=["demo", "report"])
    def report() -> pa.Table:
        return pa.table({"x": [1]})

    result = dg.materialize(
        [report], resources={"io_manager": IcebergIOManager(project_dir=str(project))}, raise_on_error=False
    )
    assert not result.success
    text = str([e.event_specific_data for e in step_failures(result)])
    assert "belongs to tenant 'demo'" in text


def test_customers_key_is_used() -> None:
    assert CUSTOMERS.path[-1] == "customers"


def test_a_rejected_credential_stops_the_run_before_the_other_objects_start(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.errors import AuthError

    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("owners:", "max_workers: 1\nowners:"))
    started: list[str] = []

    def read(self: CsvSource, request: Any) -> Any:
        started.append(request.obj.name)
        raise AuthError("the key was revoked")

    monkeypatch.setattr(CsvSource, "read", read)
    result = run(project, dg.DagsterInstance.ephemeral())
    assert started == ["orders"]  # customers never started
    (failure,) = failure_metadata(result)
    summary = failure["dativo/summary"]
    assert summary["orders"]["error_code"] == "AUTH001"
    assert summary["orders"]["errors_by_severity"]["CRITICAL"] == 1
    assert summary["customers"]["status"] == "failed" and summary["customers"]["error_code"] == "AUTH001"


def test_cli_writes_the_processing_summary(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from dativo_dagster.cli import main

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    out = project / "summary.json"
    assert main(["--project", str(project), "run", "demo/shop", "--summary-json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["job"] == "demo/shop" and summary["exit_code"] == 0
    assert summary["objects"]["orders"]["rows_written"] == 3000
    assert summary["totals"]["rows_written"] == 3500
    assert set(summary["objects"]["orders"]["errors_by_severity"]) == {"LOW", "MEDIUM", "HIGH", "CRITICAL"}


def test_the_summary_says_retry001_when_retries_are_spent(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_retries(project, 1)

    def read(self: CsvSource, request: Any) -> Any:
        raise ExtractError("source timed out")

    monkeypatch.setattr(CsvSource, "read", read)
    result = run(project, dg.DagsterInstance.ephemeral(), ORDERS)
    (failure,) = failure_metadata(result)
    line = failure["dativo/summary"]["orders"]
    assert line["error_code"] == "RETRY001" and line["cause"] == "EXT001"
