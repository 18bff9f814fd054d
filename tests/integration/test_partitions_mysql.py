"""A partition window pushed down to the mysql source (both read paths) against the local MariaDB server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
import pytest

from dativo_dagster.engine import ingest_object
from dativo_dagster.sources.base import TimeWindow
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import Runner, write_project

pytestmark = pytest.mark.mysql

UTC = dt.timezone.utc


@pytest.fixture
def my(mysql_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {unique_name}")
        cursor.execute(f"CREATE TABLE {unique_name}.events (id bigint PRIMARY KEY, updated_at datetime(6))")
        cursor.execute(
            f"INSERT INTO {unique_name}.events VALUES (1, '2024-01-01 23:59:59.999999'), (2, '2024-01-02 00:00:00'), "
            "(3, '2024-01-02 12:00:00'), (4, '2024-01-03 00:00:00'), (5, NULL)"
        )
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {unique_name}")
        connection.close()


@pytest.mark.parametrize("engine", ["connectorx", "pymysql"])
def test_a_partition_reads_exactly_its_window(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    _, db = my
    settings = {"host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "engine": engine}
    objects = [
        {
            "name": "events",
            "options": {"table": "events"},
            "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            "primary_key": ["id"],
        }
    ]
    partitions = {"partitions": {"granularity": "daily", "start": "2024-01-01"}}
    runner = Runner(write_project(tmp_path / "p", "mysql", settings, objects, job_extra=partitions))
    start = dt.datetime(2024, 1, 2, tzinfo=UTC)
    with build_source(runner.job, runner.resolver) as source:
        result = ingest_object(
            runner.job.object("events"),
            source=source,
            writer=runner.writer,
            run_id="p-1",
            window=TimeWindow(start, start + dt.timedelta(days=1)),
        )
    assert result.error is None, result.error
    assert sorted(row["id"] for row in runner.rows("events")) == [2, 3]


def _partitioned(tmp_path: Path, db: str, cursor_field: str, zone: str = "UTC") -> Runner:
    settings = {"host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "engine": "pymysql"}
    objects = [
        {
            "name": "typed",
            "options": {"table": "typed"},
            "incremental": {"strategy": "updated", "cursor_field": cursor_field},
            "primary_key": ["id"],
        }
    ]
    partitions = {"partitions": {"granularity": "daily", "start": "2024-01-01", "timezone": zone}}
    return Runner(write_project(tmp_path / "p", "mysql", settings, objects, job_extra=partitions))


def _run_window(runner: Runner, start: dt.datetime) -> Any:
    with build_source(runner.job, runner.resolver) as source:
        return ingest_object(
            runner.job.object("typed"),
            source=source,
            writer=runner.writer,
            run_id="p-1",
            window=TimeWindow(start, start + dt.timedelta(days=1)),
        )


@pytest.mark.parametrize("cursor_field", ["label", "number"])
def test_a_cursor_column_that_is_not_a_time_is_cfg001_naming_the_field(
    my: tuple[Any, str], tmp_path: Path, cursor_field: str
) -> None:
    connection, db = my
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {db}.typed (id bigint PRIMARY KEY, label varchar(40), number bigint, day date)")
        cursor.execute(f"INSERT INTO {db}.typed VALUES (1, '2024-01-02', 20240102, '2024-01-02')")
    result = _run_window(_partitioned(tmp_path, db, cursor_field), dt.datetime(2024, 1, 2, tzinfo=UTC))
    assert result.error is not None and result.error.code == "CFG001"
    assert "tenants/acme/jobs/db.yaml: objects[0].incremental.cursor_field" in result.error.message


def test_a_date_cursor_partition_behind_utc_holds_its_local_date(my: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = my
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {db}.typed (id bigint PRIMARY KEY, day date)")
        cursor.execute(f"INSERT INTO {db}.typed VALUES (1, '2024-01-01'), (2, '2024-01-02'), (3, '2024-01-03')")
    zone = ZoneInfo("America/New_York")
    runner = _partitioned(tmp_path, db, "day", "America/New_York")
    result = _run_window(runner, dt.datetime(2024, 1, 1, tzinfo=zone))
    assert result.error is None, result.error
    assert sorted(row["id"] for row in runner.rows("typed")) == [1]
