"""Asset checks through Dagster (``dg.materialize``) on the demo tenant, against a real Iceberg table.

Every check is shown passing and failing, in a run and executed alone (the UI's "Execute" on a
check: the check is selected, its asset is not).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from pyiceberg.types import StringType

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.errors import AuthError, ExtractError
from dativo_dagster.sources.csv.source import CsvSource

ORDERS = dg.AssetKey(["demo", "csv", "orders"])
CUSTOMERS = dg.AssetKey(["demo", "csv", "customers"])
WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def run(project: Path, instance: dg.DagsterInstance, selection: Any = None) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_plan(project, strict=True))
    return dg.materialize(
        assets=list(defs.assets or []),
        selection=selection,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def checks_alone(project: Path, instance: dg.DagsterInstance, key: dg.AssetKey = ORDERS) -> dg.ExecuteInProcessResult:
    """What the UI's "Execute" on the asset's checks launches: the checks, not the asset."""
    return run(project, instance, dg.AssetSelection.checks_for_assets(key))


def evaluations(result: dg.ExecuteInProcessResult, key: dg.AssetKey = ORDERS) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == key}


def orders_table(project: Path) -> Table:
    home = project / ".dativo"
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    return catalog.load_table(("demo", "orders"))


def append_orders(project: Path, rows: list[list[object]]) -> None:
    with (project / "tenants/demo/data/orders.csv").open("a", newline="") as handle:
        csv.writer(handle).writerows(rows)


def configure(project: Path, yaml: str) -> None:
    """Add job-level settings (``quality:``, ``checks:``) to the demo job."""
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("objects:\n", yaml + "objects:\n", 1))


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def test_clean_run_passes_every_check(project: Path, instance: dg.DagsterInstance) -> None:
    configure(project, "checks: {freshness: {max_age_minutes: 60}}\n")
    result = run(project, instance)
    assert result.success
    for key in (ORDERS, CUSTOMERS):
        found = evaluations(result, key)
        assert set(found) == {
            "rows_conform_to_contract",
            "required_columns_not_null",
            "primary_key_unique",
            "schema_matches_contract",
            "volume_within_history",
            "fresh_within_sla",
            "quarantine_growth",
        }
        assert all(e.passed for e in found.values()), {n: e.description for n, e in found.items() if not e.passed}
    orders = evaluations(result)
    assert orders["rows_conform_to_contract"].metadata["rows_read"].value == 3000
    assert orders["primary_key_unique"].metadata["rows_scanned"].value == 3000


def test_rejected_rows_under_the_threshold_are_a_warning_with_reasons(
    project: Path, instance: dg.DagsterInstance
) -> None:
    configure(project, "quality: {max_rejected_rate: 0.7}\n")
    assert run(project, instance, [ORDERS]).success
    append_orders(
        project,
        [
            [3001, 1, "paid", "not-a-number", "EUR", "2025-02-01T00:00:00Z"],
            [3002, 1, "paid", "5.00", "EUR", "2025-02-01T00:00:00Z"],
            [3003, 1, None, "oops", "EUR", "2025-02-01T00:00:00Z"],
        ],
    )
    result = run(project, instance, [ORDERS])
    assert result.success  # a warning does not fail the run
    contract = evaluations(result)["rows_conform_to_contract"]
    assert contract.passed is False and contract.severity == WARN
    md = {k: v.value for k, v in contract.metadata.items()}
    assert md["rows_read"] == 3 and md["rows_rejected"] == 2 and md["threshold"] == 0.7
    assert md["rejected_rate"] == pytest.approx(2 / 3, abs=1e-5)
    assert "| 2 | amount: cannot convert '…'" in md["reasons"]
    assert "| 1 | status: required value is missing |" in md["reasons"]
    assert "not-a-number" not in md["reasons"]  # values stay in the quarantine table

    # Executed alone, the check judges the last run as recorded: the same warning, never skipped.
    alone = checks_alone(project, instance)
    assert alone.success and not alone.get_asset_materialization_events()
    again = evaluations(alone)["rows_conform_to_contract"]
    assert again.passed is False and again.severity == WARN
    assert again.metadata["rows_rejected"].value == 2 and "| 2 | amount" in again.metadata["reasons"].value


def test_rejected_rows_above_the_threshold_are_an_error(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, [ORDERS]).success
    append_orders(project, [[3000 + i, 1, "paid", "bad", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 5)])
    result = run(project, instance, [ORDERS])
    assert not result.success
    found = evaluations(result)
    contract = found["rows_conform_to_contract"]
    assert contract.passed is False and contract.severity == ERROR
    assert contract.metadata["rows_rejected"].value == 4 and contract.metadata["rejected_rate"].value == 1.0
    assert "| 4 | amount: cannot convert" in contract.metadata["reasons"].value
    # nothing was committed, so the checks about the committed table are not reported for this run
    assert set(found) == {"rows_conform_to_contract"}


@pytest.mark.parametrize("error", [ExtractError("source returned 503"), AuthError("401 Unauthorized")])
def test_a_failed_extraction_reports_no_contract_violation(
    project: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    runner = project / "runner.yaml"
    runner.write_text(runner.read_text().replace("max_retries: 3", "max_retries: 0"))

    def fail(self: CsvSource, request: object) -> None:
        raise error

    monkeypatch.setattr(CsvSource, "read", fail)
    result = run(project, instance, [ORDERS])
    assert not result.success
    assert result.get_asset_check_evaluations() == []
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "contract" not in failure.event_specific_data.error_display_string


def test_checks_alone_evaluate_the_table_as_it_stands(project: Path, instance: dg.DagsterInstance) -> None:
    never = checks_alone(project, instance)  # nothing loaded yet: evaluated all the same
    found = evaluations(never)
    assert len(found) == 6 and found["rows_conform_to_contract"].passed
    assert not found["schema_matches_contract"].passed  # no table: every column is missing
    assert run(project, instance).success
    alone = checks_alone(project, instance, CUSTOMERS)
    assert alone.success
    assert [e.event_type_value for e in alone.all_events if e.event_type_value == "STEP_SKIPPED"] == []
    assert not alone.get_asset_materialization_events()
    found = evaluations(alone, CUSTOMERS)
    assert len(found) == 6 and all(e.passed for e in found.values())
    assert found["rows_conform_to_contract"].metadata["rows_read"].value == 500
    assert evaluations(alone, ORDERS) == {}  # only what was selected


def test_one_check_alone_by_key(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance).success
    result = run(project, instance, dg.AssetSelection.checks(dg.AssetCheckKey(ORDERS, "primary_key_unique")))
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "primary_key_unique" and evaluation.passed


def test_duplicate_primary_keys_and_nulls_written_by_another_engine(
    project: Path, instance: dg.DagsterInstance
) -> None:
    assert run(project, instance, [ORDERS]).success
    table = orders_table(project)
    with table.update_schema() as update:
        update.make_column_optional("status")
    table = table.refresh()
    rows = table.scan(limit=2).to_arrow()
    rows = rows.set_column(rows.schema.get_field_index("status"), "status", pa.array([None, "paid"], pa.string()))
    table.append(rows.cast(table.schema().as_arrow()))
    found = evaluations(checks_alone(project, instance))
    key = found["primary_key_unique"]
    assert key.passed is False and key.severity == ERROR
    assert key.metadata["duplicate_keys"].value == 2 and key.metadata["duplicate_rows"].value == 2
    nulls = found["required_columns_not_null"]
    assert nulls.passed is False and nulls.metadata["nulls/status"].value == 1
    schema = found["schema_matches_contract"]
    assert schema.passed is False and schema.metadata["columns_nullability"].value == "status"


def test_schema_drift_lists_each_difference(project: Path, instance: dg.DagsterInstance) -> None:
    configure(project, "checks: {schema_drift: {severity: warn}}\n")
    assert run(project, instance, [ORDERS]).success
    with orders_table(project).update_schema() as update:
        update.add_column("note", StringType())
        update.delete_column("currency")
    schema = evaluations(checks_alone(project, instance))["schema_matches_contract"]
    assert schema.passed is False and schema.severity == WARN
    assert schema.metadata["columns_extra"].value == "note"
    assert schema.metadata["columns_missing"].value == "currency"
    assert "currency: missing" in schema.metadata["details"].value


def test_volume_drop_and_zero_rows_against_the_objects_history(project: Path, instance: dg.DagsterInstance) -> None:
    first = evaluations(run(project, instance, [ORDERS]))["volume_within_history"]
    assert first.passed and first.metadata["history_runs"].value == 0
    append_orders(project, [[3000 + i, 1, "paid", "9.99", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 6)])
    result = run(project, instance, [ORDERS])
    assert result.success
    drop = evaluations(result)["volume_within_history"]
    assert drop.passed is False and drop.severity == WARN
    assert drop.metadata["rows"].value == 5 and drop.metadata["history_median"].value == 3000
    zero = evaluations(run(project, instance, [ORDERS]))["volume_within_history"]
    assert zero.passed is False and "no rows" in zero.description
    configure(project, "checks: {volume: {max_drop_fraction: 1.0, severity: error}}\n")
    alone = evaluations(checks_alone(project, instance))["volume_within_history"]
    assert alone.passed is False and alone.severity == ERROR  # the last run read nothing


def test_freshness_against_the_sla(project: Path, instance: dg.DagsterInstance) -> None:
    configure(project, "checks: {freshness: {max_age_minutes: 60}}\n")
    fresh = evaluations(run(project, instance, [ORDERS]))["fresh_within_sla"]
    assert fresh.passed and fresh.metadata["age_minutes"].value < 60
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("max_age_minutes: 60", "max_age_minutes: 0.000001"))
    stale = evaluations(checks_alone(project, instance))["fresh_within_sla"]
    assert stale.passed is False and stale.severity == WARN
    assert stale.metadata["age_minutes"].value > 0.000001


def test_quarantine_growth_beyond_its_bound(project: Path, instance: dg.DagsterInstance) -> None:
    configure(project, "quality: {max_rejected_rate: 0.9}\nchecks: {quarantine: {max_growth_rows: 1}}\n")
    clean = evaluations(run(project, instance, [ORDERS]))["quarantine_growth"]
    assert clean.passed and clean.metadata["rows_added"].value == 0
    append_orders(project, [[3000 + i, 1, "paid", "bad", "EUR", "2025-02-01T00:00:00Z"] for i in range(1, 3)])
    append_orders(project, [[3003, 1, "paid", "1.00", "EUR", "2025-02-01T00:00:00Z"]])
    grown = evaluations(run(project, instance, [ORDERS]))["quarantine_growth"]
    assert grown.passed is False and grown.severity == WARN
    assert (
        grown.metadata["rows_added"].value == 2
        and grown.metadata["quarantine_table"].value == "demo.orders__quarantine"
    )
    assert "| 2 | amount: cannot convert" in grown.metadata["reasons"].value


def test_every_contract_type_matches_the_table_dativo_creates(tmp_path: Path) -> None:
    """No false drift: each contract type reads back from Iceberg as the same column."""
    from dativo_dagster.checks import evaluate, facts
    from dativo_dagster.config.models import SchemaContract
    from dativo_dagster.iceberg.tables import Owner, Tables
    from dativo_dagster.types import contract_arrow_schema

    types = ["int32", "int64", "float32", "float64", "string", "boolean", "date", "time", "timestamp"]
    types += ["timestamptz", "binary", "uuid", "json"]
    columns: list[dict[str, Any]] = [
        {"name": f"c_{name}", "type": name, "required": index % 2 == 0} for index, name in enumerate(types)
    ]
    columns += [
        {"name": "c_decimal", "type": "decimal", "precision": 12, "scale": 2},
        {"name": "c_list", "type": "list", "item_type": "string"},
    ]
    contract = SchemaContract.model_validate({"name": "x/all", "version": 1, "columns": columns})
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}")
    table = Tables(catalog).ensure("demo", "all", contract_arrow_schema(contract), Owner("demo", "demo/x/all"))
    expected = facts.contract_columns(contract)
    assert len(expected) == len(columns)
    assert evaluate.schema_differences(expected, facts.table_columns(table)) == []


def test_a_check_that_cannot_be_evaluated_fails_the_step_not_the_check(
    project: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.checks import facts
    from dativo_dagster.errors import StorageError

    def unreachable(table: Table, primary_key: Any) -> None:
        raise StorageError("catalog unreachable")

    monkeypatch.setattr(facts, "duplicate_keys", unreachable)
    set_retries(project, 0)  # the only attempt is the last: a transient error there is RETRY001
    result = run(project, instance, [ORDERS])
    assert not result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [ORDERS]  # the data is in
    found = evaluations(result)
    assert "primary_key_unique" not in found and found["rows_conform_to_contract"].passed is True
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data.user_failure_data
    assert data.metadata["dativo/error_code"].value == "RETRY001"
    assert data.metadata["dativo/cause"].value == "STG001"
    assert data.metadata["dativo/error_class"].value == "permanent"  # for the run: what the alert says
    assert "could not be checked" in data.description and "STG001" in data.description
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def set_retries(project: Path, max_retries: int) -> None:
    """The demo job's retries, without delay (the test waits for nothing)."""
    runner = project / "runner.yaml"
    text = runner.read_text().replace("max_retries: 3", f"max_retries: {max_retries}")
    runner.write_text(text.replace("delay_s: 10", "delay_s: 0"))


