"""Replaying quarantined rows after a contract fix: exactly the rows that now conform, once, across kills.

The demo tenant's orders (a CSV) under a contract that wrongly requires ``currency``: rows without
one are quarantined. The contract is then fixed and ``dativo replay`` commits them; rows that still
fail (a bad amount) stay quarantined with their new reason. A replay killed at each of its
instants and run again still commits every row exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dativo_dagster.cli import main
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.replay import PENDING_PREFIX, PROP_REPLAY_ID, PROP_REPLAYED_FROM
from dativo_dagster.sources.registry import build_source
from dativo_dagster.state import PROP_CURSOR, PROP_RUN_ID
from dativo_dagster.types import CURSOR_FROM_COLUMN, REASON_COLUMN

HEADER = "order_id,customer_id,status,amount,currency,ordered_at\n"
MISSING_CURRENCY = {5, 10, 15}  # quarantined under the strict contract; conform once it is fixed
BAD_AMOUNT = {7}  # fails under both contracts
BOTH = {14}  # no currency and a bad amount: still fails after the fix, for the amount alone
ROWS = 20


def orders_csv(first: int, last: int) -> str:
    lines = []
    for i in range(first, last + 1):
        currency = "" if i in MISSING_CURRENCY | BOTH else "EUR"
        amount = "n/a" if i in BAD_AMOUNT | BOTH else f"{i}.50"
        lines.append(f"{i},{i % 7},paid,{amount},{currency},2024-01-01T00:{i % 60:02d}:00+00:00\n")
    return "".join(lines)


@pytest.fixture
def shop(project: Path) -> Path:
    """The demo project with a small orders file, a strict contract and room for rejections."""
    (project / "tenants/demo/data/orders.csv").write_text(HEADER + orders_csv(1, ROWS))
    contract = project / "connectors/schemas/shop/orders.v1.yaml"
    contract.write_text(contract.read_text().replace("{name: currency, type: string}", STRICT))
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("objects:\n", "quality: {max_rejected_rate: 0.5}\nobjects:\n", 1))
    return project


STRICT = "{name: currency, type: string, required: true}"
FIXED = "{name: currency, type: string}"


def fix_contract(project: Path) -> None:
    contract = project / "connectors/schemas/shop/orders.v1.yaml"
    contract.write_text(contract.read_text().replace(STRICT, FIXED))


def writer_for(project: Path) -> tuple[IcebergWriter, object]:
    plan = load_plan(project, strict=True)
    job = plan.job("demo/shop")
    return IcebergWriter(build_catalog(job.target, SecretResolver(), project)), job


def ingest(project: Path, run_id: str) -> None:
    plan = load_plan(project, strict=True)
    job = plan.job("demo/shop")
    writer = IcebergWriter(build_catalog(job.target, SecretResolver(), project))
    with build_source(job, SecretResolver()) as source:
        result = ingest_object(job.object("orders"), source=source, writer=writer, run_id=run_id)
    assert result.error is None, result.error


def order_ids(project: Path) -> list[int]:
    writer, _ = writer_for(project)
    table = writer.load_table("demo", "orders")
    assert table is not None
    return sorted(table.scan(selected_fields=("order_id",)).to_arrow().column("order_id").to_pylist())


def quarantined(project: Path) -> dict[str, tuple[str, str | None]]:
    """order_id → (reason, range) of the quarantined rows."""
    writer, _ = writer_for(project)
    table = writer.load_table("demo", "orders__quarantine")
    assert table is not None
    rows = table.scan().to_arrow().to_pylist()
    return {row["order_id"]: (row[REASON_COLUMN], row[CURSOR_FROM_COLUMN]) for row in rows}


def table_cursor(project: Path) -> object:
    writer, _ = writer_for(project)
    table = writer.load_table("demo", "orders")
    assert table is not None
    found = read_table_cursor(table)
    assert found is not None and found.cursor is not None
    return found.cursor.value


EXPECTED_AFTER_REPLAY = sorted(set(range(1, ROWS + 1)) - BAD_AMOUNT - BOTH)


def test_replay_commits_exactly_the_rows_that_now_conform_once(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ingest(shop, "run-1")
    assert order_ids(shop) == sorted(set(range(1, ROWS + 1)) - MISSING_CURRENCY - BAD_AMOUNT - BOTH)
    assert set(quarantined(shop)) == {str(i) for i in MISSING_CURRENCY | BAD_AMOUNT | BOTH}
    cursor = table_cursor(shop)

    # Before the fix: nothing conforms, nothing is written.
    assert main(["replay", "demo/shop", "--object", "orders"]) == 0
    assert "nothing to commit" in capsys.readouterr().out
    assert order_ids(shop) == sorted(set(range(1, ROWS + 1)) - MISSING_CURRENCY - BAD_AMOUNT - BOTH)

    fix_contract(shop)
    assert main(["replay", "demo/shop", "--object", "orders", "--dry-run"]) == 0
    assert "3 row(s) would be committed" in capsys.readouterr().out
    assert 5 not in order_ids(shop)

    assert main(["replay", "demo/shop", "--object", "orders", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["rows_committed"] == len(MISSING_CURRENCY) and outcome["rows_still_failing"] == 2
    assert order_ids(shop) == EXPECTED_AFTER_REPLAY
    left = quarantined(shop)
    assert set(left) == {"7", "14"}
    assert "currency" not in left["14"][0] and "amount" in left["14"][0]  # its reason under the fixed contract

    writer, _ = writer_for(shop)
    table = writer.load_table("demo", "orders")
    assert table is not None
    props = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert props[PROP_REPLAY_ID] == outcome["replay_id"] and props[PROP_REPLAYED_FROM] == "quarantine"
    assert PROP_RUN_ID not in props and PROP_CURSOR not in props
    assert table_cursor(shop) == cursor  # the cursor did not move

    # A second replay commits nothing.
    assert main(["replay", "demo/shop", "--object", "orders"]) == 0
    assert "nothing to commit" in capsys.readouterr().out
    assert order_ids(shop) == EXPECTED_AFTER_REPLAY

    # The next run continues from the table's cursor: only the new rows.
    with (shop / "tenants/demo/data/orders.csv").open("a") as handle:
        handle.write(orders_csv(ROWS + 1, ROWS + 2).replace(",,", ",EUR,"))
    ingest(shop, "run-2")
    assert order_ids(shop) == [*EXPECTED_AFTER_REPLAY, ROWS + 1, ROWS + 2]

    assert main(["inspect", "demo/shop", "--object", "orders", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    kinds = [s["kind"] for s in document["snapshots"]]
    assert kinds[:2] == ["run", "replay from quarantine"]
    assert document["snapshots"][1]["rows"] == len(MISSING_CURRENCY)


def cli(project: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
    env.pop("DATIVO_FAULT_INJECT", None)
    if fault:
        env["DATIVO_FAULT_INJECT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "dativo_dagster.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["replay_prepared", "before_commit", "after_commit", "replay_committed"])
def test_replay_killed_midway_commits_every_row_once(shop: Path, fault: str) -> None:
    ingest(shop, "run-1")
    fix_contract(shop)
    killed = cli(shop, "replay", "demo/shop", "--object", "orders", fault=fault)
    assert killed.returncode == 137, killed.stderr
    if fault != "replay_prepared" and fault != "before_commit":
        assert order_ids(shop) == EXPECTED_AFTER_REPLAY  # committed before the kill
    pending = [r for r, (_, origin) in quarantined(shop).items() if (origin or "").startswith(PENDING_PREFIX)]
    assert sorted(pending) == sorted(str(i) for i in MISSING_CURRENCY)  # set aside, not yet removed

    again = cli(shop, "replay", "demo/shop", "--object", "orders")
    assert again.returncode == 0, again.stderr
    assert "finished replay" in again.stdout
    assert order_ids(shop) == EXPECTED_AFTER_REPLAY  # every row exactly once
    assert set(quarantined(shop)) == {"7", "14"}
    third = cli(shop, "replay", "demo/shop", "--object", "orders")
    assert third.returncode == 0 and "nothing to commit" in third.stdout
    assert order_ids(shop) == EXPECTED_AFTER_REPLAY


CUSTOMER_HEADER = "customer_id,email,name,country,created_at,updated_at\n"


def customer(i: int, country: str, updated_day: int) -> str:
    created, updated = "2024-01-01T00:00:00+00:00", f"2024-01-{updated_day:02d}T00:00:00+00:00"
    return f"{i},c{i}@example.com,Customer {i},{country},{created},{updated}\n"


def test_a_merge_replay_never_overwrites_a_newer_version_of_a_key(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = project / "connectors/schemas/shop/customers.v1.yaml"
    contract.write_text(contract.read_text().replace("{name: country, type: string}", STRICT_COUNTRY))
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("objects:\n", "quality: {max_rejected_rate: 0.9}\nobjects:\n", 1))
    data = project / "tenants/demo/data/customers.csv"
    # 1 and 2 lack a country: quarantined.
    data.write_text(CUSTOMER_HEADER + customer(1, "", 10) + customer(2, "", 10) + customer(3, "FR", 10))
    ingest_customers(project, "run-1")
    # Customer 2 comes back, complete and newer, and is loaded; its quarantined version is now stale.
    data.write_text(CUSTOMER_HEADER + customer(2, "IT", 20) + customer(3, "FR", 10))
    ingest_customers(project, "run-2")
    contract.write_text(contract.read_text().replace(STRICT_COUNTRY, "{name: country, type: string}"))

    assert main(["replay", "demo/shop", "--object", "customers", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert outcome["rows_committed"] == 1 and outcome["rows_superseded"] == 1
    writer, _ = writer_for(project)
    table = writer.load_table("demo", "customers")
    assert table is not None
    rows = {r["customer_id"]: r for r in table.scan().to_arrow().to_pylist()}
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["country"] == "IT" and rows[2]["updated_at"].day == 20  # the newer version stays
    assert rows[1]["country"] is None
    quarantine = writer.load_table("demo", "customers__quarantine")
    assert quarantine is not None and quarantine.scan().to_arrow().num_rows == 0


STRICT_COUNTRY = "{name: country, type: string, required: true}"


def ingest_customers(project: Path, run_id: str) -> None:
    plan = load_plan(project, strict=True)
    job = plan.job("demo/shop")
    writer = IcebergWriter(build_catalog(job.target, SecretResolver(), project))
    with build_source(job, SecretResolver()) as source:
        result = ingest_object(job.object("customers"), source=source, writer=writer, run_id=run_id)
    assert result.error is None, result.error


def test_rejections_of_a_run_that_committed_nothing_are_left_to_the_next_run(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = shop / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("max_rejected_rate: 0.5", "max_rejected_rate: 0.1"))
    plan = load_plan(shop, strict=True)
    demo = plan.job("demo/shop")
    writer = IcebergWriter(build_catalog(demo.target, SecretResolver(), shop))
    with build_source(demo, SecretResolver()) as source:
        failed = ingest_object(demo.object("orders"), source=source, writer=writer, run_id="run-1")
    assert failed.error is not None and failed.error.code == "QUAL001"  # 5 of 20 rejected: nothing committed
    fix_contract(shop)
    assert main(["replay", "demo/shop", "--object", "orders", "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    # The run's cursor did not move: its rows are read again by the next run, not replayed now.
    assert outcome["rows_committed"] == 0 and outcome["rows_left_for_next_run"] == 5
    ingest(shop, "run-2")
    ids = order_ids(shop)
    assert ids == EXPECTED_AFTER_REPLAY and len(ids) == len(set(ids))  # every row once


def test_a_replay_whose_commits_landed_before_the_catalog_failed_is_complete(
    shop: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import CommitStateUnknownException

    from dativo_dagster.iceberg.integrity import PROP_INTEGRITY, verify_table

    ingest(shop, "run-1")
    fix_contract(shop)
    original = SqlCatalog.commit_table
    failed: list[str] = []

    def lands_then_times_out(self: SqlCatalog, table: object, requirements: object, updates: object) -> object:
        original(self, table, requirements, updates)  # type: ignore[arg-type]
        failed.append(table.name()[-1])  # type: ignore[attr-defined]
        raise CommitStateUnknownException("504 Gateway Timeout after the catalog committed")

    # Every commit of the replay (prepare, commit, finish) lands, then the catalog answers with an error.
    monkeypatch.setattr(SqlCatalog, "commit_table", lands_then_times_out)
    capsys.readouterr()
    assert main(["replay", "demo/shop", "--object", "orders", "--json"]) == 0
    monkeypatch.setattr(SqlCatalog, "commit_table", original)
    assert failed == ["orders__quarantine", "orders", "orders__quarantine"]
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["rows_committed"] == len(MISSING_CURRENCY)
    assert order_ids(shop) == EXPECTED_AFTER_REPLAY
    assert set(quarantined(shop)) == {"7", "14"}
    writer, _ = writer_for(shop)
    for name in ("orders", "orders__quarantine"):
        table = writer.load_table("demo", name)
        assert table is not None and not verify_table(table).failed, name
    # The replay's quarantine manifests record the run as the writer's do.
    quarantine = writer.load_table("demo", "orders__quarantine")
    assert quarantine is not None
    runs = [
        json.loads(Path(props[PROP_INTEGRITY].removeprefix("file://")).read_text())["run"]
        for props in (s.summary.additional_properties for s in quarantine.snapshots() if s.summary is not None)
        if "dativo.replay-phase" in props
    ]
    assert [run["operation"] for run in runs] == ["replay prepared", "replay finished"]
    assert all((run["tenant"], run["job"], run["object"]) == ("demo", "shop", "orders") for run in runs)
