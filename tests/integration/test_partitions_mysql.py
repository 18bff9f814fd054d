"""A partition window pushed down to the mysql source (both read paths) against the local MariaDB server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
