"""The demo tenant end to end through Dagster (``dg.materialize``) into a real Iceberg catalog."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan

ORDERS = dg.AssetKey(["demo", "csv", "orders"])
CUSTOMERS = dg.AssetKey(["demo", "csv", "customers"])


def run(project: Path, instance: dg.DagsterInstance, *keys: dg.AssetKey) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_plan(project, strict=True))
    return dg.materialize(
        assets=list(defs.assets or []),
        selection=list(keys) or None,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def catalog(project: Path) -> SqlCatalog:
    home = project / ".dativo"
    return SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")


def table_rows(project: Path, name: str) -> list[dict[str, Any]]:
    return catalog(project).load_table(("demo", name)).scan().to_arrow().to_pylist()


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization for {key.to_user_string()}")


def append_csv(path: Path, rows: list[list[object]]) -> None:
    with path.open("a", newline="") as handle:
        csv.writer(handle).writerows(rows)


def step_failures(result: dg.ExecuteInProcessResult) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def test_first_run_then_rerun_loads_nothing_new(project: Path, instance: dg.DagsterInstance) -> None:
    first = run(project, instance)
    assert first.success
    md = metadata(first, ORDERS)
    assert md["dativo/rows_written"] == 3000
    assert md["dagster/row_count"] == 3000
    assert md["dagster/table_name"] == "dativo.demo.orders"
    assert '"value":3000' in md["dativo/cursor"]
    assert isinstance(md["dativo/snapshot_id"], int)
    assert md["dativo/integrity_files"] == 1 and "/metadata/dativo-integrity-" in md["dativo/integrity_manifest"]
    assert next(c.name for c in md["dagster/column_schema"].columns) == "order_id"
    assert metadata(first, CUSTOMERS)["dagster/row_count"] == 500

    second = run(project, instance)
    assert second.success
    orders = metadata(second, ORDERS)
    assert orders["dativo/rows_written"] == 0 and orders["dativo/committed"] is False
    assert orders["dativo/snapshot_id"] == md["dativo/snapshot_id"]
    assert "agree" in orders["dativo/cursor_origin"]
    customers = metadata(second, CUSTOMERS)
    assert customers["dativo/rows_new"] == 0 and customers["dagster/row_count"] == 500
    # the lookback re-read identical rows: no snapshot that rewrites files to the same content
    assert customers["dativo/committed"] is False and customers["dativo/rows_written"] == 0
    ids = [r["customer_id"] for r in table_rows(project, "customers")]
    assert len(ids) == len(set(ids)) == 500


def test_appended_rows_load_exactly_once(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance).success
    append_csv(
        project / "tenants/demo/data/orders.csv",
        [[3000 + i, 1, "paid", "9.99", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 6)],
    )
    result = run(project, instance, ORDERS)
    assert metadata(result, ORDERS)["dativo/rows_written"] == 5
    assert run(project, instance, ORDERS).success
    ids = [r["order_id"] for r in table_rows(project, "orders")]
    assert len(ids) == len(set(ids)) == 3005


def test_updated_rows_are_merged_on_the_primary_key(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance).success
    append_csv(
        project / "tenants/demo/data/customers.csv",
        [
            [
                7,
                "new7@example.com",
                "Renamed",
                "DE",
                "2024-01-01T21:00:00+00:00",
                "2025-06-01T00:00:00+00:00",
            ],
            [
                501,
                "c501@example.com",
                "Newcomer",
                "FR",
                "2025-06-01T00:00:00+00:00",
                "2025-06-01T00:00:00+00:00",
            ],
        ],
    )
    result = run(project, instance, CUSTOMERS)
    md = metadata(result, CUSTOMERS)
    assert md["dativo/rows_new"] == 1 and md["dagster/row_count"] == 501
    rows = {r["customer_id"]: r for r in table_rows(project, "customers")}
    assert len(rows) == 501
    assert rows[7]["name"] == "Renamed"


def test_quarantine_under_threshold_commits_good_rows(project: Path, instance: dg.DagsterInstance) -> None:
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("objects:\n", "quality: {max_rejected_rate: 0.7}\nobjects:\n", 1))
    assert run(project, instance, ORDERS).success
    append_csv(
        project / "tenants/demo/data/orders.csv",
        [
            [3001, 1, "paid", "not-a-number", "EUR", "2025-02-01T00:00:00Z"],
            [3002, 1, "paid", "5.00", "EUR", "2025-02-01T00:00:00Z"],
            [3003, 1, None, "5.00", "EUR", "2025-02-01T00:00:00Z"],
        ],
    )
    result = run(project, instance, ORDERS)
    assert result.success
    md = metadata(result, ORDERS)
    assert md["dativo/rows_written"] == 1 and md["dativo/rows_rejected"] == 2
    assert md["dativo/quarantine_table"] == "demo.orders__quarantine"
    rejected = table_rows(project, "orders__quarantine")
    reasons = {r["order_id"]: r["_dativo_reason"] for r in rejected}
    assert "amount: cannot convert 'not-a-number'" in reasons["3001"]
    assert "status: required value is missing" in reasons["3003"]
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "rows_conform_to_contract"]
    # Rows were rejected: a warning even under the threshold, never a green check.
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["rows_rejected"].value == 2


def test_rejected_rate_above_threshold_fails_with_qual001_and_commits_nothing(
    project: Path, instance: dg.DagsterInstance
) -> None:
    assert run(project, instance, ORDERS).success
    before = catalog(project).load_table(("demo", "orders")).current_snapshot().snapshot_id
    append_csv(
        project / "tenants/demo/data/orders.csv",
        [[3000 + i, 1, "paid", "bad", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 5)],
    )
    result = run(project, instance, ORDERS)
    assert not result.success
    (failure,) = step_failures(result)
    data = failure.step_failure_data.user_failure_data
    assert data.metadata["dativo/error_code"].value == "QUAL001"
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    table = catalog(project).load_table(("demo", "orders"))
    assert table.current_snapshot().snapshot_id == before
    assert len(table_rows(project, "orders__quarantine")) == 4


def test_additive_schema_evolution(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    v1 = (project / "connectors/schemas/shop/orders.v1.yaml").read_text()
    v2 = v1.replace("version: 1", "version: 2") + "  - {name: channel, type: string}\n"
    (project / "connectors/schemas/shop/orders.v2.yaml").write_text(v2)
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("{name: shop/orders, version: 1}", "{name: shop/orders, version: 2}"))
    data = project / "tenants/demo/data/orders.csv"
    lines = data.read_text().splitlines()
    lines = [lines[0] + ",channel"] + [line + "," for line in lines[1:]]
    lines.append("3001,1,paid,1.00,EUR,2025-02-01T00:00:00Z,web")
    data.write_text("\n".join(lines) + "\n")
    result = run(project, instance, ORDERS)
    assert result.success
    md = metadata(result, ORDERS)
    assert "add_column channel" in md["dativo/schema_changes"]
    table = catalog(project).load_table(("demo", "orders")).scan().to_arrow()
    assert "channel" in table.column_names
    assert table.num_rows == 3001
    assert pc.count(table.column("channel")).as_py() == 1


def test_incompatible_schema_change_is_cfg001_and_not_retried(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    contract = project / "connectors/schemas/shop/orders.v1.yaml"
    contract.write_text(
        contract.read_text().replace("{name: customer_id, type: int64", "{name: customer_id, type: string")
    )
    append_csv(project / "tenants/demo/data/orders.csv", [[3001, 1, "paid", "1.00", "EUR", "2025-02-01T00:00:00Z"]])
    result = run(project, instance, ORDERS)
    assert not result.success
    (failure,) = step_failures(result)
    user = failure.step_failure_data.user_failure_data
    assert user.metadata["dativo/error_code"].value == "CFG001"
    assert "customer_id" in user.description and "int64 -> string" in user.description
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(table_rows(project, "orders")) == 3000


def test_full_refresh_overwrites_atomically(project: Path, instance: dg.DagsterInstance) -> None:
    job = project / "tenants/demo/jobs/shop.yaml"
    text = job.read_text().replace(
        "strategy: append        # order_id only grows: new rows are those past the last id\n"
        "      cursor_field: order_id",
        "strategy: full_refresh",
    )
    job.write_text(text)
    assert run(project, instance, ORDERS).success
    data = project / "tenants/demo/data/orders.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:101]) + "\n")  # the source shrank to 100 rows
    result = run(project, instance, ORDERS)
    md = metadata(result, ORDERS)
    assert md["dagster/row_count"] == 100
    table = catalog(project).load_table(("demo", "orders"))
    assert table.current_snapshot().summary.operation.value == "overwrite"
    assert len(table.scan().to_arrow()) == 100
    history = [s.snapshot_id for s in table.snapshots()]
    assert len(history) == 2, "one snapshot per run: readers never see an empty table"


def test_new_files_by_modification_time(project: Path, instance: dg.DagsterInstance) -> None:
    drops = project / "tenants/demo/data/drops"
    drops.mkdir()
    header = "order_id,customer_id,status,amount,currency,ordered_at\n"
    (drops / "a.csv").write_text(header + "1,1,paid,1.00,EUR,2024-01-01T00:00:00Z\n")
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(
        job.read_text()
        .replace("options: {path: orders.csv}", "options: {path: 'drops/*.csv'}")
        .replace(
            "strategy: append        # order_id only grows: new rows are those past the last id\n"
            "      cursor_field: order_id",
            "strategy: file_mtime",
        )
    )
    assert metadata(run(project, instance, ORDERS), ORDERS)["dativo/rows_written"] == 1
    (drops / "b.csv").write_text(
        header + "2,1,paid,1.00,EUR,2024-01-01T00:00:00Z\n3,1,paid,1.00,EUR,2024-01-01T00:00:00Z\n"
    )
    assert metadata(run(project, instance, ORDERS), ORDERS)["dativo/rows_written"] == 2
    assert metadata(run(project, instance, ORDERS), ORDERS)["dativo/rows_written"] == 0
    assert sorted(r["order_id"] for r in table_rows(project, "orders")) == [1, 2, 3]


def test_rewritten_file_replaces_its_rows_by_modification_time(project: Path, instance: dg.DagsterInstance) -> None:
    drops = project / "tenants/demo/data/drops"
    drops.mkdir()
    header = "order_id,customer_id,status,amount,currency,ordered_at\n"
    row = "{},1,{},{},EUR,2024-01-01T00:00:00Z\n"
    (drops / "a.csv").write_text(header + "".join(row.format(i, "paid", "1.00") for i in (1, 2, 3)))
    (drops / "b.csv").write_text(header + row.format(9, "paid", "9.00"))
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(
        job.read_text()
        .replace("options: {path: orders.csv}", "options: {path: 'drops/*.csv'}")
        .replace(
            "strategy: append        # order_id only grows: new rows are those past the last id\n"
            "      cursor_field: order_id",
            "strategy: file_mtime",
        )
    )
    assert metadata(run(project, instance, ORDERS), ORDERS)["dagster/row_count"] == 4
    # a.csv is rewritten with changed and fewer rows: they replace its earlier rows in one commit
    (drops / "a.csv").write_text(header + row.format(1, "refunded", "1.00") + row.format(4, "paid", "4.00"))
    later = (drops / "a.csv").stat().st_mtime_ns + 10**9
    os.utime(drops / "a.csv", ns=(later, later))
    result = run(project, instance, ORDERS)
    assert metadata(result, ORDERS)["dagster/row_count"] == 3
    rows = sorted((r["order_id"], r["status"], r["_dativo_file"]) for r in table_rows(project, "orders"))
    assert rows == [(1, "refunded", "drops/a.csv"), (4, "paid", "drops/a.csv"), (9, "paid", "drops/b.csv")]


def test_one_object_failing_does_not_stop_the_other(project: Path, instance: dg.DagsterInstance) -> None:
    (project / "tenants/demo/data/customers.csv").unlink()
    result = run(project, instance)
    assert not result.success
    assert metadata(result, ORDERS)["dativo/rows_written"] == 3000
    (failure,) = step_failures(result)
    user = failure.step_failure_data.user_failure_data
    assert user.metadata["dativo/failed_objects"].value == "customers"
    assert user.metadata["dativo/error_code"].value == "CFG001"
