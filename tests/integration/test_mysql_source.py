"""The mysql source against the real local MariaDB server."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import AuthError, ConfigError, ExtractError, QualityError
from dativo_dagster.sources.base import ReadRequest
from dativo_dagster.sources.mysql import MySQLSource
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import Runner, write_project

pytestmark = pytest.mark.mysql

UTC = dt.timezone.utc


@pytest.fixture
def my(mysql_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {unique_name}")
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {unique_name}")
        connection.close()


def sql(connection: Any, *statements: str, params: Any = None) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


def project(tmp_path: Path, database: str, objects: list[dict[str, Any]], **connection: Any) -> Runner:
    settings = {"host": "127.0.0.1", "port": 3306, "database": database, "user": "root", **connection}
    return Runner(write_project(tmp_path / "p", "mysql", settings, objects))


ENGINES = pytest.mark.parametrize("engine", ["connectorx", "pymysql"])


@ENGINES
def test_every_type_maps_faithfully(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    sql(
        connection,
        f"""CREATE TABLE {db}.all_types (
            id bigint PRIMARY KEY, flag tinyint(1), small smallint, medium mediumint, i int, ui int unsigned,
            ub bigint unsigned, b1 bit(1), b8 bit(8), yr year, amount decimal(12,2), f float, d double,
            v varchar(20), t text, e enum('a','b'), j json, day date, at time(6), dtm datetime(6),
            ts timestamp(6) NULL, raw blob, vb varbinary(8))""",
        f"""INSERT INTO {db}.all_types VALUES (1, 1, -3, 70000, -5, 4294967295, 18446744073709551615, b'1',
            b'101', 2024, 12.34, 1.5, 2.25, 'a\\tb', 'x\\ny', 'b', '{{"k": 1}}', '2024-01-02', '10:11:12.500000',
            '2024-01-01 10:00:00.123456', '2024-01-01 10:00:00', x'0102', x'ff00'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL)""",
    )
    runner = project(tmp_path, db, [{"name": "all_types", "options": {"table": "all_types"}}], engine=engine)
    result = runner.run("all_types")
    assert result.error is None, result.error
    table = runner.writer.load_table("acme", "all_types")
    assert table is not None
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types == {
        "id": "long", "flag": "boolean", "small": "int", "medium": "int", "i": "int", "ui": "long",
        "ub": "decimal(20, 0)", "b1": "boolean", "b8": "long", "yr": "int", "amount": "decimal(12, 2)",
        "f": "float", "d": "double", "v": "string", "t": "string", "e": "string", "j": "string",
        "day": "date", "at": "time", "dtm": "timestamp", "ts": "timestamptz", "raw": "binary", "vb": "binary",
    }  # fmt: skip
    rows = {r["id"]: r for r in runner.rows("all_types")}
    one = rows[1]
    assert one["flag"] is True and one["small"] == -3 and one["medium"] == 70000 and one["i"] == -5
    assert one["ui"] == 4294967295 and one["ub"] == decimal.Decimal("18446744073709551615")
    assert one["b1"] is True and one["b8"] == 5 and one["yr"] == 2024
    assert one["amount"] == decimal.Decimal("12.34") and one["f"] == 1.5 and one["d"] == 2.25
    assert one["v"] == "a\tb" and one["t"] == "x\ny" and one["e"] == "b" and '"k"' in one["j"]
    assert one["day"] == dt.date(2024, 1, 2) and one["at"] == dt.time(10, 11, 12, 500000)
    assert one["dtm"] == dt.datetime(2024, 1, 1, 10, 0, 0, 123456)
    assert one["ts"] == dt.datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    assert one["raw"] == b"\x01\x02" and one["vb"] == b"\xff\x00"
    assert rows[2]["v"] == "" and rows[2]["t"] is None


@ENGINES
def test_out_of_range_time_is_quarantined(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    sql(
        connection,
        f"CREATE TABLE {db}.spans (id bigint PRIMARY KEY, at time)",
        f"INSERT INTO {db}.spans VALUES (1, '10:00:00'), (2, '-10:00:00')",
    )
    runner = project(
        tmp_path, db, [{"name": "spans", "options": {"table": "spans"}, "quality": {"max_rejected_rate": 0.6}}]
    )
    result = runner.run("spans")
    assert result.write is not None and result.write.rows_written == 1 and result.write.rows_rejected == 1
    assert "at: cannot convert '-10:00:00'" in runner.rows("spans__quarantine")[0]["_dativo_reason"]


def test_zero_dates_fail_loudly_with_connectorx_and_are_quarantined_with_pymysql(
    my: tuple[Any, str], tmp_path: Path
) -> None:
    connection, db = my
    sql(
        connection,
        f"CREATE TABLE {db}.legacy (id bigint PRIMARY KEY, at datetime)",
        f"INSERT INTO {db}.legacy VALUES (1, '2024-01-01 00:00:00'), (2, '0000-00-00 00:00:00')",
    )
    objects = [{"name": "legacy", "options": {"table": "legacy"}, "quality": {"max_rejected_rate": 0.6}}]
    fast = project(tmp_path / "fast", db, objects)
    result = fast.run("legacy")
    assert isinstance(result.error, QualityError) and "engine: pymysql" in str(result.error)
    assert fast.writer.load_table("acme", "legacy") is None or not fast.rows("legacy")
    safe = project(tmp_path / "safe", db, objects, engine="pymysql")
    result = safe.run("legacy")
    assert result.write is not None and result.write.rows_written == 1 and result.write.rows_rejected == 1
    assert "at: cannot convert '0000-00-00 00:00:00'" in safe.rows("legacy__quarantine")[0]["_dativo_reason"]


def _orders(connection: Any, db: str, rows: int = 100) -> None:
    sql(
        connection,
        f"CREATE TABLE {db}.orders (id bigint PRIMARY KEY, status varchar(10) NOT NULL, "
        "updated_at datetime(6) NOT NULL)",
    )
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {db}.orders VALUES (%s, 'new', %s)",
            [(i, dt.datetime(2024, 1, 1) + dt.timedelta(hours=i)) for i in range(1, rows + 1)],
        )


@ENGINES
def test_append_and_limit(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    _orders(connection, db)
    runner = project(
        tmp_path,
        db,
        [
            {
                "name": "orders",
                "options": {"table": "orders"},
                "incremental": {"strategy": "append", "cursor_field": "id"},
            }
        ],
    )
    limited = runner.run("orders", limit=30)
    assert limited.write is not None and limited.write.rows_written == 30 and limited.write.cursor.value == 30  # type: ignore[union-attr]
    rest = runner.run("orders")
    assert rest.write is not None and rest.write.rows_written == 70
    assert runner.run("orders").write.rows_written == 0  # type: ignore[union-attr]
    assert sorted(r["id"] for r in runner.rows("orders")) == list(range(1, 101))


def test_updated_with_lookback_and_boundary_rows(my: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = my
    _orders(connection, db)
    runner = project(
        tmp_path,
        db,
        [
            {
                "name": "orders",
                "options": {"table": "orders"},
                "primary_key": ["id"],
                "incremental": {"strategy": "updated", "cursor_field": "updated_at", "lookback_days": 1},
            }
        ],
    )
    first = runner.run("orders")
    assert first.write is not None and first.write.rows_written == 100
    boundary = dt.datetime(2024, 1, 1) + dt.timedelta(hours=100)
    assert not runner.run("orders").write.committed  # type: ignore[union-attr]
    sql(connection, f"INSERT INTO {db}.orders VALUES (101, 'new', %s)", params=(boundary,))
    sql(
        connection,
        f"UPDATE {db}.orders SET status = 'late', updated_at = %s WHERE id = 95",
        params=(boundary - dt.timedelta(hours=3),),
    )
    assert runner.run("orders").write.committed  # type: ignore[union-attr]
    rows = runner.rows("orders")
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == len(by_id) == 101
    assert by_id[95]["status"] == "late" and by_id[101]["status"] == "new"


def test_full_refresh(my: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = my
    _orders(connection, db)
    runner = project(tmp_path, db, [{"name": "orders", "options": {"table": "orders"}}])
    assert runner.run("orders").total_rows == 100
    sql(connection, f"DELETE FROM {db}.orders WHERE id > 40")
    assert runner.run("orders").total_rows == 40


def test_wrong_password_is_auth001_without_the_password(my: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = my
    sql(connection, "CREATE USER IF NOT EXISTS 'dativo_t'@'%' IDENTIFIED BY 'right-pass'")
    try:
        root = write_project(
            tmp_path / "p",
            "mysql",
            {"host": "127.0.0.1", "port": 3306, "database": db, "user": "dativo_t"},
            [{"name": "orders", "options": {"table": "orders"}}],
            credentials={"password": "${MY_TEST_PASSWORD}"},
        )
        runner = Runner(root, environ={"MY_TEST_PASSWORD": "wrong-secret-value"})
        result = runner.run("orders")
        assert isinstance(result.error, AuthError) and not result.error.transient
        assert "wrong-secret-value" not in str(result.error)
    finally:
        sql(connection, "DROP USER IF EXISTS 'dativo_t'@'%'")


def test_missing_table_and_injection_are_cfg001(my: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = my
    _orders(connection, db)
    runner = project(
        tmp_path,
        db,
        [
            {"name": "missing", "options": {"table": "nope"}},
            {"name": "evil", "options": {"table": "orders`; DROP TABLE orders; --"}},
            {"name": "badcol", "options": {"table": "orders", "columns": ["id", "nope"]}},
        ],
    )
    assert isinstance(runner.run("missing").error, ConfigError)
    assert isinstance(runner.run("evil").error, ConfigError)
    badcol = runner.run("badcol")
    assert isinstance(badcol.error, ConfigError) and "'nope'" in str(badcol.error)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {db}.orders")
        assert cursor.fetchone() == (100,)


@ENGINES
def test_connection_killed_mid_stream_is_ext001(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    sql(connection, f"CREATE TABLE {db}.big (id bigint PRIMARY KEY, pad varchar(200))")
    sql(
        connection,
        f"INSERT INTO {db}.big SELECT seq, REPEAT('x', 200) FROM {db}.seq_1_to_200000",  # MariaDB sequence engine
    )
    root = write_project(
        tmp_path / "p",
        "mysql",
        {"host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "engine": engine},
        [{"name": "big", "options": {"table": "big", "batch_rows": 1000}}],
    )
    job = load_plan(root, strict=True).jobs[0]
    source = build_source(job, SecretResolver({}))
    stream = iter(source.read(ReadRequest(obj=job.objects[0])))
    next(stream)

    def kill() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                # the read itself, not the catalog queries that mention the table
                f"SELECT id FROM information_schema.processlist WHERE db = '{db}' "
                "AND info LIKE 'SELECT `id`%FROM `big`%'"
            )
            for (thread_id,) in cursor.fetchall():
                cursor.execute(f"KILL {int(thread_id)}")

    threading.Thread(target=kill).start()
    time.sleep(0.5)
    with pytest.raises(ExtractError) as info:
        for _ in stream:
            pass
    assert info.value.transient


@ENGINES
def test_connection_killed_during_a_run_is_ext001_and_commits_nothing(
    my: tuple[Any, str], tmp_path: Path, engine: str
) -> None:
    connection, db = my
    sql(connection, f"CREATE TABLE {db}.big (id bigint PRIMARY KEY, pad varchar(200))")
    sql(connection, f"INSERT INTO {db}.big SELECT seq, REPEAT('x', 200) FROM {db}.seq_1_to_300000")
    objects = [
        {"name": "big", "options": {"table": "big"}, "incremental": {"strategy": "append", "cursor_field": "id"}}
    ]
    runner = project(tmp_path, db, objects, engine=engine)
    done = threading.Event()

    def kill() -> None:
        killer = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
        try:
            with killer.cursor() as cursor:
                deadline = time.monotonic() + 30
                while not done.is_set() and time.monotonic() < deadline:
                    cursor.execute(
                        # the read itself, not the catalog queries that mention the table (killing one
                        # of those after it finished would leave the read running)
                        "SELECT id FROM information_schema.processlist WHERE db = %s "
                        "AND info LIKE 'SELECT `id`%%FROM `big`%%'",
                        (db,),
                    )
                    ids = [row[0] for row in cursor.fetchall()]
                    for thread_id in ids:
                        cursor.execute(f"KILL {int(thread_id)}")
                    if ids:
                        return
                    time.sleep(0.005)
        finally:
            killer.close()

    thread = threading.Thread(target=kill)
    thread.start()
    try:
        result = runner.run("big")
    finally:
        done.set()
        thread.join()
    assert isinstance(result.error, ExtractError) and result.error.transient, result.error
    table = runner.writer.load_table("acme", "big")
    assert table is None or not table.snapshots()
    retry = runner.run("big")
    assert retry.error is None and retry.total_rows == 300_000


# --------------------------------------------------------------------------- exact values, classified failures


def _f32(value: float) -> float:
    """The value a FLOAT column stores for ``value`` (nearest float32)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


