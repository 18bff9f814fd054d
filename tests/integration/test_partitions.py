"""Partitioned objects against the real local PostgreSQL server: backfills, re-runs, races."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.engine import ObjectResult, enforcer_for, ingest_object
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.base import ReadRequest, TimeWindow
from dativo_dagster.sources.registry import build_source
from dativo_dagster.state import PROP_CURSOR, PROP_PARTITION
from tests.integration.sql_harness import Runner, write_project

pytestmark = pytest.mark.postgres

UTC = dt.timezone.utc
KEY = dg.AssetKey(["acme", "postgres", "events"])
CONNECTION = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}


@pytest.fixture
def pg(postgres_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {unique_name}")
        cursor.execute(f"CREATE TABLE {unique_name}.events (id bigint PRIMARY KEY, name text, updated_at timestamp)")
        # four days, five rows a day: ids 1..20, day d holds ids 5(d-1)+1 .. 5d
        cursor.execute(
            f"INSERT INTO {unique_name}.events SELECT i, 'row ' || i, "
            "timestamp '2024-01-01' + ((i - 1) / 5) * interval '1 day' + (i % 5) * interval '1 hour' "
            "FROM generate_series(1, 20) i"
        )
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {unique_name} CASCADE")
        connection.close()


def sql(connection: Any, *statements: str) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def make_project(tmp_path: Path, schema: str, **partitions: Any) -> Path:
    return write_project(
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
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01", **partitions}},
    )


def source_rows(connection: Any, schema: str, where: str = "TRUE") -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, name, updated_at FROM {schema}.events WHERE {where} ORDER BY id")
        return list(cursor.fetchall())


def table_rows(writer: IcebergWriter) -> list[tuple[Any, ...]]:
    table = writer.load_table("acme", "events")
    assert table is not None
    rows = table.scan().to_arrow().to_pylist()
    return sorted((r["id"], r["name"], r["updated_at"]) for r in rows)


def materialize(root: Path, instance: dg.DagsterInstance, **kwargs: Any) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_plan(root, strict=True))
    return dg.materialize(
        assets=list(defs.assets or []), resources=defs.resources, instance=instance, raise_on_error=False, **kwargs
    )


def day(text: str) -> TimeWindow:
    start = dt.datetime.fromisoformat(text).replace(tzinfo=UTC)
    return TimeWindow(start, start + dt.timedelta(days=1))


def test_backfill_then_rerun_of_one_partition_leaves_the_table_identical(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    root = make_project(tmp_path, schema)
    runner = Runner(root)
    instance = dg.DagsterInstance.ephemeral()
    for key in ("2024-01-01", "2024-01-02", "2024-01-03"):
        result = materialize(root, instance, partition_key=key)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        assert event.partition == key
        metadata = event.event_specific_data.materialization.metadata
        assert metadata["dativo/partition_window"].value.startswith(f"{key}T00:00:00+00:00/")
    loaded = table_rows(runner.writer)
    assert loaded == sorted(source_rows(connection, schema, "updated_at < '2024-01-04'"))
    assert len(loaded) == 15
    table = runner.writer.load_table("acme", "events")
    assert table is not None
    snapshots = len(table.snapshots())
    # a partition run moves no cursor: there is none yet
    assert read_table_cursor(table) is None

    again = materialize(root, instance, partition_key="2024-01-02")
    assert again.success
    assert table_rows(runner.writer) == loaded
    table = table.refresh()
    assert len(table.snapshots()) == snapshots + 1  # one commit
    summary = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert summary[PROP_PARTITION].startswith("2024-01-02T00:00:00+00:00/")

    # the same three days as one range (what a backfill with several partitions per run does)
    ranged = materialize(
        root,
        instance,
        tags={"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"},
    )
    assert ranged.success
    assert table_rows(runner.writer) == loaded
    assert len(table.refresh().snapshots()) == snapshots + 2


@pytest.mark.parametrize("key_pruning", ["key list", "key range"])
def test_rerun_after_the_source_changed_matches_the_window_exactly(
    pg: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_pruning: str
) -> None:
    connection, schema = pg
    if key_pruning == "key range":  # what a run with more keys than an IN list holds does
        monkeypatch.setattr("dativo_dagster.iceberg.window.FILTER_PRUNING_MAX_KEYS", 1)
    runner = Runner(make_project(tmp_path, schema))
    for key in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert runner_window(runner, key).error is None
    before = table_rows(runner.writer)
    sql(
        connection,
        f"UPDATE {schema}.events SET name = 'renamed' WHERE id = 7",
        f"DELETE FROM {schema}.events WHERE id = 8",
        f"INSERT INTO {schema}.events VALUES (99, 'late', '2024-01-02 23:59:59.999999')",
        # id 2 moves from the first day to the third (an update): the newer version wins
        f"UPDATE {schema}.events SET name = 'moved', updated_at = '2024-01-03 12:00' WHERE id = 2",
    )
    assert runner_window(runner, "2024-01-02").error is None
    after = table_rows(runner.writer)
    in_window = [r for r in after if dt.datetime(2024, 1, 2) <= r[2] < dt.datetime(2024, 1, 3)]
    assert in_window == source_rows(connection, schema, "updated_at >= '2024-01-02' AND updated_at < '2024-01-03'")
    untouched = [r for r in before if not dt.datetime(2024, 1, 2) <= r[2] < dt.datetime(2024, 1, 3)]
    assert [r for r in after if not dt.datetime(2024, 1, 2) <= r[2] < dt.datetime(2024, 1, 3)] == untouched

    # the third day now holds id 2's new version, which replaces the first day's old one
    assert runner_window(runner, "2024-01-03").error is None
    assert [r for r in table_rows(runner.writer) if r[0] == 2] == [(2, "moved", dt.datetime(2024, 1, 3, 12))]
    # re-reading the first day (id 2 has left it) keeps the newer version and adds no copy
    assert runner_window(runner, "2024-01-01").error is None
    final = table_rows(runner.writer)
    assert [r for r in final if r[0] == 2] == [(2, "moved", dt.datetime(2024, 1, 3, 12))]
    assert final == source_rows(connection, schema, "updated_at < '2024-01-04'")
    # a day without rows, at the source and in the table, commits and changes nothing
    assert runner_window(runner, "2024-01-10").error is None
    assert table_rows(runner.writer) == final


def test_a_stale_partition_read_never_overwrites_a_newer_version(pg: tuple[Any, str], tmp_path: Path) -> None:
    """A partition read before a row was updated commits after the incremental run loaded the update."""
    connection, schema = pg
    runner = Runner(make_project(tmp_path, schema))
    obj = runner.job.object("events")
    window = day("2024-01-01")
    with build_source(runner.job, runner.resolver) as source:
        extraction = source.read(ReadRequest(obj=obj, between=window))
        stale = list(extraction)  # read before the update
    sql(connection, f"UPDATE {schema}.events SET name = 'new', updated_at = '2024-01-05 08:00' WHERE id = 1")
    assert runner.run("events").error is None  # incremental: loads everything, id 1 in its new version
    cursor_before = read_table_cursor(runner.writer.load_table("acme", "events"))  # type: ignore[arg-type]
    with build_source(runner.job, runner.resolver) as source:
        enforcer = enforcer_for(obj, source)
    result = runner.writer.write(
        obj,
        iter(stale),
        enforcer=enforcer,
        run_id="stale-partition",
        previous_cursor=cursor_before.cursor if cursor_before else None,
        new_cursor=lambda: None,
        window=window,
        base_snapshot_id=cursor_before.snapshot_id if cursor_before else None,
    )
    assert result.committed
    rows = table_rows(runner.writer)
    assert [r for r in rows if r[0] == 1] == [(1, "new", dt.datetime(2024, 1, 5, 8))]
    assert rows == source_rows(connection, schema)
    after = read_table_cursor(runner.writer.load_table("acme", "events"))  # type: ignore[arg-type]
    assert after is not None and cursor_before is not None
    assert after.cursor == cursor_before.cursor and after.snapshot_id == cursor_before.snapshot_id


def runner_window(runner: Runner, key: str) -> ObjectResult:
    runner.runs += 1
    with build_source(runner.job, runner.resolver) as source:
        return ingest_object(
            runner.job.object("events"),
            source=source,
            writer=runner.writer,
            run_id=f"partition-{runner.runs}",
            window=day(key),
        )


@pytest.mark.parametrize("first", ["incremental", "partition"])
@pytest.mark.parametrize("partition_day", ["2024-01-02", "2024-01-06"])
def test_incremental_and_partition_committing_together_lose_and_duplicate_nothing(
    pg: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, partition_day: str
) -> None:
    """Both runs reach their commit at once; one lands first, the other replays on top of it.

    2024-01-02 lies before the incremental run's reach; 2024-01-06 is the day the incremental run
    is loading, so a partition that commits second reads its window again.
    """
    connection, schema = pg
    runner = Runner(make_project(tmp_path, schema))
    assert runner.run("events").error is None  # the incremental cursor: 2024-01-04 04:00
    sql(
        connection,
        f"UPDATE {schema}.events SET name = 'changed', updated_at = '2024-01-06 01:00' WHERE id = 7",
        f"INSERT INTO {schema}.events VALUES (100, 'new', '2024-01-06 02:00'), (101, 'new', '2024-01-06 03:00')",
    )
    at_commit = threading.Barrier(2, timeout=60)
    first_done = threading.Event()
    partition_read = threading.Event()
    original = IcebergWriter._commit
    seen: set[str] = set()

    def ordered_commit(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        who = "incremental" if staged.window is None else "partition"
        if who in seen:  # a re-read partition commits freely
            return original(self, table, txn, staged)
        seen.add(who)
        if who == "partition":
            # a row arrives after the partition read its window and before the incremental run reads
            sql(connection, f"INSERT INTO {schema}.events VALUES (102, 'late', '2024-01-06 03:30')")
            partition_read.set()
        at_commit.wait()
        if who != first:
            assert first_done.wait(60)
        try:
            return original(self, table, txn, staged)
        finally:
            if who == first:
                first_done.set()

    monkeypatch.setattr(IcebergWriter, "_commit", ordered_commit)
    results: dict[str, ObjectResult] = {}

    def incremental() -> None:
        assert partition_read.wait(60)
        results["incremental"] = runner.run("events")

    def partition() -> None:
        results["partition"] = runner_window(runner, partition_day)

    threads = [threading.Thread(target=incremental), threading.Thread(target=partition)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results["incremental"].error is None, results["incremental"].error
    assert results["partition"].error is None, results["partition"].error
    rows = table_rows(runner.writer)
    assert len({r[0] for r in rows}) == len(rows)  # no duplicate
    assert rows == source_rows(connection, schema)  # no loss
    table = runner.writer.load_table("acme", "events")
    assert table is not None
    cursor = read_table_cursor(table)
    assert cursor is not None and cursor.cursor is not None
    assert cursor.cursor.value.startswith("2024-01-06T03:30:00")  # the incremental run's, unchanged
    partition_snapshots = [
        s for s in table.snapshots() if s.summary is not None and PROP_PARTITION in s.summary.additional_properties
    ]
    assert partition_snapshots
    copied = partition_snapshots[-1].summary.additional_properties[PROP_CURSOR]  # type: ignore[union-attr]
    expected = "2024-01-06T03:30:00" if first == "incremental" else "2024-01-04T04:00:00"
    assert expected in copied


def test_schedule_run_without_partition_key_stays_incremental(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    root = make_project(tmp_path, schema)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(root, instance, partition_key="2024-01-02").success
    result = materialize(root, instance)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.partition is None
    runner = Runner(root)
    assert table_rows(runner.writer) == source_rows(connection, schema)
    table = runner.writer.load_table("acme", "events")
    assert table is not None
    cursor = read_table_cursor(table)
    assert cursor is not None and cursor.cursor is not None and cursor.cursor.value.startswith("2024-01-04T04:00")


def test_partitions_in_another_time_zone_cut_the_day_there(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"INSERT INTO {schema}.events VALUES (50, 'berlin 2 January', '2024-01-01 23:30'), "
        "(51, 'berlin 3 January', '2024-01-02 23:00')",
    )
    root = make_project(tmp_path, schema, timezone="Europe/Berlin")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(root, instance, partition_key="2024-01-02").success
    ids = [row[0] for row in table_rows(Runner(root).writer)]
    # 2 January in Berlin is [2024-01-01 23:00, 2024-01-02 23:00) UTC
    assert ids == [6, 7, 8, 9, 10, 50]