def test_a_transient_error_evaluating_a_check_retries_the_step(
    project: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalog blip during the primary-key scan: the step is retried, its checks are evaluated
    by the retry, and the retry (finding nothing new) judges the run by the attempt that loaded."""
    from dativo_dagster.checks import facts
    from dativo_dagster.errors import StorageError

    set_retries(project, 2)
    assert run(project, instance, [ORDERS]).success  # the history: one run of 3000 rows
    real = facts.duplicate_keys
    calls: list[int] = []

    def blip_once(table: Table, primary_key: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise StorageError("catalog unreachable: connection reset")
        return real(table, primary_key)

    monkeypatch.setattr(facts, "duplicate_keys", blip_once)
    defs = build_definitions(load_plan(project, strict=True))
    op = next(iter(defs.assets or [])).op.name  # type: ignore[union-attr]
    result = dg.materialize(  # a full refresh: the first attempt reads and commits all 3000 rows again
        assets=list(defs.assets or []),
        selection=[ORDERS],
        instance=instance,
        resources=defs.resources,
        run_config={"ops": {op: {"config": {"reset": {"full_refresh": True}}}}},
        raise_on_error=False,
    )
    assert result.success
    assert len([e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == 1
    assert len(calls) == 2  # the retry scanned the keys again
    found = {e.check_name: e for e in result.get_asset_check_evaluations() if e.check_name == "primary_key_unique"}
    assert found["primary_key_unique"].passed
    volume = [e for e in result.get_asset_check_evaluations() if e.check_name == "volume_within_history"]
    assert volume[-1].passed, volume[-1].description  # not "read no rows": the first attempt read 3000
    assert volume[-1].metadata["rows"].value == 3000
    # the retry did not record the reset a second time
    assert [s.summary.additional_properties.get("dativo.reset-kind") for s in orders_table(project).snapshots()].count(
        "full_refresh"
    ) == 1


def test_a_blocking_check_failing_with_error_stops_downstream_assets(
    project: Path, instance: dg.DagsterInstance
) -> None:
    configure(project, "checks: {primary_key: {blocking: true}}\n")
    assert run(project, instance, [ORDERS]).success
    table = orders_table(project)
    table.append(table.scan(limit=1).to_arrow().cast(table.schema().as_arrow()))  # a duplicate key

    @dg.asset(deps=[ORDERS], key=["demo_reports", "daily_orders"])
    def daily_orders() -> None:
        return None

    defs = build_definitions(load_plan(project, strict=True))
    result = dg.materialize(
        assets=[*(defs.assets or []), daily_orders],
        selection=[ORDERS, daily_orders.key],
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    check = evaluations(result)["primary_key_unique"]
    assert check.passed is False and check.severity == ERROR
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert ORDERS in materialized and daily_orders.key not in materialized


def test_dativo_run_prints_failed_checks_and_an_error_check_makes_it_partial(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dativo_dagster.cli import main

    configure(project, "checks: {freshness: {max_age_minutes: 0.000001, severity: error}}\n")
    assert main(["run", "demo/shop", "--object", "orders"]) == 1
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "3,000 row(s) written" in printed
    assert "demo/shop/orders: check fresh_within_sla failed" in printed
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("severity: error", "severity: warn"))
    assert main(["run", "demo/shop", "--object", "orders"]) == 0  # a warning is said, not a failure
    out = capsys.readouterr()
    assert "check fresh_within_sla failed" in out.out + out.err


def partitioned_customers(project: Path) -> None:
    """The demo job with customers only, partitioned by day (orders appends by id: not partitionable)."""
    job = project / "tenants/demo/jobs/shop.yaml"
    text = job.read_text()
    orders = text[text.index("  - name: orders\n") : text.index("  - name: customers\n")]
    text = text.replace(orders, "").replace(
        "objects:\n", 'partitions: {granularity: daily, start: "2024-01-01"}\nobjects:\n'
    )
    job.write_text(text)


def test_partition_runs_are_not_judged_by_volume_nor_count_in_its_history(
    project: Path, instance: dg.DagsterInstance
) -> None:
    partitioned_customers(project)
    defs = build_definitions(load_plan(project, strict=True))

    def materialize(**kwargs: Any) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            assets=list(defs.assets or []), resources=defs.resources, instance=instance, raise_on_error=False, **kwargs
        )
        assert result.success
        return result

    incremental = evaluations(materialize(), CUSTOMERS)["volume_within_history"]
    assert incremental.passed and incremental.metadata["rows"].value == 500
    # one day: a few rows, far below the incremental run's 500, and not a drop
    day = evaluations(materialize(partition_key="2024-01-02"), CUSTOMERS)["volume_within_history"]
    assert day.passed, day.description
    assert day.metadata["judged"].value is False
    assert day.metadata["partition_window"].value.startswith("2024-01-02T00:00:00+00:00/")
    assert "partition run" in (day.description or "")
    ranged = materialize(
        tags={"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-20"}
    )
    assert evaluations(ranged, CUSTOMERS)["volume_within_history"].metadata["judged"].value is False
    range_read = ranged.get_asset_materialization_events()[0].materialization.metadata["dativo/rows_read"].value
    # executed alone after it: the contract judges that run; its volume is not judged either
    alone = evaluations(checks_alone(project, instance, CUSTOMERS), CUSTOMERS)
    assert alone["volume_within_history"].passed and alone["volume_within_history"].metadata["judged"].value is False
    assert alone["rows_conform_to_contract"].metadata["rows_read"].value == range_read
    # the next incremental run is compared with the incremental run only
    later = evaluations(materialize(), CUSTOMERS)["volume_within_history"]
    assert later.metadata["history_runs"].value == 1 and later.metadata["history_median"].value == 500
    alone = evaluations(checks_alone(project, instance, CUSTOMERS), CUSTOMERS)["volume_within_history"]
    assert alone.metadata["history_runs"].value == 1 and alone.metadata["history_median"].value == 500


def test_freshness_does_not_count_a_reset_as_a_commit(project: Path, instance: dg.DagsterInstance) -> None:
    """A reset loads no row: right after ``dativo reset`` the table is as old as its last load."""
    from dativo_dagster.cli import main

    configure(project, "checks: {freshness: {max_age_minutes: 60}}\n")
    assert run(project, instance, [ORDERS]).success
    loaded = orders_table(project).current_snapshot()
    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh", "--yes"]) == 0
    reset = orders_table(project).current_snapshot()
    assert reset.snapshot_id != loaded.snapshot_id and reset.timestamp_ms > loaded.timestamp_ms
    fresh = evaluations(checks_alone(project, instance))["fresh_within_sla"]
    assert fresh.metadata["last_commit"].value == loaded.timestamp_ms / 1000
