"""Resets and the quarantine, end to end: the demo tenant, a real Iceberg catalog, the CLI in-process."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from dativo_dagster import cli
from dativo_dagster.build import build_definitions
from dativo_dagster.cli import main
from dativo_dagster.config.loader import load_plan
from dativo_dagster.engine import enforcer_for
from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.tables import OWNER_PROPERTY, latest_dativo_snapshot_id
from dativo_dagster.instance import instance_for_project
from dativo_dagster.resets import ResetRequest, apply_reset
from dativo_dagster.resources import DativoResource
from dativo_dagster.sources.base import ReadRequest
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_RESET_AT,
    PROP_RESET_BY,
    PROP_RESET_FROM,
    PROP_RESET_KIND,
    PROP_RESET_TO,
    PROP_RUN_ID,
)
from dativo_dagster.translator import DativoTranslator

ORDERS = dg.AssetKey(["demo", "csv", "orders"])
CUSTOMERS = dg.AssetKey(["demo", "csv", "customers"])
CUSTOMER_HEADER = "customer_id,email,name,country,created_at,updated_at"


def run(
    project: Path,
    instance: dg.DagsterInstance,
    *keys: dg.AssetKey,
    op_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    plan = load_plan(project, strict=True)
    defs = build_definitions(plan)
    run_config = {}
    if op_config is not None:
        run_config = {"ops": {DativoTranslator().op_name(plan.job("demo/shop")): {"config": op_config}}}
    return dg.materialize(
        assets=list(defs.assets or []),
        selection=list(keys) or None,
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )


def table(project: Path, name: str) -> Table:
    home = project / ".dativo"
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    return catalog.load_table(("demo", name))


def history(project: Path, name: str) -> list[dict[str, str]]:
    """Summary properties of the table's snapshots, oldest first."""
    return [dict(s.summary.additional_properties) for s in table(project, name).snapshots() if s.summary]


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization for {key.to_user_string()}")


