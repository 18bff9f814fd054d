"""Partitions cut in a time zone (date and timestamp cursors), the run-time cursor type check, a reset
committed while a partition reads, and the cursor once only partition snapshots are left."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg2
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.models import Partitions
from dativo_dagster.engine import ObjectResult, ingest_object
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.partitions import partitions_definition
from dativo_dagster.resets import ResetRequest
from dativo_dagster.sources.base import TimeWindow
from dativo_dagster.sources.registry import build_source
from dativo_dagster.state import PROP_PARTITION
from tests.integration.sql_harness import Runner, write_project

ZONES = ["America/New_York", "Asia/Tokyo"]  # behind and ahead of UTC
CONNECTION = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}
DAYS_CONTRACT = """\
name: acme/days
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: day, type: date, required: true}
"""
MOMENTS_CONTRACT = """\
name: acme/moments
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: at, type: timestamptz, required: true}
"""


def local(zone: str, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, minute, tzinfo=ZoneInfo(zone))


def window_of(zone: str, key: str) -> TimeWindow:
    """The window Dagster gives a run of partition ``key`` (daily from 2024-01-01 in ``zone``)."""
    config = Partitions.model_validate({"granularity": "daily", "start": "2024-01-01", "timezone": zone})
    window = partitions_definition(config).time_window_for_partition_key(key)
    return TimeWindow(window.start, window.end)


def ids(writer: IcebergWriter, table: str) -> list[int]:
    loaded = writer.load_table("acme", table)
    assert loaded is not None
    return sorted(row["id"] for row in loaded.scan().to_arrow().to_pylist())


def run_window(runner: Runner, name: str, window: TimeWindow) -> ObjectResult:
    runner.runs += 1
    with build_source(runner.job, runner.resolver) as source:
        return ingest_object(
            runner.job.object(name), source=source, writer=runner.writer, run_id=f"p-{runner.runs}", window=window
        )


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {unique_name}")
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {unique_name} CASCADE")
        connection.close()


def sql(connection: Any, *statements: str, params: tuple[Any, ...] | None = None) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ZONES)
def test_postgres_partitions_in_a_time_zone_hold_their_local_days(
    pg: tuple[Any, str], tmp_path: Path, zone: str
) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.days (id bigint PRIMARY KEY, day date)",
        f"INSERT INTO {schema}.days VALUES (1, '2024-01-01'), (2, '2024-01-02'), (3, '2024-01-03'), (4, '2024-01-04')",
        f"CREATE TABLE {schema}.moments (id bigint PRIMARY KEY, at timestamptz)",
    )
    moments = {
        10: local(zone, 3),  # the first instant of 3 January there
        11: local(zone, 3, 23, 59),
        12: local(zone, 2, 23, 59),  # 2 January there
        13: local(zone, 4),  # 4 January there
    }
    for key, at in moments.items():
        sql(connection, f"INSERT INTO {schema}.moments VALUES (%s, %s)", params=(key, at))
    root = write_project(
        tmp_path / "p",
        "postgres",
        CONNECTION,
        [
            {
                "name": "days",
                "contract": {"name": "acme/days", "version": 1},
                "options": {"table": f"{schema}.days"},
                "incremental": {"strategy": "updated", "cursor_field": "day"},
            },
            {
                "name": "moments",
                "contract": {"name": "acme/moments", "version": 1},
                "options": {"table": f"{schema}.moments"},
                "incremental": {"strategy": "updated", "cursor_field": "at"},
            },
        ],
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01", "timezone": zone}},
        contracts={"acme/days.v1.yaml": DAYS_CONTRACT, "acme/moments.v1.yaml": MOMENTS_CONTRACT},
    )
    defs = build_definitions(load_plan(root, strict=True))
    instance = dg.DagsterInstance.ephemeral()

    def materialize(key: str) -> None:
        result = dg.materialize(
            assets=list(defs.assets or []),
            resources=defs.resources,
            instance=instance,
            partition_key=key,
            raise_on_error=False,
        )
        assert result.success

    writer = Runner(root).writer
    materialize("2024-01-01")
    assert ids(writer, "days") == [1]  # the rows dated on partitions.start have a partition
    assert ids(writer, "moments") == []
    materialize("2024-01-03")
    assert ids(writer, "days") == [1, 3]
    assert ids(writer, "moments") == [10, 11]
    # re-running the partition replaces exactly 3 January's rows of the date column
    sql(connection, f"DELETE FROM {schema}.days WHERE id = 3", f"INSERT INTO {schema}.days VALUES (33, '2024-01-03')")
    materialize("2024-01-03")
    assert ids(writer, "days") == [1, 33]


@pytest.mark.postgres
@pytest.mark.parametrize("column_type", ["varchar(40)", "bigint"])
def test_postgres_cursor_column_that_is_not_a_time_is_cfg001_naming_the_field(
    pg: tuple[Any, str], tmp_path: Path, column_type: str
) -> None:
    """Without a contract the cursor column's type is only known at the source, when a partition runs."""
    connection, schema = pg
    value = "'2024-01-02'" if column_type.startswith("varchar") else "20240102"
    sql(
        connection,
        f"CREATE TABLE {schema}.events (id bigint PRIMARY KEY, updated_at {column_type})",
        f"INSERT INTO {schema}.events VALUES (1, {value})",
    )
    root = write_project(
        tmp_path / "p",
        "postgres",
        CONNECTION,
        [
            {
                "name": "events",
                "options": {"table": f"{schema}.events"},
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
                "primary_key": ["id"],
            }
        ],
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01"}},
    )
    runner = Runner(root)
    result = run_window(runner, "events", window_of("UTC", "2024-01-02"))
    assert result.error is not None
    assert result.error.code == "CFG001"
    assert "tenants/acme/jobs/db.yaml: objects[0].incremental.cursor_field" in result.error.message
    assert "acme/db/events" in result.error.message
    assert runner.writer.load_table("acme", "events") is None  # nothing read, nothing written


