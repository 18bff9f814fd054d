"""The postgres source against the real local PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import AuthError, ConfigError, ExtractError, QualityError
from dativo_dagster.sources.base import ReadRequest
from dativo_dagster.sources.postgres import PostgresSource
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import Runner, write_project

pytestmark = pytest.mark.postgres

UTC = dt.timezone.utc


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


def sql(connection: Any, *statements: str, params: Any = None) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params)


CONNECTION = {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"}


def project(tmp_path: Path, objects: list[dict[str, Any]], **connection: Any) -> Runner:
    return Runner(write_project(tmp_path / "p", "postgres", {**CONNECTION, **connection}, objects))


def test_every_type_maps_faithfully(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TYPE {schema}.mood AS ENUM ('ok', 'sad')",
        f"""CREATE TABLE {schema}.all_types (
            id bigint PRIMARY KEY, i2 smallint, i4 integer, amount numeric(12,2), free numeric, r real,
            d double precision, b boolean, t text, v varchar(10), c char(3), day date, at time,
            ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb, raw bytea, m {schema}.mood,
            ints int[], texts text[], span interval)""",
    )
    sql(
        connection,
        f"""INSERT INTO {schema}.all_types VALUES (1, 7, -8, 12.34, 1.123456789012, 1.5, 2.25, true,
            'a,"b"' || chr(10) || 'c', 'vv', 'usd', '2024-01-02', '10:11:12.5', '2024-01-01 10:00:00.123456',
            '2024-01-01 10:00:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"k": 1}}', '{{"k": [1, 2]}}',
            '\\x0102ff', 'sad', '{{1,2,NULL}}', '{{"x,y",z}}', '1 day 2 hours'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL, NULL, NULL)""",
    )
    runner = project(tmp_path, [{"name": "all_types", "options": {"table": f"{schema}.all_types"}}])
    result = runner.run("all_types")
    assert result.error is None, result.error
    table = runner.writer.load_table("acme", "all_types")
    assert table is not None
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types == {
        "id": "long", "i2": "int", "i4": "int", "amount": "decimal(12, 2)", "free": "decimal(38, 18)",
        "r": "float", "d": "double", "b": "boolean", "t": "string", "v": "string", "c": "string",
        "day": "date", "at": "time", "ts": "timestamp", "tstz": "timestamptz", "u": "uuid", "j": "string",
        "jb": "string", "raw": "binary", "m": "string", "ints": "list<int>", "texts": "list<string>",
        "span": "string",
    }  # fmt: skip
    assert table.schema().find_field("id").required
    rows = {r["id"]: r for r in runner.rows("all_types")}
    one = rows[1]
    assert one["i2"] == 7 and one["i4"] == -8
    assert one["amount"] == decimal.Decimal("12.34")
    assert one["free"] == decimal.Decimal("1.123456789012")
    assert one["r"] == 1.5 and one["d"] == 2.25 and one["b"] is True
    assert one["t"] == 'a,"b"\nc' and one["v"] == "vv" and one["c"] == "usd"
    assert one["day"] == dt.date(2024, 1, 2) and one["at"] == dt.time(10, 11, 12, 500000)
    assert one["ts"] == dt.datetime(2024, 1, 1, 10, 0, 0, 123456)
    assert one["tstz"] == dt.datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
    assert one["u"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    assert one["j"] == '{"k": 1}' and one["jb"] == '{"k": [1, 2]}'
    assert one["raw"] == b"\x01\x02\xff" and one["m"] == "sad"
    assert one["ints"] == [1, 2, None] and one["texts"] == ["x,y", "z"]
    assert one["span"] == "1 day 02:00:00"
    two = rows[2]
    assert two["t"] == "" and all(v is None for k, v in two.items() if k not in ("id", "t"))


def test_unmappable_value_is_quarantined_with_the_column_named(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.odd (id bigint PRIMARY KEY, day date, n numeric)",
        f"INSERT INTO {schema}.odd SELECT i, '2024-01-01', i FROM generate_series(1, 99) i",
        f"INSERT INTO {schema}.odd VALUES (100, 'infinity', 'NaN')",
    )
    runner = project(tmp_path, [{"name": "odd", "options": {"table": f"{schema}.odd"}}])
    result = runner.run("odd")
    assert result.error is None and result.write is not None
    assert result.write.rows_written == 99 and result.write.rows_rejected == 1
    quarantine = runner.rows("odd__quarantine")
    assert "day: cannot convert 'infinity'" in quarantine[0]["_dativo_reason"]
    assert "n: cannot convert 'NaN'" in quarantine[0]["_dativo_reason"]


def _orders(connection: Any, schema: str) -> None:
    sql(
        connection,
        f"""CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, status text NOT NULL,
            updated_at timestamptz NOT NULL)""",
        f"""INSERT INTO {schema}.orders SELECT i, 'new', timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'
            FROM generate_series(1, 100) i""",
    )


def test_append_strategy_loads_each_id_once(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(
        tmp_path,
        [
            {
                "name": "orders",
                "options": {"table": f"{schema}.orders"},
                "incremental": {"strategy": "append", "cursor_field": "id"},
            }
        ],
    )
    assert runner.run("orders").write.rows_written == 100  # type: ignore[union-attr]
    assert runner.run("orders").write.rows_written == 0  # type: ignore[union-attr]
    sql(connection, f"INSERT INTO {schema}.orders VALUES (101, 'new', now()), (102, 'new', now())")
    again = runner.run("orders")
    assert again.write is not None and again.write.rows_written == 2 and again.write.cursor.value == 102  # type: ignore[union-attr]
    ids = [r["id"] for r in runner.rows("orders")]
    assert sorted(ids) == list(range(1, 103))


def test_updated_strategy_boundary_rows_and_lookback(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(
        tmp_path,
        [
            {
                "name": "orders",
                "options": {"table": f"{schema}.orders"},
                "primary_key": ["id"],
                "incremental": {"strategy": "updated", "cursor_field": "updated_at", "lookback_days": 1},
            }
        ],
    )
    first = runner.run("orders")
    assert first.write is not None and first.write.rows_written == 100
    boundary = dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=100)
    assert first.write.cursor is not None and first.write.cursor.value == boundary.isoformat(timespec="microseconds")

    # nothing changed: the lookback window is re-read but nothing is committed
    quiet = runner.run("orders")
    assert quiet.write is not None and not quiet.write.committed

    # a row sharing the boundary timestamp arrives late, and a late update lands inside the lookback
    sql(
        connection,
        f"INSERT INTO {schema}.orders VALUES (101, 'new', %s)",
        params=(boundary,),
    )
    sql(
        connection,
        f"UPDATE {schema}.orders SET status = 'late', updated_at = %s WHERE id = 90",
        params=(boundary - dt.timedelta(hours=2),),
    )
    late = runner.run("orders")
    assert late.write is not None and late.write.committed
    rows = {r["id"]: r for r in runner.rows("orders")}
    assert len(rows) == 101 and len(runner.rows("orders")) == 101
    assert rows[101]["status"] == "new" and rows[90]["status"] == "late"


def test_unorderable_cursor_value_fails_loudly_and_commits_nothing(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    sql(connection, f"INSERT INTO {schema}.orders VALUES (101, 'odd', 'infinity')")
    runner = project(
        tmp_path,
        [
            {
                "name": "orders",
                "options": {"table": f"{schema}.orders"},
                "primary_key": ["id"],
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            }
        ],
    )
    result = runner.run("orders")
    assert isinstance(result.error, QualityError) and "cursor column 'updated_at' holds 'infinity'" in str(result.error)
    table = runner.writer.load_table("acme", "orders")
    assert table is None or not table.snapshots()


def test_full_refresh_replaces_atomically(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(tmp_path, [{"name": "orders", "options": {"table": f"{schema}.orders"}}])
    assert runner.run("orders").write.rows_written == 100  # type: ignore[union-attr]
    sql(connection, f"DELETE FROM {schema}.orders WHERE id > 10")
    second = runner.run("orders")
    assert second.total_rows == 10
    table = runner.writer.load_table("acme", "orders")
    assert table is not None and table.current_snapshot().summary.operation.value == "overwrite"  # type: ignore[union-attr]
    assert len(table.snapshots()) == 2


def test_named_query_and_limit(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(
        tmp_path,
        [
            {
                "name": "recent",
                "options": {"query": f"SELECT id, status, updated_at FROM {schema}.orders WHERE id % 2 = 0"},
                "primary_key": ["id"],
                "incremental": {"strategy": "append", "cursor_field": "id"},
            }
        ],
    )
    limited = runner.run("recent", limit=10)
    assert limited.write is not None and limited.write.rows_written == 10 and limited.write.cursor.value == 20  # type: ignore[union-attr]
    rest = runner.run("recent")
    assert rest.write is not None and rest.write.rows_written == 40
    assert sorted(r["id"] for r in runner.rows("recent")) == list(range(2, 101, 2))


def test_unknown_role_is_auth001(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    root = write_project(
        tmp_path / "p",
        "postgres",
        {**CONNECTION, "user": "no_such_role_dativo"},
        [{"name": "orders", "options": {"table": f"{schema}.orders"}}],
        credentials={"password": "${PG_TEST_PASSWORD}"},
    )
    runner = Runner(root, environ={"PG_TEST_PASSWORD": "hunter2-secret"})
    result = runner.run("orders")
    assert isinstance(result.error, AuthError) and not result.error.transient
    assert "hunter2-secret" not in str(result.error)


def test_missing_table_and_column_are_cfg001(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(
        tmp_path,
        [
            {"name": "missing", "options": {"table": f"{schema}.nope"}},
            {"name": "badcol", "options": {"table": f"{schema}.orders", "columns": ["id", "nope"]}},
        ],
    )
    missing = runner.run("missing")
    assert isinstance(missing.error, ConfigError) and f"{schema}.nope" in str(missing.error)
    badcol = runner.run("badcol")
    assert isinstance(badcol.error, ConfigError) and "'nope'" in str(badcol.error)


def test_injection_in_names_is_inert(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    evil = f'{schema}."orders; DROP TABLE {schema}.orders; --"'
    runner = project(tmp_path, [{"name": "evil", "options": {"table": evil}}])
    result = runner.run("evil")
    assert isinstance(result.error, ConfigError)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {schema}.orders")
        assert cursor.fetchone() == (100,)


def test_statement_timeout_is_transient_and_commits_nothing(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    runner = project(
        tmp_path,
        [{"name": "slow", "options": {"query": f"SELECT id, pg_sleep(0.05)::text AS z FROM {schema}.orders"}}],
        statement_timeout_s=1,
    )
    result = runner.run("slow")
    assert isinstance(result.error, ExtractError) and result.error.transient
    assert runner.writer.load_table("acme", "slow") is None or not runner.writer.load_table("acme", "slow").snapshots()  # type: ignore[union-attr]


def _terminate_when_streaming(application_name: str, done: threading.Event) -> threading.Thread:
    """Terminate the backend of ``application_name`` from another session once its COPY runs."""

    def kill() -> None:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                deadline = time.monotonic() + 30
                while not done.is_set() and time.monotonic() < deadline:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s AND query LIKE 'COPY%%' AND state = 'active'",
                        (application_name,),
                    )
                    if cursor.fetchall():
                        return
                    time.sleep(0.005)
        finally:
            admin.close()

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_connection_dropped_mid_stream_is_ext001_and_commits_nothing(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.big (id bigint PRIMARY KEY, pad text)",
        f"INSERT INTO {schema}.big SELECT i, repeat('x', 200) FROM generate_series(1, 400000) i",
    )
    objects = [
        {
            "name": "big",
            "options": {"table": f"{schema}.big"},
            "incremental": {"strategy": "append", "cursor_field": "id"},
        }
    ]
    runner = project(tmp_path, objects, application_name=f"dativo_drop_{schema}")
    done = threading.Event()
    killer = _terminate_when_streaming(f"dativo_drop_{schema}", done)
    try:
        result = runner.run("big")
    finally:
        done.set()
        killer.join()
    assert isinstance(result.error, ExtractError) and result.error.transient, result.error
    table = runner.writer.load_table("acme", "big")
    assert table is None or not table.snapshots()
    # the retry reads from the committed cursor (none): every row exactly once
    retry = runner.run("big")
    assert retry.error is None and retry.write is not None and retry.write.rows_written == 400_000
    assert retry.total_rows == 400_000


def test_connection_dropped_while_consuming_is_ext001(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.big (id bigint PRIMARY KEY, pad text)",
        f"INSERT INTO {schema}.big SELECT i, repeat('x', 200) FROM generate_series(1, 400000) i",
    )
    root = write_project(
        tmp_path / "p",
        "postgres",
        {**CONNECTION, "application_name": f"dativo_drop_{schema}"},
        [{"name": "big", "options": {"table": f"{schema}.big", "batch_rows": 1000}}],
    )
    job = load_plan(root, strict=True).jobs[0]
    source = build_source(job, SecretResolver({}))
    extraction = source.read(ReadRequest(obj=job.objects[0]))
    stream = iter(extraction)
    next(stream)  # the COPY is running and the consumer holds a batch
    done = threading.Event()
    killer = _terminate_when_streaming(f"dativo_drop_{schema}", done)
    killer.join()
    with pytest.raises(ExtractError) as info:
        for _ in stream:
            pass
    assert info.value.transient


def test_views_and_hostile_column_names(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    hostile = 'x"; DROP TABLE orders; --'
    sql(
        connection,
        f'ALTER TABLE {schema}.orders ADD COLUMN "{hostile.replace(chr(34), chr(34) * 2)}" int DEFAULT 7',
        f"CREATE VIEW {schema}.open_orders AS SELECT * FROM {schema}.orders WHERE id <= 10",
    )
    runner = project(
        tmp_path,
        [
            {"name": "open_orders", "options": {"table": f"{schema}.open_orders"}},
            {"name": "picked", "options": {"table": f"{schema}.orders", "columns": ["id", hostile]}},
            {"name": "evil_col", "options": {"table": f"{schema}.orders", "columns": ["id", "id; DROP TABLE x"]}},
        ],
    )
    view = runner.run("open_orders")
    assert view.error is None and view.total_rows == 10
    picked = runner.run("picked")
    assert picked.error is None, picked.error
    assert {r[hostile] for r in runner.rows("picked")} == {7}
    evil = runner.run("evil_col")
    assert isinstance(evil.error, ConfigError) and "'id; DROP TABLE x'" in str(evil.error)
    # the COPY text quotes the hostile name as one identifier
    job = load_plan(runner.root, strict=True).jobs[0]
    with build_source(job, SecretResolver({})) as source:
        assert isinstance(source, PostgresSource)
        obj = job.object("picked")
        conn = source.connect()
        try:
            columns = source._discover(conn, obj)
            text = source.build_copy(conn, obj, columns, ReadRequest(obj))
        finally:
            conn.close()
    assert text == (
        f'COPY (SELECT "id", "x""; DROP TABLE orders; --" FROM "{schema}"."orders") TO STDOUT WITH (FORMAT csv)'
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {schema}.orders")
        assert cursor.fetchone() == (100,)


def test_postgres_job_through_dagster(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    root = write_project(
        tmp_path / "p",
        "postgres",
        CONNECTION,
        [
            {
                "name": "orders",
                "options": {"table": f"{schema}.orders"},
                "incremental": {"strategy": "append", "cursor_field": "id"},
            }
        ],
    )
    defs = build_definitions(load_plan(root, strict=True))
    result = dg.materialize(
        assets=list(defs.assets or []), resources=defs.resources, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["dagster/row_count"].value == 100
    assert event.event_specific_data.materialization.asset_key == dg.AssetKey(["acme", "postgres", "orders"])
    columns = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert columns == {"id": "int64", "status": "string", "updated_at": "timestamptz"}


# --------------------------------------------------------------------------- exact values, classified failures


def test_arrays_keep_every_element_exact_and_quarantine_only_the_odd_rows(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"""CREATE TABLE {schema}.arrays (id int PRIMARY KEY, n numeric[], jb jsonb[], j json[], raw bytea[],
            flags bool[], small int2[], big int8[], r float4[], d float8[], days date[], at time[], ts timestamp[],
            tstz timestamptz[], ids uuid[], texts text[], codes char(3)[], hosts inet[])""",
        f"""INSERT INTO {schema}.arrays VALUES
            (1, '{{1.10,123456789012345678901234567890.123456789,NaN}}',
             ARRAY['{{"a": 1.000000000000000001, "b": [1, 2]}}'::jsonb, NULL], ARRAY['{{"a":  1}}'::json],
             ARRAY['\\x00ff'::bytea, NULL, ''::bytea], '{{t,f,NULL}}', '{{1,-32768}}', '{{9223372036854775807}}',
             '{{0.1,NaN,Infinity}}', '{{0.1,1e308,-Infinity}}', '{{2024-01-02,NULL}}', '{{10:11:12.5}}',
             '{{"2024-01-01 10:00:00.123456"}}', '{{"2024-01-01 10:00:00+02"}}',
             '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}', '{{"a,\\"b","NULL",NULL,""}}', '{{"a",usd}}',
             '{{10.0.0.1,10.0.0.0/8}}'),
            (2, '{{{{1,2}},{{3,4}}}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             '{{}}', NULL, NULL),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{{2024-01-01,infinity}}', NULL, NULL, NULL,
             NULL, NULL, NULL, NULL),
            (4, '{{2.5}}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{{2024-01-03}}', NULL, NULL, NULL, NULL,
             NULL, NULL, NULL)""",
    )
    runner = project(
        tmp_path,
        [{"name": "arrays", "options": {"table": f"{schema}.arrays"}, "primary_key": ["id"],
          "quality": {"max_rejected_rate": 0.5}}],
    )  # fmt: skip
    result = runner.run("arrays")
    assert result.error is None, result.error
    assert result.write is not None and result.write.rows_written == 2 and result.write.rows_rejected == 2
    table = runner.writer.load_table("acme", "arrays")
    assert table is not None
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert types == {
        "id": "int", "n": "list<string>", "jb": "list<string>", "j": "list<string>", "raw": "list<binary>",
        "flags": "list<boolean>", "small": "list<int>", "big": "list<long>", "r": "list<float>", "d": "list<double>",
        "days": "list<date>", "at": "list<time>", "ts": "list<timestamp>", "tstz": "list<timestamptz>",
        "ids": "list<uuid>", "texts": "list<string>", "codes": "list<string>", "hosts": "list<string>",
    }  # fmt: skip
    rows = {r["id"]: r for r in runner.rows("arrays")}
    one = rows[1]
    assert one["n"] == ["1.10", "123456789012345678901234567890.123456789", "NaN"]
    assert one["jb"] == ['{"a": 1.000000000000000001, "b": [1, 2]}', None] and one["j"] == ['{"a":  1}']
    assert one["raw"] == [b"\x00\xff", None, b""]
    assert one["flags"] == [True, False, None] and one["small"] == [1, -32768] and one["big"] == [2**63 - 1]
    assert one["r"][0] == struct.unpack("f", struct.pack("f", 0.1))[0] and math.isnan(one["r"][1])
    assert one["r"][2] == math.inf and one["d"] == [0.1, 1e308, -math.inf]
    assert one["days"] == [dt.date(2024, 1, 2), None] and one["at"] == [dt.time(10, 11, 12, 500000)]
    assert one["ts"] == [dt.datetime(2024, 1, 1, 10, 0, 0, 123456)]
    assert one["tstz"] == [dt.datetime(2024, 1, 1, 8, 0, tzinfo=UTC)]
    assert one["ids"] == [uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]
    assert one["texts"] == ['a,"b', "NULL", None, ""]
    assert one["codes"] == ["a  ", "usd"] and one["hosts"] == ["10.0.0.1", "10.0.0.0/8"]  # as PostgreSQL prints them
    assert rows[4]["n"] == ["2.5"] and rows[4]["days"] == [dt.date(2024, 1, 3)]
    reasons = {r["_dativo_key"]: r["_dativo_reason"] for r in runner.rows("arrays__quarantine")}
    assert reasons.keys() == {"2", "3"}
    assert "n: " in reasons["2"] and "2-dimensional array" in reasons["2"]
    assert reasons["3"] == "days: element 2 ('infinity') cannot be held by date"


def test_numeric_precision_and_scale_map_exactly_or_are_cfg001(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"""CREATE TABLE {schema}.nums (id int PRIMARY KEY, hundreds numeric(5,-2), tiny numeric(3,5),
            wide numeric(50,2))""",
        f"""INSERT INTO {schema}.nums VALUES (1, 1234567, 0.00123, 12.34),
            (2, -9999900, -0.00999, 123456789012345678901234567890123456789012.5)""",
    )
    contract = (
        "name: shop/nums\nversion: 1\ncolumns:\n  - {name: id, type: int32, required: true}\n"
        "  - {name: wide, type: decimal, precision: 38, scale: 2}\n"
    )
    runner = Runner(
        write_project(
            tmp_path / "p",
            "postgres",
            CONNECTION,
            [
                {"name": "scales", "options": {"table": f"{schema}.nums", "columns": ["id", "hundreds", "tiny"]}},
                {"name": "wide", "options": {"table": f"{schema}.nums"}},
                {"name": "wide_contract", "options": {"table": f"{schema}.nums"},
                 "contract": {"name": "shop/nums", "version": 1}, "quality": {"max_rejected_rate": 0.5}},
            ],
            contracts={"shop/nums.v1.yaml": contract},
        )
    )  # fmt: skip
    scales = runner.run("scales")
    assert scales.error is None, scales.error
    table = runner.writer.load_table("acme", "scales")
    assert table is not None
    assert {f.name: str(f.field_type) for f in table.schema().fields} == {
        "id": "int", "hundreds": "decimal(7, 0)", "tiny": "decimal(5, 5)",
    }  # fmt: skip
    rows = {r["id"]: r for r in runner.rows("scales")}
    assert rows[1]["hundreds"] == decimal.Decimal(1234600) and rows[2]["hundreds"] == decimal.Decimal(-9999900)
    assert rows[1]["tiny"] == decimal.Decimal("0.00123") and rows[2]["tiny"] == decimal.Decimal("-0.00999")

    wide = runner.run("wide")
    assert isinstance(wide.error, ConfigError) and not wide.error.transient
    assert "column 'wide' has type numeric(50,2)" in str(wide.error) and "contract" in str(wide.error)
    assert runner.writer.load_table("acme", "wide") is None  # refused before any table exists

    with_contract = runner.run("wide_contract")
    assert with_contract.error is None, with_contract.error
    assert with_contract.write is not None and with_contract.write.rows_rejected == 1
    assert [r["wide"] for r in runner.rows("wide_contract")] == [decimal.Decimal("12.34")]
    (rejected,) = runner.rows("wide_contract__quarantine")
    assert rejected["wide"] == "123456789012345678901234567890123456789012.50" and "wide:" in rejected["_dativo_reason"]


def test_query_that_writes_is_cfg001_before_and_while_reading(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    sql(
        connection,
        f"CREATE TABLE {schema}.audit (n int)",
        f"""CREATE FUNCTION {schema}.bump() RETURNS int LANGUAGE sql
            AS 'INSERT INTO {schema}.audit VALUES (1) RETURNING n'""",
    )
    # refused at config load, before anything runs
    with pytest.raises(ConfigError, match="must only read, but it contains DELETE"):
        project(tmp_path / "static", [{"name": "d", "options": {
            "query": f"WITH d AS (DELETE FROM {schema}.orders RETURNING *) SELECT * FROM d"}}])  # fmt: skip
    # a function that writes is only visible to the server: the READ ONLY transaction refuses it
    runner = project(
        tmp_path, [{"name": "q", "options": {"query": f"SELECT id, {schema}.bump() AS b FROM {schema}.orders"}}]
    )
    result = runner.run("q")
    assert isinstance(result.error, ConfigError) and not result.error.transient
    assert "the query modifies data" in str(result.error) and "25006" in str(result.error)
    # discovery (the query's LIMIT 0) runs on a READ ONLY connection too
    job = load_plan(runner.root, strict=True).jobs[0]
    with build_source(job, SecretResolver({})) as source:
        assert isinstance(source, PostgresSource)
        with source._connection("l") as conn, conn.cursor() as cur:
            cur.execute("SHOW transaction_read_only")
            assert cur.fetchone() == ("on",)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT (SELECT count(*) FROM {schema}.orders), (SELECT count(*) FROM {schema}.audit)")
        assert cursor.fetchone() == (100, 0)


def test_invalid_utf8_in_a_sql_ascii_database_quarantines_only_its_rows(
    postgres_server: dict[str, object], unique_name: str, tmp_path: Path
) -> None:
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    database = f"{unique_name}_ascii"
    sql(admin, f"CREATE DATABASE {database} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        legacy = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database)
        legacy.autocommit = True
        sql(
            legacy,
            "CREATE TABLE notes (id int PRIMARY KEY, body text, tags text[], n int)",
            "INSERT INTO notes VALUES (1, E'caf\\xe9', ARRAY['ok'], 1), (2, 'plain', ARRAY[E'x\\xff'], 2),"
            " (3, E'\\xc3\\xa9t\\xc3\\xa9', NULL, 3)",
        )
        legacy.close()
        runner = project(
            tmp_path,
            [{"name": "notes", "options": {"table": "public.notes"}, "primary_key": ["id"],
              "quality": {"max_rejected_rate": 0.7}}],
            database=database,
        )  # fmt: skip
        result = runner.run("notes")
        assert result.error is None, result.error
        assert result.write is not None and result.write.rows_written == 1 and result.write.rows_rejected == 2
        assert runner.rows("notes") == [{"id": 3, "body": "été", "tags": None, "n": 3}]
        reasons = {r["_dativo_key"]: r["_dativo_reason"] for r in runner.rows("notes__quarantine")}
        assert reasons["1"] == "body: 'caf\\xe9' is not valid UTF-8 (byte 4)"
        assert reasons["2"].startswith("tags: ") and "not valid UTF-8" in reasons["2"]
    finally:
        sql(admin, f"DROP DATABASE IF EXISTS {database}")
        admin.close()


def test_server_errors_are_classified_by_sqlstate(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    _orders(connection, schema)
    role = f"{schema}_reader"
    sql(connection, f"CREATE ROLE {role} LOGIN")
    try:
        runner = project(
            tmp_path,
            [
                {"name": "syntax", "options": {"query": f"SELECT id, FROM {schema}.orders"}},
                {"name": "data", "options": {"query": f"SELECT id, 1 / (id - 50) AS x FROM {schema}.orders"}},
                {"name": "cast", "options": {"query": f"SELECT id, status::int AS s FROM {schema}.orders"}},
            ],
        )
        syntax = runner.run("syntax")
        assert isinstance(syntax.error, ConfigError) and "42601" in str(syntax.error)
        data = runner.run("data")
        assert isinstance(data.error, QualityError) and "22012" in str(data.error) and not data.error.transient
        cast = runner.run("cast")
        assert isinstance(cast.error, QualityError) and "22P02" in str(cast.error)
        denied = project(tmp_path / "denied", [{"name": "orders", "options": {"table": f"{schema}.orders"}}], user=role)
        result = denied.run("orders")
        assert isinstance(result.error, AuthError) and "42501" in str(result.error)
        missing = project(tmp_path / "nodb", [{"name": "o", "options": {"table": "o"}}], database=f"{schema}_nope")
        result = missing.run("o")
        assert isinstance(result.error, ConfigError) and "does not exist" in str(result.error)
    finally:
        sql(connection, f"DROP ROLE IF EXISTS {role}")


def test_values_larger_than_a_parse_block_load_exactly(pg: tuple[Any, str], tmp_path: Path) -> None:
    connection, schema = pg
    sql(
        connection,
        f"CREATE TABLE {schema}.docs (id int PRIMARY KEY, body text, doc jsonb, raw bytea)",
        f"""INSERT INTO {schema}.docs SELECT i, 'note ' || i || E',\\n"quoted"', NULL, NULL
            FROM generate_series(1, 5000) i""",
        f"""INSERT INTO {schema}.docs VALUES
            (5001, repeat(E'line "a",\\n', 300000), NULL, NULL),
            (5002, NULL, (SELECT jsonb_agg(g) FROM generate_series(1, 400000) g), NULL),
            (5003, NULL, NULL, convert_to(repeat('x', 2000000), 'UTF8'))""",
    )
    runner = project(tmp_path, [{"name": "docs", "options": {"table": f"{schema}.docs"}}])
    result = runner.run("docs")
    assert result.error is None, result.error
    rows = {r["id"]: r for r in runner.rows("docs")}
    assert len(rows) == 5003 and rows[7]["body"] == 'note 7,\n"quoted"'
    assert rows[5001]["body"] == 'line "a",\n' * 300000
    assert rows[5002]["doc"] == "[" + ", ".join(str(i) for i in range(1, 400001)) + "]"
    assert rows[5003]["raw"] == b"x" * 2000000
