"""``dativo maintain`` and the scheduled ``<tenant>__maintain`` job on the demo project."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, main
from dativo_dagster.iceberg.tables import OWNER_PROPERTY, read_table_cursor
from tests.integration.test_exactly_once import append_orders

MAINTENANCE = """
maintenance:
  demo: {schedule: "0 3 * * 0", retain_days: 0, orphan_age_hours: 24}
"""


def demo_table(project: Path, name: str):  # type: ignore[no-untyped-def]
    home = project / ".dativo"
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    return catalog.load_table(("demo", name))


def test_maintain_command_and_schedule_keep_rows_and_cursors(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dativo_dagster.build import build_definitions
    from dativo_dagster.checks.facts import last_commit_ms
    from dativo_dagster.cli_replay import snapshot_history
    from dativo_dagster.config.loader import load_plan

    assert main(["run", "demo/shop", "--object", "orders"]) == EXIT_OK
    append_orders(project, 100_001, 5)
    assert main(["run", "demo/shop", "--object", "orders"]) == EXIT_OK  # a second, small file
    orders = demo_table(project, "orders")
    cursor = read_table_cursor(orders)
    assert len(list(orders.scan().plan_files())) == 2
    capsys.readouterr()

    assert main(["maintain", "demo/shop", "--object", "orders", "--dry-run", "--json"]) == EXIT_OK
    (line,) = capsys.readouterr().out.strip().splitlines()
    dry = json.loads(line)
    assert dry["table"] == "demo.orders" and dry["compaction"]["files_rewritten"] == 2
    assert len(list(demo_table(project, "orders").scan().plan_files())) == 2  # a dry run changes nothing

    (project / "runner.yaml").write_text((project / "runner.yaml").read_text() + MAINTENANCE)
    defs = build_definitions(load_plan(project, strict=True))
    job = defs.resolve_job_def("demo__maintain")
    assert defs.resolve_schedule_def("demo__maintain__schedule").cron_schedule == "0 3 * * 0"
    result = job.execute_in_process(raise_on_error=False)
    assert result.success
    orders = demo_table(project, "orders")
    assert len(list(orders.scan().plan_files())) == 1  # compacted
    assert orders.scan().to_arrow().num_rows == 3_005
    after = read_table_cursor(orders)
    assert after is not None and cursor is not None and after.cursor == cursor.cursor
    assert after.snapshot_id == cursor.snapshot_id
    # what reads the snapshot history looks past the maintenance snapshot on top
    plan = load_plan(project, strict=True)
    shop = plan.job("demo/shop")
    history = snapshot_history(shop, next(o for o in shop.objects if o.name == "orders"), orders, 3)
    assert history[0]["kind"] == "maintenance (compact)" and history[0]["operation"] == "replace"
    assert history[0]["total_rows"] == 3_005 and history[1]["kind"] == "run"
    cursor_snapshot = orders.snapshot_by_id(cursor.snapshot_id)
    assert cursor_snapshot is not None and last_commit_ms(orders) == cursor_snapshot.timestamp_ms

    capsys.readouterr()
    assert main(["maintain", "demo/shop", "--retain-days", "0", "--orphan-age-hours", "1"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "demo.orders: compact" in out and "demo.orders: orphans" in out
    assert main(["run", "demo/shop", "--object", "orders"]) == EXIT_OK
    assert "up to date" in capsys.readouterr().out  # the cursors were kept: nothing new was loaded
    assert demo_table(project, "orders").scan().to_arrow().num_rows == 3_005


def test_maintain_refuses_unsafe_windows_and_foreign_tables(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintain", "demo/shop", "--orphan-age-hours", "0.25"]) == EXIT_FAILED
    assert "CFG001" in capsys.readouterr().err
    for retain in ("inf", "1e308"):
        assert main(["maintain", "demo/shop", "--retain-days", retain]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert "CFG001" in err and "--retain-days" in err and "bug" not in err
    assert main(["maintain", "demo/nope"]) == EXIT_FAILED

    home = project / ".dativo"
    home.mkdir(exist_ok=True)
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    catalog.create_namespace("demo")
    schema = pa.schema([pa.field("id", pa.int64())])
    table = catalog.create_table(("demo", "customers"), schema, properties={OWNER_PROPERTY: "other/job/customers"})
    table.append(pa.table({"id": pa.array([1, 2], pa.int64())}))
    capsys.readouterr()
    assert main(["maintain", "demo/shop", "--object", "customers", "--retain-days", "0"]) == EXIT_FAILED
    assert "owned by other/job/customers" in capsys.readouterr().err
    assert len(demo_table(project, "customers").snapshots()) == 1  # untouched


def test_maintain_compacts_a_table_whose_contract_gained_a_column(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files loaded under contract v1 and v2 (a column added) compact together and verify clean."""
    assert main(["run", "demo/shop", "--object", "orders"]) == EXIT_OK
    schemas = project / "connectors/schemas/shop"
    v1 = (schemas / "orders.v1.yaml").read_text()
    (schemas / "orders.v2.yaml").write_text(
        v1.replace("version: 1", "version: 2") + "  - {name: channel, type: string}\n"
    )
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("{name: shop/orders, version: 1}", "{name: shop/orders, version: 2}"))
    data = project / "tenants/demo/data/orders.csv"
    lines = data.read_text().splitlines()
    lines = [lines[0] + ",channel"] + [line + "," for line in lines[1:]]
    lines.append("3001,1,paid,1.00,EUR,2025-02-01T00:00:00Z,web")
    data.write_text("\n".join(lines) + "\n")
    assert main(["run", "demo/shop", "--object", "orders"]) == EXIT_OK
    assert len(list(demo_table(project, "orders").scan().plan_files())) == 2
    capsys.readouterr()

    assert main(["maintain", "demo/shop", "--object", "orders", "--only", "compact"]) == EXIT_OK

    orders = demo_table(project, "orders")
    assert len(list(orders.scan().plan_files())) == 1
    rows = orders.scan().to_arrow()
    assert rows.num_rows == 3_001
    assert rows.filter(pa.compute.equal(rows["channel"], "web")).num_rows == 1
    assert main(["verify", "demo/shop"]) == EXIT_OK
