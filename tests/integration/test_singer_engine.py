"""``engine: singer`` with the real ``tap-mysql`` from the package index against the local MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import AuthError, ConfigError
from dativo_dagster.sources.registry import build_source
from tests.integration.engine_harness import connectors_cache, maria, singer_project, sql
from tests.integration.sql_harness import Runner, write_project

__all__ = ["connectors_cache", "maria"]  # fixtures

pytestmark = [pytest.mark.mysql, pytest.mark.slow, pytest.mark.usefixtures("connectors_cache")]

UTC = dt.timezone.utc


def _items(connection: Any, db: str, start: int, count: int, *, month: int = 1) -> None:
    """Rows ``start..`` updated one second apart from the first of ``month`` 2024."""
    base = dt.datetime(2024, month, 1)
    rows = [(i, f"item {i}", f"{i % 1000}.25", base + dt.timedelta(seconds=i)) for i in range(start, start + count)]
    sql(connection, f"INSERT INTO {db}.items (id, name, amount, updated_at) VALUES (%s, %s, %s, %s)", many=rows)


def _ids(runner: Runner, table: str) -> list[int]:
    return [row["id"] for row in runner.rows(table)]


def test_full_table_and_incremental_with_checkpoints(maria: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = maria
    sql(
        connection,
        f"CREATE TABLE {db}.items (id int PRIMARY KEY, name varchar(40), amount decimal(10,2), "
        "updated_at datetime(6) NOT NULL)",
    )
    _items(connection, db, 1, 2500)
    objects = [
        {"name": "copy", "options": {"stream": f"{db}-items"}, "primary_key": ["id"]},
        {
            "name": "items",
            "options": {"stream": "items", "checkpoint_rows": 1000},
            "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            "primary_key": ["id"],
        },
    ]
    runner = Runner(singer_project(tmp_path / "p", db, objects))

    full = runner.run("copy")
    assert full.error is None, full.error
    assert full.write is not None and full.write.rows_written == 2500 and full.write.cursor is None
    assert sorted(_ids(runner, "copy")) == list(range(1, 2501))

    first = runner.run("items")
    assert first.error is None, first.error
    assert first.write is not None and first.write.rows_written == 2500
    # tap-mysql sends STATE every 1000 rows: commits at 1000, 2000 and the end.
    assert first.source_stats["checkpoints"] >= 3
    table = runner.writer.load_table("acme", "items")
    assert table is not None and len(table.snapshots()) >= 3
    state = first.write.cursor.value  # type: ignore[union-attr]
    assert state["bookmarks"][f"{db}-items"]["replication_key"] == "updated_at"
    assert state["bookmarks"][f"{db}-items"]["replication_key_value"] == "2024-01-01T00:41:40.000000Z"  # row 2500

    # New rows and one update: the tap starts from the committed state, so only those come back
    # (plus the rows at the bookmark itself, which Singer re-sends inclusively and the merge absorbs).
    _items(connection, db, 2501, 10, month=2)
    sql(connection, f"UPDATE {db}.items SET name = 'renamed', updated_at = '2024-03-01 00:00:00' WHERE id = 7")
    second = runner.run("items")
    assert second.error is None, second.error
    assert second.write is not None and second.write.rows_read == 12  # row 2500 (the bookmark), 11 changes
    rows = {row["id"]: row for row in runner.rows("items")}
    assert sorted(rows) == list(range(1, 2511))
    assert rows[7]["name"] == "renamed" and rows[7]["amount"] == 7.25
    assert second.write.cursor is not None
    assert second.write.cursor.value["bookmarks"][f"{db}-items"]["replication_key_value"].startswith("2024-03-01")

    # Nothing new: the bookmark row comes back and merges onto itself.
    third = runner.run("items")
    assert third.error is None and third.write is not None and third.write.rows_read == 1
    assert len(runner.rows("items")) == 2510

    # A full-table copy replaces the table atomically: a deleted row disappears.
    sql(connection, f"DELETE FROM {db}.items WHERE id = 3")
    again = runner.run("copy")
    assert again.error is None and again.write is not None
    assert sorted(_ids(runner, "copy")) == [i for i in range(1, 2511) if i != 3]


CONTRACT = """name: shop/orders
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: customer, type: string}
  - {name: amount, type: decimal, precision: 10, scale: 2}
  - {name: ratio, type: float64}
  - {name: paid, type: boolean}
  - {name: note, type: string}
  - {name: ordered_at, type: timestamptz}
  - {name: updated_at, type: timestamptz, required: true}
  - {name: day, type: date}