@ENGINES
def test_numbers_arrive_exactly_and_odd_booleans_are_quarantined(
    my: tuple[Any, str], tmp_path: Path, engine: str
) -> None:
    connection, db = my
    sql(
        connection,
        f"""CREATE TABLE {db}.nums (id int PRIMARY KEY, flag tinyint(1), f float, d double, dm decimal(38,10),
            dw decimal(29,0), b64 bit(64), y2 year(2), at time(6), dtm datetime(6), ts timestamp(6) NULL)""",
        f"""INSERT INTO {db}.nums VALUES
            (1, 1, 0.1, 0.1e0 + 0.2e0, 9999999999999999999999999999.9999999999, 99999999999999999999999999999,
             b'1111111111111111111111111111111111111111111111111111111111111111', 69, '23:59:59.999999',
             '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999'),
            (2, 0, 16777217, 5e-324, -1234567890123456789012345678.1234567891, -1, b'0', 70, '12:00:00.000001',
             '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000001'),
            (3, 2, 123456.789, 1.7976931348623157e308, 0, 0, b'1', 99, NULL, NULL, NULL),
            (4, -1, 3.4028234e38, NULL, NULL, NULL, NULL, NULL, '-838:59:58.999999', NULL, NULL),
            (5, NULL, 1e-45, NULL, NULL, NULL, NULL, 0, NULL, NULL, NULL)""",
    )
    runner = project(
        tmp_path,
        db,
        [{"name": "nums", "options": {"table": "nums"}, "primary_key": ["id"], "quality": {"max_rejected_rate": 0.7}}],
        engine=engine,
    )
    result = runner.run("nums")
    assert result.error is None, result.error
    table = runner.writer.load_table("acme", "nums")
    assert table is not None
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types["b64"] == "decimal(20, 0)" and types["y2"] == "int" and types["flag"] == "boolean"
    rows = {r["id"]: r for r in runner.rows("nums")}
    assert rows[1]["flag"] is True and rows[2]["flag"] is False and rows[5]["flag"] is None
    assert [rows[i]["f"] for i in (1, 2, 5)] == [_f32(0.1), 16777216.0, _f32(1e-45)]
    assert rows[1]["d"] == 0.1 + 0.2 and rows[2]["d"] == 5e-324
    assert rows[1]["dm"] == decimal.Decimal("9999999999999999999999999999.9999999999")
    assert rows[2]["dm"] == decimal.Decimal("-1234567890123456789012345678.1234567891")
    assert rows[1]["dw"] == decimal.Decimal("99999999999999999999999999999")
    assert rows[1]["b64"] == decimal.Decimal(2**64 - 1) and rows[2]["b64"] == 0
    assert [rows[i]["y2"] for i in (1, 2, 5)] == [2069, 1970, 2000]
    assert rows[1]["at"] == dt.time(23, 59, 59, 999999) and rows[2]["at"] == dt.time(12, 0, 0, 1)
    assert rows[1]["dtm"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert rows[2]["dtm"] == dt.datetime(1000, 1, 1, 0, 0, 0, 1)
    assert rows[1]["ts"] == dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)
    reasons = {r["_dativo_key"]: r["_dativo_reason"] for r in runner.rows("nums__quarantine")}
    assert reasons.keys() == {"3", "4"}  # 2 and -1 are no booleans; -838:59:58 is no time of day
    assert reasons["3"].startswith("flag: cannot convert '2' to boolean")
    assert reasons["4"].startswith("flag: cannot convert '-1' to boolean")
    assert "at: cannot convert '-838:59:58.999999'" in reasons["4"]