def cursor_value(props: dict[str, str]) -> object:
    return json.loads(props[PROP_CURSOR])["value"]


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def test_reset_to_an_earlier_cursor_rereads_from_there_without_duplicates_and_is_audited(
    project: Path, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(project, instance)
    assert first.success
    committed = history(project, "customers")[-1]
    rows_before = table(project, "customers").scan().to_arrow().num_rows
    assert rows_before == 500

    assert main(["reset", "demo/shop", "--object", "customers", "--to", "2024-03-01", "--yes"]) == 0
    assert "reset recorded in demo.customers" in capsys.readouterr().out
    reset = history(project, "customers")[-1]
    # the audit record: who, when, from what cursor, to what
    assert reset[PROP_RESET_KIND] == "cursor"
    assert reset[PROP_RESET_BY] == getpass.getuser()
    at = dt.datetime.fromisoformat(reset[PROP_RESET_AT])
    assert at.tzinfo is not None and abs(dt.datetime.now(dt.timezone.utc) - at) < dt.timedelta(minutes=5)
    assert reset[PROP_RESET_FROM] == committed[PROP_CURSOR]
    assert reset[PROP_RESET_TO] == reset[PROP_CURSOR]
    assert cursor_value(reset) == "2024-03-01T00:00:00.000000+00:00"
    # the reset snapshot itself changes no row
    assert table(project, "customers").scan().to_arrow().num_rows == rows_before
    # and the UI shows it on the asset's page (an observation in the project's instance)
    with instance_for_project(project) as project_instance:
        (observed,) = project_instance.fetch_observations(CUSTOMERS, limit=1).records
        observation = observed.asset_observation
        assert observation is not None and observation.metadata["dativo/reset_by"].value == getpass.getuser()
        assert observation.metadata["dativo/reset_from"].value == committed[PROP_CURSOR]

    # Dagster's latest materialization still shows the later cursor; the table's reset wins
    second = run(project, instance, CUSTOMERS)
    assert second.success
    md = metadata(second, CUSTOMERS)
    assert md["dativo/committed"] is True and md["dativo/rows_written"] > 0
    assert md["dativo/rows_new"] == 0  # merged on the key: re-read rows replaced themselves
    assert md["dativo/cursor_origin"].startswith("reset: reset by ")
    assert md["dativo/cursor"] == committed[PROP_CURSOR]  # back where it was: every row since re-read
    ids = table(project, "customers").scan(selected_fields=("customer_id",)).to_arrow().column(0).to_pylist()
    assert len(ids) == len(set(ids)) == 500
    assert md["dagster/row_count"] == 500


def test_full_refresh_replaces_the_rows_so_a_row_deleted_at_the_source_is_gone(
    project: Path, instance: dg.DagsterInstance
) -> None:
    assert run(project, instance, ORDERS).success
    data = project / "tenants/demo/data/orders.csv"
    lines = data.read_text().splitlines()
    deleted = lines.pop(10)
    data.write_text("\n".join(lines) + "\n")
    deleted_id = int(deleted.split(",")[0])

    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh", "--yes"]) == 0
    reset = history(project, "orders")[-1]
    assert reset[PROP_RESET_KIND] == "full_refresh" and reset[PROP_CURSOR] == reset[PROP_RESET_TO] == "null"
    assert cursor_value(json.loads(json.dumps({PROP_CURSOR: reset[PROP_RESET_FROM]}))) == 3000
    # until the next run commits nothing is lost
    assert table(project, "orders").scan().to_arrow().num_rows == 3000

    result = run(project, instance, ORDERS)
    assert result.success
    orders = table(project, "orders")
    assert orders.current_snapshot().summary.operation.value == "overwrite"
    ids = orders.scan(selected_fields=("order_id",)).to_arrow().column(0).to_pylist()
    assert sorted(ids) == sorted(int(line.split(",")[0]) for line in lines[1:])
    assert deleted_id not in ids and len(ids) == 2999
    assert metadata(result, ORDERS)["dagster/row_count"] == 2999
    # the next run is a normal append again
    assert metadata(run(project, instance, ORDERS), ORDERS)["dativo/committed"] is False


def test_full_refresh_of_a_merge_object_keeps_one_row_per_key(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, CUSTOMERS).success
    data = project / "tenants/demo/data/customers.csv"
    with data.open("a") as handle:  # customer 7 updated: a second, later line for the same key
        handle.write("7,new7@example.com,Renamed,DE,2024-01-01T21:00:00+00:00,2025-06-01T00:00:00+00:00\n")
    assert main(["reset", "demo/shop", "--object", "customers", "--full-refresh", "--yes"]) == 0
    assert run(project, instance, CUSTOMERS).success
    rows = table(project, "customers").scan().to_arrow().to_pylist()
    assert len(rows) == len({r["customer_id"] for r in rows}) == 500
    assert next(r for r in rows if r["customer_id"] == 7)["name"] == "Renamed"


def test_reset_from_the_run_config_is_audited_with_the_launching_user(
    project: Path, instance: dg.DagsterInstance
) -> None:
    assert run(project, instance, CUSTOMERS).success
    committed = history(project, "customers")[-1]
    result = run(
        project,
        instance,
        CUSTOMERS,
        op_config={"reset": {"to": "2024-03-01"}},
        tags={"dagster/user": "ana@example.com"},
    )
    assert result.success
    snapshots = history(project, "customers")
    reset, loaded = snapshots[-2], snapshots[-1]
    assert reset[PROP_RESET_BY] == "ana@example.com" and reset[PROP_RUN_ID] == result.run_id
    assert reset[PROP_RESET_FROM] == committed[PROP_CURSOR]
    assert cursor_value(reset) == "2024-03-01T00:00:00.000000+00:00"
    assert loaded[PROP_RUN_ID] == result.run_id and loaded[PROP_CURSOR] == committed[PROP_CURSOR]
    md = metadata(result, CUSTOMERS)
    assert md["dativo/rows_written"] > 0 and "reset by ana@example.com" in md["dativo/notes"]

    # a full refresh from the launchpad, launched without a user tag
    refreshed = run(project, instance, CUSTOMERS, op_config={"reset": {"full_refresh": True}})
    assert refreshed.success
    snapshots = history(project, "customers")
    assert snapshots[-2][PROP_RESET_BY] == "dagster" and snapshots[-2][PROP_RESET_KIND] == "full_refresh"
    assert table(project, "customers").current_snapshot().summary.operation.value == "overwrite"


def test_a_retried_step_does_not_reset_twice(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, CUSTOMERS).success
    plan = load_plan(project, strict=True)
    job = plan.job("demo/shop")
    obj = job.object("customers")
    runtime = DativoResource(project_dir=str(project))
    writer = runtime.writer_for(job.target)
    codec = runtime.source_for(job).cursor_codec(obj)
    request = ResetRequest(to="2024-03-01")
    first = apply_reset(obj, writer, codec, request, by="ana", run_id="run-a")
    again = apply_reset(obj, writer, codec, request, by="ana", run_id="run-a")
    assert first.committed and not again.committed
    assert "(this run)" in again.note
    assert [p.get(PROP_RESET_KIND) for p in history(project, "customers")].count("cursor") == 1
    # a chain whose first run failed before resetting: its second run records the reset, the third
    # (another re-execution of the same root) finds it
    recorded = apply_reset(obj, writer, codec, request, by="ana", run_id="run-c", root_run_id="run-b")
    repeated = apply_reset(obj, writer, codec, request, by="ana", run_id="run-d", root_run_id="run-b")
    assert recorded.committed and not repeated.committed
    assert history(project, "customers")[-1][PROP_RUN_ID] == "run-c"


def test_a_run_that_read_its_cursor_before_a_reset_commits_nothing(project: Path, instance: dg.DagsterInstance) -> None:
    """The reset is a dativo snapshot: a run racing it fails its commit (STG001, transient) and its
    retry starts from the reset."""
    assert run(project, instance, ORDERS).success
    plan = load_plan(project, strict=True)
    job = plan.job("demo/shop")
    obj = job.object("orders")
    runtime = DativoResource(project_dir=str(project))
    writer = runtime.writer_for(job.target)
    source = runtime.source_for(job)
    base = latest_dativo_snapshot_id(table(project, "orders"))
    apply_reset(obj, writer, source.cursor_codec(obj), ResetRequest(full_refresh=True), by="ana", run_id="r-1")
    extraction = source.read(ReadRequest(obj=obj))
    with pytest.raises(StorageError, match="another run committed"):
        writer.write(
            obj,
            iter(extraction),
            enforcer=enforcer_for(obj, source),
            run_id="racing-run",
            previous_cursor=None,
            new_cursor=extraction.new_cursor,
            base_snapshot_id=base,
        )
    assert table(project, "orders").scan().to_arrow().num_rows == 3000


def test_a_bad_reset_value_is_cfg001_and_commits_nothing(
    project: Path, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(project, instance).success
    before = len(history(project, "customers"))
    code = main(["reset", "demo/shop", "--object", "orders", "--object", "customers", "--to", "not-a-time", "--yes"])
    assert code == 2
    err = capsys.readouterr().err
    assert "CFG001" in err and "not-a-time" in err
    assert len(history(project, "customers")) == before
    assert len(history(project, "orders")) == 1  # 'orders' parsed nothing either: no object was reset

    # moving an append-only object back would load rows twice
    assert main(["reset", "demo/shop", "--object", "orders", "--to", "100", "--yes"]) == 2
    assert "--full-refresh" in capsys.readouterr().err

    # the same from the launchpad: the step fails with CFG001 and is not retried
    result = run(project, instance, CUSTOMERS, op_config={"reset": {"to": "not-a-time"}})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_failure_data.user_failure_data.metadata["dativo/error_code"].value == "CFG001"
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(history(project, "customers")) == before


def test_a_reset_goes_through_the_owner_check(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    orders = table(project, "orders")
    with orders.transaction() as txn:
        txn.set_properties({OWNER_PROPERTY: "other/job/orders"})
    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh", "--yes"]) == 2
    assert history(project, "orders")[-1].get(PROP_RESET_KIND) is None


def test_reset_asks_before_it_acts(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    # no terminal and no --yes: refused, nothing recorded
    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh"]) == 2
    assert len(history(project, "orders")) == 1


def test_run_full_refresh_flag(project: Path, instance: dg.DagsterInstance) -> None:
    assert main(["run", "demo/shop", "--object", "orders"]) == 0
    assert main(["run", "demo/shop", "--object", "orders", "--full-refresh"]) == 0
    snapshots = history(project, "orders")
    assert snapshots[-2][PROP_RESET_KIND] == "full_refresh"
    assert table(project, "orders").current_snapshot().summary.operation.value == "overwrite"
    assert table(project, "orders").scan().to_arrow().num_rows == 3000


def test_quarantine_command_and_preview(
    project: Path, instance: dg.DagsterInstance, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["quarantine", "demo/shop", "--object", "orders"]) == 0
    assert "no quarantine table" in capsys.readouterr().out
    assert main(["quarantine", "demo/shop", "--object", "orders", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no quarantine table" in captured.err

    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("objects:\n", "quality: {max_rejected_rate: 0.7}\nobjects:\n", 1))
    assert run(project, instance, ORDERS).success
    with (project / "tenants/demo/data/orders.csv").open("a") as handle:
        handle.write("3001,1,paid,not-a-number,EUR,2025-02-01T00:00:00Z\n")
        handle.write("3002,1,paid,5.00,EUR,2025-02-01T00:00:00Z\n")
        handle.write('3003,1,,5.00,"EUR\x1b[2J|",2025-02-01T00:00:00Z\n')
    result = run(project, instance, ORDERS)
    assert result.success
    md = metadata(result, ORDERS)
    assert md["dativo/quarantined_rows"] == 2
    preview = md["dativo/quarantine_preview"]
    assert "2 row(s) quarantined by this run" in preview
    assert "cannot convert 'not-a-number'" in preview and "required value is missing" in preview
    assert "\x1b" not in preview and "EUR\\\\x1b[2J\\|" in preview
    assert f"--run {result.run_id}" in preview
    (check,) = [  # the contract check shows the same rows
        e for e in result.get_asset_check_evaluations() if e.check_name == "rows_conform_to_contract"
    ]
    assert check.metadata["quarantine_preview"].value == preview

    capsys.readouterr()
    monkeypatch.setattr(cli.console, "width", 400)  # one line per row, so the test reads whole cells
    assert main(["quarantine", "demo/shop", "--object", "orders"]) == 0
    out = capsys.readouterr().out
    assert "demo.orders__quarantine" in out and "cannot convert" in out and "required value is missing" in out
    assert "\x1b" not in out and "\\x1b" in out

    assert main(["quarantine", "demo/shop", "--object", "orders", "--json", "--run", result.run_id]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["values"]["order_id"] for line in lines} == {"3001", "3003"}
    assert all(line["run_id"] == result.run_id and line["reason"] for line in lines)
    assert {line["values"]["currency"] for line in lines} == {"EUR", "EUR\x1b[2J|"}

    assert main(["quarantine", "demo/shop", "--object", "orders", "--json", "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["quarantine", "demo/shop", "--object", "orders", "--json", "--run", "no-such-run"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["quarantine", "demo/shop", "--object", "nope"]) == 2


def test_reset_of_a_file_mtime_object_rereads_files_modified_since(project: Path, instance: dg.DagsterInstance) -> None:
    drops = project / "tenants/demo/data/drops"
    drops.mkdir()
    header = "order_id,customer_id,status,amount,currency,ordered_at\n"
    (drops / "a.csv").write_text(header + "1,1,paid,1.00,EUR,2024-01-01T00:00:00Z\n")
    (drops / "b.csv").write_text(header + "2,1,paid,1.00,EUR,2024-01-01T00:00:00Z\n")
    jan, mar = (dt.datetime(2024, m, 1, tzinfo=dt.timezone.utc).timestamp() for m in (1, 3))
    os.utime(drops / "a.csv", (jan, jan))
    os.utime(drops / "b.csv", (mar, mar))
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
    assert metadata(run(project, instance, ORDERS), ORDERS)["dativo/rows_written"] == 2
    assert main(["reset", "demo/shop", "--object", "orders", "--to", "2024-02-01", "--yes"]) == 0
    result = run(project, instance, ORDERS)
    md = metadata(result, ORDERS)
    assert md["dativo/rows_written"] == 1  # b.csv only, replacing its own earlier row
    rows = sorted((r["order_id"], r["_dativo_file"]) for r in table(project, "orders").scan().to_arrow().to_pylist())
    assert rows == [(1, "drops/a.csv"), (2, "drops/b.csv")]


def test_an_unreadable_cursor_names_the_reset_that_repairs_it(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    orders = table(project, "orders")
    txn = orders.transaction()
    with txn.update_snapshot(snapshot_properties={PROP_RUN_ID: "hand-edit", PROP_CURSOR: "{broken"}).fast_append():
        pass
    txn.commit_transaction()
    broken = run(project, instance, ORDERS)
    assert not broken.success
    (failure,) = [e for e in broken.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.step_failure_data.user_failure_data.description
    assert "STATE001" in description and "dativo reset demo/shop --object orders" in description

    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh", "--yes"]) == 0
    assert history(project, "orders")[-1][PROP_RESET_FROM] == "{broken"  # kept as it was, for the audit
    repaired = run(project, instance, ORDERS)
    assert repaired.success
    assert metadata(repaired, ORDERS)["dagster/row_count"] == 3000


def test_a_qual001_failure_shows_the_rows_that_caused_it(project: Path, instance: dg.DagsterInstance) -> None:
    assert run(project, instance, ORDERS).success
    with (project / "tenants/demo/data/orders.csv").open("a") as handle:
        for i in range(1, 5):
            handle.write(f"{3000 + i},1,paid,bad-{i},EUR,2025-02-01T00:00:00Z\n")
    result = run(project, instance, ORDERS)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    data = failure.step_failure_data.user_failure_data
    assert data.metadata["dativo/error_code"].value == "QUAL001"
    preview = data.metadata["dativo/quarantine_preview"].value
    assert "#### orders" in preview and "4 row(s) quarantined by this run" in preview
    assert "cannot convert 'bad-4'" in preview
    (check,) = result.get_asset_check_evaluations()  # a QUAL001 run judged only the contract
    assert check.check_name == "rows_conform_to_contract"
    assert not check.passed and "cannot convert 'bad-4'" in check.metadata["quarantine_preview"].value


def test_reset_needs_no_source_credentials(
    project: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator with the catalog but without the source's secret can still reset: parsing
    ``--to`` takes the source's cursor codec, never its credentials."""
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(
        job.read_text().replace("  connection:\n", '  credentials: {token: "${DEMO_SHOP_TOKEN}"}\n  connection:\n', 1)
    )
    monkeypatch.setenv("DEMO_SHOP_TOKEN", "s3cret-token")
    assert run(project, instance).success
    monkeypatch.delenv("DEMO_SHOP_TOKEN")

    assert main(["reset", "demo/shop", "--object", "customers", "--to", "2024-03-01", "--yes"]) == 0
    assert main(["reset", "demo/shop", "--object", "orders", "--full-refresh", "--yes"]) == 0
    out = capsys.readouterr()
    assert "CFG001" not in out.err and "not set" not in out.err
    assert cursor_value(history(project, "customers")[-1]) == "2024-03-01T00:00:00.000000+00:00"
    assert history(project, "orders")[-1][PROP_RESET_KIND] == "full_refresh"
    # a value that does not parse is still judged by the source's codec
    assert main(["reset", "demo/shop", "--object", "customers", "--to", "not-a-time", "--yes"]) == 2
    assert "CFG001" in capsys.readouterr().err


def test_a_reexecution_with_the_same_config_does_not_reset_again(project: Path, instance: dg.DagsterInstance) -> None:
    """A re-execution from the UI or a Dagster run retry: a new run id, the same run config. The
    reset its first run recorded is not applied a second time."""
    assert run(project, instance).success
    with (project / "tenants/demo/data/orders.csv").open("a") as handle:
        for order_id in range(3001, 3011):
            handle.write(f"{order_id},1,paid,5.00,EUR,2025-02-01T00:00:00Z\n")
    # an append object moved forward: skip 3001..3005
    first = run(project, instance, ORDERS, op_config={"reset": {"to": "3005"}})
    assert first.success and metadata(first, ORDERS)["dativo/rows_written"] == 5
    chain = {"dagster/root_run_id": first.run_id, "dagster/parent_run_id": first.run_id}
    again = run(project, instance, ORDERS, op_config={"reset": {"to": "3005"}}, tags=chain)
    # before: the cursor (3010) moved back to 3005 (CFG001 for an append object, never retried)
    assert again.success
    assert metadata(again, ORDERS)["dativo/committed"] is False
    assert "(this run)" in metadata(again, ORDERS)["dativo/notes"]
    assert [p.get(PROP_RESET_KIND) for p in history(project, "orders")].count("cursor") == 1
    ids = table(project, "orders").scan(selected_fields=("order_id",)).to_arrow().column(0).to_pylist()
    assert len(ids) == len(set(ids)) == 3005

    # a merge object: the cursor is not moved back a second time (its rows are not loaded again)
    merged = run(project, instance, CUSTOMERS, op_config={"reset": {"to": "2024-03-01"}})
    assert merged.success and metadata(merged, CUSTOMERS)["dativo/rows_written"] > 0
    chain = {"dagster/root_run_id": merged.run_id, "dagster/parent_run_id": merged.run_id}
    second = run(project, instance, CUSTOMERS, op_config={"reset": {"to": "2024-03-01"}}, tags=chain)
    chain = {"dagster/root_run_id": merged.run_id, "dagster/parent_run_id": second.run_id}
    third = run(project, instance, CUSTOMERS, op_config={"reset": {"to": "2024-03-01"}}, tags=chain)
    for result in (second, third):
        assert result.success and metadata(result, CUSTOMERS)["dativo/committed"] is False
    resets = [p for p in history(project, "customers") if p.get(PROP_RESET_KIND)]
    assert len(resets) == 1 and resets[0][PROP_RUN_ID] == merged.run_id

    # a new launch (not a re-execution) with the same config is a new reset
    assert run(project, instance, CUSTOMERS, op_config={"reset": {"to": "2024-03-01"}}).success
    assert len([p for p in history(project, "customers") if p.get(PROP_RESET_KIND)]) == 2