"""


def test_native_and_singer_load_identical_rows(maria: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = maria
    sql(
        connection,
        f"""CREATE TABLE {db}.orders (id bigint PRIMARY KEY, customer varchar(40), amount decimal(10,2),
            ratio double, paid tinyint(1), note text, ordered_at datetime(6), updated_at datetime(6) NOT NULL,
            day date)""",
    )
    rows = [
        (
            i,
            None if i % 7 == 0 else f"customer {i % 13} é ✓",
            None if i % 11 == 0 else f"{i}.{i % 100:02d}",
            i / 8,
            i % 2,
            'line\nbreak, "quoted"' if i % 5 == 0 else None,
            None if i % 9 == 0 else f"2024-0{1 + i % 9}-1{i % 10} 1{i % 10}:2{i % 10}:00.{i:06d}",
            f"2024-05-01 00:00:{i % 60:02d}",
            None if i % 4 == 0 else f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}",
        )
        for i in range(1, 1201)
    ]
    sql(connection, f"INSERT INTO {db}.orders VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", many=rows)
    contract = {"shop/orders.v1.yaml": CONTRACT}
    incremental = {"strategy": "updated", "cursor_field": "updated_at"}
    native = Runner(
        write_project(
            tmp_path / "native",
            "mysql",
            {"host": "127.0.0.1", "port": 3306, "database": db, "user": "root"},
            [
                {
                    "name": "orders",
                    "options": {"table": "orders"},
                    "contract": {"name": "shop/orders", "version": 1},
                    "incremental": incremental,
                }
            ],
            contracts=contract,
        )
    )
    singer = Runner(
        singer_project(
            tmp_path / "singer",
            db,
            [
                {
                    "name": "orders",
                    "options": {"stream": "orders"},
                    "contract": {"name": "shop/orders", "version": 1},
                    "incremental": incremental,
                }
            ],
            contracts=contract,
        )
    )
    for runner in (native, singer):
        result = runner.run("orders")
        assert result.error is None, result.error
        assert result.write is not None and result.write.rows_written == 1200 and result.write.rows_rejected == 0
    native_rows = sorted(native.rows("orders"), key=lambda r: r["id"])
    singer_rows = sorted(singer.rows("orders"), key=lambda r: r["id"])
    assert native_rows == singer_rows
    assert native_rows[4]["note"] == 'line\nbreak, "quoted"'
    assert native_rows[0]["amount"] == decimal.Decimal("1.01")
    assert native_rows[0]["ordered_at"] == dt.datetime(2024, 2, 11, 11, 21, 0, 1, tzinfo=UTC)
    assert native_rows[0]["day"] == dt.date(2023, 2, 2)  # tap-mysql sends 2023-02-02T00:00:00.000000Z
    native_table = native.writer.load_table("acme", "orders")
    singer_table = singer.writer.load_table("acme", "orders")
    assert native_table is not None and singer_table is not None
    assert native_table.schema().as_arrow() == singer_table.schema().as_arrow()


def _source_of(root: Path, environ: dict[str, str] | None = None) -> Any:
    job = load_plan(root, strict=True).jobs[0]
    return build_source(job, SecretResolver(environ or {})), job


def test_missing_setting_and_wrong_password_get_their_codes(maria: tuple[Any, str], tmp_path: Path) -> None:
    _, db = maria
    objects = [{"name": "items", "options": {"stream": "items"}, "primary_key": ["id"]}]
    missing = singer_project(
        tmp_path / "missing",
        db,
        objects,
        recipe={"config": {"port": 3306, "user": "root", "password": "${TEST_MYSQL_PASSWORD:-}"}},
    )
    source, _ = _source_of(missing)
    with source, pytest.raises(ConfigError) as config_error:
        source.check_connection()
    assert "host" in config_error.value.message

    wrong = singer_project(tmp_path / "wrong", db, objects)
    source, _ = _source_of(wrong, {"TEST_MYSQL_PASSWORD": "not-the-password-7f3a"})
    with source, pytest.raises(AuthError) as auth_error:
        source.check_connection()
    assert "Access denied" in auth_error.value.message
    assert "not-the-password-7f3a" not in str(auth_error.value) + str(auth_error.value.hint)


def test_an_unknown_stream_is_cfg001_naming_the_streams(maria: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = maria
    sql(connection, f"CREATE TABLE {db}.items (id int PRIMARY KEY)")
    root = singer_project(tmp_path / "p", db, [{"name": "nothere", "primary_key": ["id"]}])
    source, job = _source_of(root)
    with source, pytest.raises(ConfigError) as error:
        source.check_object(job.object("nothere"))
    assert "'nothere'" in error.value.message and f"{db}-items" in error.value.message


def test_test_connection_runs_the_taps_own_check(maria: tuple[Any, str], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    connection, db = maria
    sql(connection, f"CREATE TABLE {db}.items (id int PRIMARY KEY)")
    root = singer_project(
        tmp_path / "p", db, [{"name": "items", "options": {"stream": "items"}, "primary_key": ["id"]}]
    )
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(root), "DATIVO_HOME": str(root / ".dativo")}

    def test_connection(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dativo_dagster.cli", "test-connection", "acme/db"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    good = test_connection()
    assert good.returncode == 0, good.stdout + good.stderr
    assert "source reachable and authenticated" in good.stdout and "items" in good.stdout
    bad = test_connection(TEST_MYSQL_PASSWORD="wrong-password-4b1d")
    assert bad.returncode == 2
    assert "AUTH001" in bad.stdout + bad.stderr and "wrong-password-4b1d" not in bad.stdout + bad.stderr