@pytest.mark.postgres
@pytest.mark.parametrize("reset", ["to", "full_refresh"])
def test_a_reset_and_incremental_run_during_a_partition_read_lose_nothing(
    pg: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reset: str
) -> None:
    """The partition's window ends before the old cursor, but the reset moved the cursor back into it."""
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.events (id bigint PRIMARY KEY, name text, updated_at timestamp)",
        f"INSERT INTO {schema}.events SELECT i, 'row ' || i, timestamp '2024-01-01' + (i - 1) * interval '6 hours' "
        "FROM generate_series(1, 16) i",  # 1 to 4 January
    )
    root = write_project(
        tmp_path / "p",
        "postgres",
        CONNECTION,
        [
            {
                "name": "events",
                "options": {"table": f"{schema}.events"},
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
                "primary_key": ["id"],
            }
        ],
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01"}},
    )
    runner = Runner(root)
    assert runner.run("events").error is None  # cursor: 2024-01-04 18:00
    request = ResetRequest.of(to="2024-01-01T00:00:00") if reset == "to" else ResetRequest.of(full_refresh=True)
    original = IcebergWriter._commit
    raced: list[str] = []

    def reset_before_the_partition_commits(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        if staged.window is not None and not raced:
            raced.append("once")
            # a correction at the source, loaded by the reset's run while the partition was reading
            sql(connection, f"UPDATE {schema}.events SET name = 'corrected' WHERE id = 2")
            with build_source(runner.job, runner.resolver) as source:
                loaded = ingest_object(
                    runner.job.object("events"), source=source, writer=runner.writer, run_id="reset", reset=request
                )
            assert loaded.error is None, loaded.error
        return original(self, table, txn, staged)

    monkeypatch.setattr(IcebergWriter, "_commit", reset_before_the_partition_commits)
    result = run_window(runner, "events", window_of("UTC", "2024-01-01"))
    assert result.error is None, result.error
    assert raced
    rows = sorted((r["id"], r["name"]) for r in runner.rows("events"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, name FROM {schema}.events ORDER BY id")
        assert rows == list(cursor.fetchall())
    assert (2, "corrected") in rows


# --------------------------------------------------------------------------- CSV


def csv_runner(tmp_path: Path, zone: str, cursor_type: str, rows: list[str]) -> Runner:
    contract = (
        "name: acme/events\nversion: 1\nprimary_key: [id]\ncolumns:\n"
        "  - {name: id, type: int64, required: true}\n"
        f"  - {{name: updated_at, type: {cursor_type}, required: true}}\n"
    )
    root = write_project(
        tmp_path / "p",
        "csv",
        {"base_path": "tenants/acme/data"},
        [
            {
                "name": "events",
                "contract": {"name": "acme/events", "version": 1},
                "options": {"path": "events.csv", "settle_seconds": 0},
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            }
        ],
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01", "timezone": zone}},
        contracts={"acme/events.v1.yaml": contract},
    )
    data = root / "tenants/acme/data"
    data.mkdir(parents=True)
    (data / "events.csv").write_text("\n".join(["id,updated_at", *rows]) + "\n")
    return Runner(root)


@pytest.mark.parametrize("zone", ZONES)
def test_csv_date_cursor_partitions_hold_their_local_dates(tmp_path: Path, zone: str) -> None:
    runner = csv_runner(tmp_path, zone, "date", ["1,2024-01-01", "2,2024-01-02", "3,2024-01-03", "4,2024-01-04"])
    assert run_window(runner, "events", window_of(zone, "2024-01-01")).error is None
    assert ids(runner.writer, "events") == [1]
    assert run_window(runner, "events", window_of(zone, "2024-01-03")).error is None
    assert ids(runner.writer, "events") == [1, 3]
    assert run_window(runner, "events", window_of(zone, "2024-01-03")).error is None  # a re-run changes nothing
    assert ids(runner.writer, "events") == [1, 3]


@pytest.mark.parametrize("zone", ZONES)
def test_csv_timestamp_cursor_partitions_hold_their_local_days(tmp_path: Path, zone: str) -> None:
    moments = {10: local(zone, 3), 11: local(zone, 3, 23, 59), 12: local(zone, 2, 23, 59), 13: local(zone, 4)}
    rows = [f"{key},{at.astimezone(dt.timezone.utc).isoformat()}" for key, at in moments.items()]
    runner = csv_runner(tmp_path, zone, "timestamptz", rows)
    assert run_window(runner, "events", window_of(zone, "2024-01-03")).error is None
    assert ids(runner.writer, "events") == [10, 11]


def test_the_cursor_survives_when_only_partition_snapshots_are_left(tmp_path: Path) -> None:
    runner = csv_runner(tmp_path, "UTC", "timestamptz", [f"{i},2024-01-0{i}T12:00:00+00:00" for i in range(1, 6)])
    assert runner.run("events").error is None  # cursor: 2024-01-05 12:00
    assert run_window(runner, "events", window_of("UTC", "2024-01-02")).error is None
    table = runner.writer.load_table("acme", "events")
    assert table is not None
    before = read_table_cursor(table)
    assert before is not None and before.cursor is not None
    current = table.current_snapshot()
    assert current is not None and PROP_PARTITION in current.summary.additional_properties  # type: ignore[union-attr]
    # snapshot expiry removes the incremental run's snapshot from the lineage
    older = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current.snapshot_id]
    table.maintenance.expire_snapshots().by_ids(older).commit()
    table = table.refresh()
    after = read_table_cursor(table)
    assert after is not None and after.cursor == before.cursor and after.snapshot_id is None
    result = runner.run("events")  # continues from the cursor: re-reads only the boundary row
    assert result.error is None, result.error
    assert result.write is not None and result.write.rows_read == 1
    assert ids(runner.writer, "events") == [1, 2, 3, 4, 5]
    # and the next partition run copies it on
    assert run_window(runner, "events", window_of("UTC", "2024-01-03")).error is None
    again = read_table_cursor(runner.writer.load_table("acme", "events"))  # type: ignore[arg-type]
    assert again is not None and again.cursor == before.cursor