@ENGINES
def test_decimal_beyond_38_digits_is_cfg001_without_a_contract_and_exact_with_one(
    my: tuple[Any, str], tmp_path: Path, engine: str
) -> None:
    connection, db = my
    sql(
        connection,
        f"CREATE TABLE {db}.ledger (id int PRIMARY KEY, amount decimal(65,30))",
        f"""INSERT INTO {db}.ledger VALUES (1, 12.5),
            (2, 12345678901234567890123456789012345.123456789012345678901234567890),
            (3, 0.000000000000000000000000000001)""",
    )
    contract = (
        "name: shop/ledger\nversion: 1\ncolumns:\n  - {name: id, type: int32, required: true}\n"
        "  - {name: amount, type: decimal, precision: 38, scale: 2}\n"
    )
    root = write_project(
        tmp_path / "p",
        "mysql",
        {"host": "127.0.0.1", "port": 3306, "database": db, "user": "root", "engine": engine},
        [
            {"name": "plain", "options": {"table": "ledger"}},
            {"name": "typed", "options": {"table": "ledger"}, "contract": {"name": "shop/ledger", "version": 1},
             "quality": {"max_rejected_rate": 0.7}},
        ],
        contracts={"shop/ledger.v1.yaml": contract},
    )  # fmt: skip
    runner = Runner(root)
    plain = runner.run("plain")
    assert isinstance(plain.error, ConfigError) and not plain.error.transient
    assert "column 'amount' has type decimal(65,30)" in str(plain.error)
    assert runner.writer.load_table("acme", "plain") is None
    typed = runner.run("typed")
    assert typed.error is None, typed.error
    assert [r["amount"] for r in runner.rows("typed")] == [decimal.Decimal("12.50")]
    reasons = sorted(r["_dativo_reason"] for r in runner.rows("typed__quarantine"))
    assert len(reasons) == 2 and all(r.startswith("amount: cannot convert") for r in reasons)


@ENGINES
def test_query_that_writes_is_cfg001(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    _orders(connection, db, rows=10)
    sql(
        connection,
        f"CREATE TABLE {db}.audit (n int)",
        f"""CREATE FUNCTION {db}.bump() RETURNS int MODIFIES SQL DATA
            BEGIN INSERT INTO {db}.audit VALUES (1); RETURN 1; END""",
    )
    with pytest.raises(ConfigError, match="must only read, but it contains a row-locking clause"):
        project(tmp_path / "static", db, [{"name": "q", "options": {"query": "SELECT id FROM orders FOR UPDATE"}}])
    runner = project(
        tmp_path, db, [{"name": "q", "options": {"query": "SELECT id, bump() AS b FROM orders"}}], engine=engine
    )
    result = runner.run("q")
    assert isinstance(result.error, ConfigError) and not result.error.transient
    assert "the query modifies data" in str(result.error) and "1792" in str(result.error)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {db}.audit")
        assert cursor.fetchone() == (0,)


def test_text_that_is_not_utf8_quarantines_its_row_on_the_pymysql_path(
    my: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, db = my
    sql(
        connection,
        f"CREATE TABLE {db}.names (id int PRIMARY KEY, name varchar(20) CHARACTER SET latin1, note text)",
        f"INSERT INTO {db}.names VALUES (1, 'plain', 'a'), (2, x'ff41', 'b'), (3, NULL, 'c')",
    )
    # A session that sends latin1 (a server default, a proxy) delivers bytes that are not UTF-8.
    statements = MySQLSource._session_statements
    monkeypatch.setattr(
        MySQLSource, "_session_statements", lambda self, c: [*statements(self, c), "SET character_set_results = latin1"]
    )
    runner = project(
        tmp_path,
        db,
        [
            {
                "name": "names",
                "options": {"table": "names"},
                "primary_key": ["id"],
                "quality": {"max_rejected_rate": 0.5},
            }
        ],
        engine="pymysql",
    )
    result = runner.run("names")
    assert result.error is None, result.error
    assert sorted(r["id"] for r in runner.rows("names")) == [1, 3]
    (rejected,) = runner.rows("names__quarantine")
    assert rejected["_dativo_key"] == "2" and rejected["_dativo_reason"] == "name: '\\xffA' is not valid UTF-8 (byte 1)"
    # connectorx cannot hand over such a value at all: a permanent QUAL001 pointing at engine: pymysql
    fast = project(tmp_path / "fast", db, [{"name": "names", "options": {"table": "names"}}])
    failed = fast.run("names")
    assert isinstance(failed.error, QualityError) and "engine: pymysql" in str(failed.error)
    table = fast.writer.load_table("acme", "names")
    assert table is None or not table.snapshots()


@ENGINES
def test_server_errors_are_classified_by_code(my: tuple[Any, str], tmp_path: Path, engine: str) -> None:
    connection, db = my
    _orders(connection, db, rows=10)
    user = f"{db}_r"
    sql(connection, f"CREATE USER '{user}'@'%'", f"GRANT SELECT (id) ON {db}.orders TO '{user}'@'%'")
    try:
        runner = project(
            tmp_path,
            db,
            [
                {"name": "syntax", "options": {"query": "SELECT id, FROM orders"}},
                {"name": "column", "options": {"query": "SELECT nope FROM orders"}},
                {"name": "many", "options": {"query": "SELECT id, (SELECT id FROM orders) AS x FROM orders"}},
            ],
            engine=engine,
        )
        syntax = runner.run("syntax")
        assert isinstance(syntax.error, ConfigError) and "1064" in str(syntax.error)
        column = runner.run("column")
        assert isinstance(column.error, ConfigError) and "1054" in str(column.error)
        many = runner.run("many")
        assert isinstance(many.error, QualityError) and "1242" in str(many.error) and not many.error.transient
        denied = project(
            tmp_path / "denied",
            db,
            [{"name": "o", "options": {"query": "SELECT id, status FROM orders"}}],
            engine=engine,
            user=user,
        )
        result = denied.run("o")
        assert isinstance(result.error, AuthError) and "1143" in str(result.error)
    finally:
        sql(connection, f"DROP USER IF EXISTS '{user}'@'%'")
