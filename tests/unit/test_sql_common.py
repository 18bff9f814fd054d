"""Pure helpers of the SQL sources: names, options, predicates, query text and type tables.

Nothing here needs a server. PostgreSQL query text is built with ``psycopg2.sql``, which needs a
live connection to render, so its injection test lives in the integration suite.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from dativo_dagster.config.models import ObjectConfig, Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, QualityError
from dativo_dagster.iceberg.writer import dictionary_columns
from dativo_dagster.sources import mysql as my
from dativo_dagster.sources import postgres as pg
from dativo_dagster.sources.base import ReadRequest
from dativo_dagster.sources.sql_common import (
    SqlObjectOptions,
    best_effort_cast,
    check_identifier,
    check_read_only_query,
    checked_utf8,
    guard_cursor_column,
    incremental_predicate,
    merge_reasons,
    missing_columns,
    parse_table_name,
    query_body,
    with_source_reasons,
)
from dativo_dagster.state import CursorState
from dativo_dagster.types import SOURCE_REASON_COLUMN

UTC = dt.timezone.utc


def plan(options: dict[str, Any], incremental: dict[str, Any] | None = None, **extra: Any) -> ObjectPlan:
    config = ObjectConfig.model_validate(
        {"name": "orders", "options": options, "incremental": incremental or {}, **extra}
    )
    return ObjectPlan(
        tenant="acme",
        job="db",
        source_name="src",
        config=config,
        contract=None,
        options=options,
        primary_key=tuple(config.primary_key or ()),
        namespace="acme",
        table="orders",
        max_rejected_rate=0.05,
    )


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("orders", (None, "orders")),
        ("public.orders", ("public", "orders")),
        ('"my.schema"."my.table"', ("my.schema", "my.table")),
        ('s."a""b"', ("s", 'a"b')),
        ("s.orders`; DROP TABLE x; --", ("s", "orders`; DROP TABLE x; --")),
    ],
)
def test_parse_table_name(text: str, expected: tuple[str | None, str]) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize("text", ["a.b.c", '"unbalanced', "", "s.", "bad\nname", "nul\x00byte", "x" * 129])
def test_parse_table_name_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_table_name(text)


def test_check_identifier_allows_odd_but_printable_names() -> None:
    assert check_identifier('we"ird `name`; --') == 'we"ird `name`; --'
    with pytest.raises(ValueError):
        check_identifier("tab\tname")


def test_mysql_identifier_quoting_doubles_backticks() -> None:
    assert my.quote_identifier("orders") == "`orders`"
    assert my.quote_identifier("a`b") == "`a``b`"
    # however the name is built, the quoted form is one identifier: every backtick inside is doubled
    evil = "x`; DROP TABLE orders; -- "
    quoted = my.quote_identifier(evil)
    assert quoted.startswith("`") and quoted.endswith("`")
    assert "`" not in quoted[1:-1].replace("``", "")


# --------------------------------------------------------------------------- options


def test_options_exactly_one_of_table_or_query() -> None:
    assert SqlObjectOptions.model_validate({"table": "public.orders"}).table == "public.orders"
    assert SqlObjectOptions.model_validate({"query": "select 1"}).query == "select 1"
    for bad in ({}, {"table": "t", "query": "select 1"}):
        with pytest.raises(ValidationError, match="exactly one"):
            SqlObjectOptions.model_validate(bad)


@pytest.mark.parametrize(
    "query", ["select 1; drop table orders", "delete from orders", "update t set a = 1", "  ; select 1"]
)
def test_query_must_be_one_select(query: str) -> None:
    with pytest.raises(ValidationError):
        SqlObjectOptions.model_validate({"query": query})


@pytest.mark.parametrize(
    "query",
    [
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u",
        "WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM i",
        "WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE) SELECT 1",
        "SELECT * INTO new_table FROM t",
        "SELECT id INTO @x FROM t",
        "SELECT * FROM t INTO OUTFILE '/tmp/x'",
        "SELECT * FROM t FOR UPDATE",
        "select * from t for no key update skip locked",
        "SELECT * FROM t FOR SHARE",
        "SELECT * FROM t FOR KEY SHARE",
        "SELECT * FROM t LOCK IN SHARE MODE",
        "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)",
        "SELECT nextval('s')",
        "SELECT pg_catalog.setval('s', 1)",
        "SELECT set_config('x.y', '1', false)",
        "SELECT * FROM dblink('db', 'DELETE FROM t RETURNING 1') AS x(n int)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_terminate_backend(42)",
        "SELECT lo_unlink(1)",
        "SELECT GET_LOCK('x', 1)",
        "SELECT NEXT VALUE FOR s",
        "SELECT 1 FROM t /*!50000 FOR UPDATE */",
        "SELECT 1 FROM t # MySQL comment\n FOR UPDATE",
        "SELECT 1--1\nFROM t FOR UPDATE",
        "SELECT E'it\\'s' AS a FROM t FOR UPDATE",
        "SELECT 'a\\', nextval('s'), '' AS b",  # PostgreSQL: the backslash is text; MySQL: an escape
        "SELECT $$ ' $$ AS a FROM t FOR UPDATE",
        "SELECT /* a /* nested */ b */ 1 FROM t FOR UPDATE",
        "SELECT 1; DELETE FROM t",
        "SELECT 'a;' ; SELECT 2",
        "SELECT 1 FROM t; COPY t TO PROGRAM 'x'",
        "WITH x AS (SELECT 1) SELECT * FROM x CROSS JOIN LATERAL (SELECT pg_advisory_xact_lock(1)) y",
        "SELECT do_thing FROM t; DO $$ BEGIN END $$",
    ],
)
def test_query_that_could_modify_data_or_lock_rows_is_refused(query: str) -> None:
    with pytest.raises(ValidationError, match="must"):
        SqlObjectOptions.model_validate({"query": query})


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("SELECT 'delete me', \"update\" FROM t -- insert here", None),
        ("SELECT a /* drop table t */ FROM t", None),
        ("SELECT id, updated_at, created_at, set_id, t.update, t.set FROM t", None),
        ("SELECT CAST(x AS CHAR CHARACTER SET utf8mb4) FROM t", None),
        ("SELECT substring(a from 1 for 2) FROM t", None),
        ("SELECT 'it''s' AS \"into\" FROM t", None),
        ("SELECT $$delete$$, $tag$ for update $tag$", None),
        ("SELECT replace(a, 'x', 'y') FROM t", None),
        ("SELECT 1 AS update", None),
        ("SELECT `update`, `lock` FROM t", None),
        ("SELECT E'it\\'s delete' FROM t", None),
        ("SELECT a$b FROM t", None),
        ("select 'a;b' from t;", "select 'a;b' from t"),
        ("SELECT 1; -- done", "SELECT 1"),
        ("WITH x AS (SELECT 1) SELECT * FROM x;", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("SELECT 1 -- trailing comment", None),
    ],
)
def test_reading_queries_are_accepted_even_when_they_mention_the_words(query: str, body: str | None) -> None:
    SqlObjectOptions.model_validate({"query": query})
    assert check_read_only_query(query) == (body if body is not None else query)
    # the embedded form ends with a line break: a trailing -- comment cannot swallow what follows
    assert query_body(query).endswith("\n")


def test_query_may_start_with_with_and_end_with_semicolon() -> None:
    SqlObjectOptions.model_validate({"query": "WITH x AS (SELECT 1) SELECT * FROM x;"})


def test_unknown_option_and_bad_column_are_rejected() -> None:
    with pytest.raises(ValidationError):
        SqlObjectOptions.model_validate({"table": "t", "tabel": "x"})
    with pytest.raises(ValidationError):
        SqlObjectOptions.model_validate({"table": "t", "columns": ["ok", "bad\x00"]})


def test_missing_columns_names_the_column() -> None:
    with pytest.raises(ConfigError, match="column 'nope' does not exist"):
        missing_columns(["id", "nope"], ["id", "status"], plan({"table": "t"}))


# --------------------------------------------------------------------------- incremental predicates


def test_full_refresh_has_no_predicate() -> None:
    predicate = incremental_predicate(plan({"table": "t"}), None)
    assert not predicate.active


def test_append_reads_strictly_after_the_id() -> None:
    obj = plan({"table": "t"}, {"strategy": "append", "cursor_field": "id"})
    assert not incremental_predicate(obj, None).active  # first run reads everything
    predicate = incremental_predicate(obj, CursorState(Strategy.APPEND, "id", 41))
    assert (predicate.column, predicate.operator, predicate.value) == ("id", ">", 41)


def test_updated_reads_from_cursor_minus_lookback_inclusive() -> None:
    obj = plan({"table": "t"}, {"strategy": "updated", "cursor_field": "updated_at", "lookback_days": 1})
    cursor = CursorState(Strategy.UPDATED, "updated_at", "2024-01-05T10:00:00.000000+02:00")
    predicate = incremental_predicate(obj, cursor)
    assert predicate.operator == ">="  # rows sharing the boundary value are re-read, then merged
    assert predicate.value == dt.datetime(2024, 1, 4, 8, 0, tzinfo=UTC)


def test_created_without_lookback_is_inclusive_at_the_cursor() -> None:
    obj = plan({"table": "t"}, {"strategy": "created", "cursor_field": "created_at"})
    predicate = incremental_predicate(obj, CursorState(Strategy.CREATED, "created_at", "2024-01-05T00:00:00"))
    assert (predicate.operator, predicate.value) == (">=", dt.datetime(2024, 1, 5))


# --------------------------------------------------------------------------- MySQL query text


def mysql_source() -> my.MySQLSource:
    connection = my.MySQLConnection(database="shop", user="reader")
    return my.MySQLSource(connection, {"password": "pw"}, project_dir=Path("."))


COLUMNS = [my.MyColumn("id", "bigint", "bigint(20)"), my.MyColumn("updated_at", "datetime", "datetime(6)")]


def test_mysql_full_refresh_select() -> None:
    text, params = mysql_source().build_select(plan({"table": "shop.orders"}), COLUMNS, ReadRequest(plan({})))
    assert text == "SELECT `id`, `updated_at` FROM `shop`.`orders`"
    assert params == ()


def test_mysql_updated_select_binds_the_cursor_as_a_parameter() -> None:
    obj = plan({"table": "orders"}, {"strategy": "updated", "cursor_field": "updated_at"}, primary_key=["id"])
    cursor = CursorState(Strategy.UPDATED, "updated_at", "2024-01-05T10:00:00.000000+00:00")
    text, params = mysql_source().build_select(obj, COLUMNS, ReadRequest(obj, cursor=cursor))
    assert text == "SELECT `id`, `updated_at` FROM `orders` WHERE `updated_at` >= %s"
    assert params == (dt.datetime(2024, 1, 5, 10, 0),)  # the session runs in UTC


def test_mysql_append_with_limit_orders_by_the_cursor() -> None:
    obj = plan({"table": "orders"}, {"strategy": "append", "cursor_field": "id"})
    request = ReadRequest(obj, cursor=CursorState(Strategy.APPEND, "id", 7), limit=10)
    text, params = mysql_source().build_select(obj, COLUMNS, request)
    assert text.endswith("WHERE `id` > %s ORDER BY `id` LIMIT 10")
    assert params == (7,)


def test_mysql_injection_in_table_and_column_names_stays_inside_quotes() -> None:
    evil_table = "orders`; DROP TABLE orders; --"
    evil_column = my.MyColumn("x` FROM orders; DROP TABLE orders; -- ", "int", "int(11)")
    obj = plan({"table": evil_table})
    text, _ = mysql_source().build_select(obj, [evil_column], ReadRequest(obj))
    assert text == "SELECT `x`` FROM orders; DROP TABLE orders; -- ` FROM `orders``; DROP TABLE orders; --`"


def test_mysql_query_object_is_a_derived_table() -> None:
    obj = plan({"query": "SELECT id FROM orders WHERE id > 5;"})
    text, _ = mysql_source().build_select(obj, COLUMNS[:1], ReadRequest(obj))
    # a line break before the closing parenthesis: a trailing -- comment cannot swallow it
    assert text == "SELECT `id` FROM (SELECT id FROM orders WHERE id > 5\n) AS dativo_q"


def test_mysql_bit_and_connectorx_text_columns() -> None:
    assert my.select_expression(my.MyColumn("b", "bit", "bit(8)")) == "CAST(`b` AS UNSIGNED) AS `b`"
    at = my.MyColumn("at", "time", "time(6)")
    assert my.select_expression(at) == "`at`"
    assert my.select_expression(at, for_connectorx=True) == "CAST(`at` AS CHAR) AS `at`"
    wide = my.MyColumn("w", "decimal", "decimal(30,12)", 30, 12)
    assert my.select_expression(wide, for_connectorx=True) == "CAST(`w` AS CHAR) AS `w`"
    # connectorx holds 28 digits: decimal(38,10) and decimal(29,0) would fail or panic there
    for precision, scale in ((38, 10), (29, 0)):
        column = my.MyColumn("d", "decimal", f"decimal({precision},{scale})", precision, scale)
        assert my.select_expression(column, for_connectorx=True) == "CAST(`d` AS CHAR) AS `d`"
    fits = my.MyColumn("d", "decimal", "decimal(28,10)", 28, 10)
    assert my.select_expression(fits, for_connectorx=True) == "`d`"


def test_mysql_floats_travel_as_a_double_whose_text_round_trips() -> None:
    for data_type in ("float", "double"):
        column = my.MyColumn("f", data_type, data_type)
        assert my.select_expression(column) == "CAST(`f` AS DOUBLE) AS `f`"  # text protocol
        assert my.select_expression(column, for_connectorx=True) == "`f`"  # binary protocol: exact


def test_mysql_two_digit_years_travel_as_the_year() -> None:
    column = my.MyColumn("y", "year", "year(2)")
    assert my.select_expression(column) == "CAST(`y` + IF(`y` < 70, 2000, 1900) AS UNSIGNED) AS `y`"
    assert my.select_expression(my.MyColumn("y", "year", "year(4)")) == "`y`"


def test_mysql_wide_decimals_and_bit64() -> None:
    wide = my.MyColumn("amount", "decimal", "decimal(65,30)", 65, 30)
    with pytest.raises(ConfigError, match=r"column 'amount' has type decimal\(65,30\)"):
        my.column_arrow_type(wide, "acme/db/t")
    assert my.column_arrow_type(wide, "acme/db/t", contract=True) == pa.string()
    assert my.column_arrow_type(my.MyColumn("b", "bit", "bit(64)"), "l") == pa.decimal128(20, 0)
    assert my.column_arrow_type(my.MyColumn("b", "bit", "bit(63)"), "l") == pa.int64()


def test_mysql_rows_arrive_as_bytes_and_text_is_checked() -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("raw", pa.binary())])
    rows = [(b"1", b"caf\xc3\xa9", b"\xff"), (b"2", b"caf\xe9", b"\x00"), (b"3", None, None)]
    batch = my._to_batch(rows, schema, [False, False, True])
    assert batch.column("id").to_pylist() == [1, 2, 3]
    assert batch.column("name").to_pylist() == ["café", None, None]
    assert batch.column("raw").to_pylist() == [b"\xff", b"\x00", None]
    assert batch.column(SOURCE_REASON_COLUMN).to_pylist() == [
        None,
        "name: 'caf\\xe9' is not valid UTF-8 (byte 4)",
        None,
    ]


def test_mysql_charset_other_than_utf8mb4_is_refused() -> None:
    with pytest.raises(ValidationError):
        my.MySQLConnection(database="shop", user="reader", charset="latin1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- type tables


@pytest.mark.parametrize(
    ("data_type", "column_type", "precision", "scale", "expected"),
    [
        ("tinyint", "tinyint(1)", None, None, pa.bool_()),
        ("tinyint", "tinyint(4)", None, None, pa.int32()),
        ("bit", "bit(1)", None, None, pa.bool_()),
        ("bit", "bit(12)", None, None, pa.int64()),
        ("year", "year(4)", None, None, pa.int32()),
        ("int", "int(10) unsigned", None, None, pa.int64()),
        ("bigint", "bigint(20)", None, None, pa.int64()),
        ("bigint", "bigint(20) unsigned", None, None, pa.decimal128(20, 0)),
        ("decimal", "decimal(12,2)", 12, 2, pa.decimal128(12, 2)),
        ("float", "float", None, None, pa.float32()),
        ("double", "double", None, None, pa.float64()),
        ("varchar", "varchar(20)", None, None, pa.string()),
        ("enum", "enum('a','b')", None, None, pa.string()),
        ("json", "json", None, None, pa.string()),
        ("blob", "blob", None, None, pa.binary()),
        ("date", "date", None, None, pa.date32()),
        ("time", "time(6)", None, None, pa.time64("us")),
        ("datetime", "datetime(6)", None, None, pa.timestamp("us")),
        ("timestamp", "timestamp(6)", None, None, pa.timestamp("us", tz="UTC")),
    ],
)
def test_mysql_type_table(
    data_type: str, column_type: str, precision: int | None, scale: int | None, expected: pa.DataType
) -> None:
    column = my.MyColumn("c", data_type, column_type, precision, scale)
    assert my.column_arrow_type(column, "acme/db/t") == expected


def test_mysql_unknown_type_names_the_column() -> None:
    with pytest.raises(ConfigError, match="column 'shape' has MySQL type 'vector"):
        my.column_arrow_type(my.MyColumn("shape", "vector", "vector(3)"), "acme/db/t")


@pytest.mark.parametrize(
    ("typname", "precision", "scale", "expected"),
    [
        ("int2", None, None, pa.int32()),
        ("int4", None, None, pa.int32()),
        ("int8", None, None, pa.int64()),
        ("numeric", 12, 2, pa.decimal128(12, 2)),
        ("numeric", None, None, pg.UNCONSTRAINED_NUMERIC),
        ("float4", None, None, pa.float32()),
        ("float8", None, None, pa.float64()),
        ("bool", None, None, pa.bool_()),
        ("text", None, None, pa.string()),
        ("bpchar", None, None, pa.string()),
        ("jsonb", None, None, pa.string()),
        ("date", None, None, pa.date32()),
        ("time", None, None, pa.time64("us")),
        ("timestamp", None, None, pa.timestamp("us")),
        ("timestamptz", None, None, pa.timestamp("us", tz="UTC")),
        ("uuid", None, None, pa.uuid()),
        ("bytea", None, None, pa.binary()),
        ("interval", None, None, pa.string()),
    ],
)
def test_postgres_type_table(typname: str, precision: int | None, scale: int | None, expected: pa.DataType) -> None:
    assert pg.column_arrow_type(pg.PgColumn("c", typname, "b", precision, scale), "acme/db/t") == expected


def test_postgres_enums_arrays_and_unknown_types() -> None:
    assert pg.column_arrow_type(pg.PgColumn("m", "mood", "e"), "l") == pa.string()
    assert pg.column_arrow_type(pg.PgColumn("a", "_int4", "b", element="int4"), "l") == pa.list_(pa.int32())
    assert pg.column_arrow_type(pg.PgColumn("a", "_text", "b", element="text"), "l") == pa.list_(pa.string())
    with pytest.raises(ConfigError, match="column 'geom' has PostgreSQL type 'geometry'"):
        pg.column_arrow_type(pg.PgColumn("geom", "geometry", "b"), "l")


def test_postgres_numeric_typmod() -> None:
    assert pg.numeric_typmod(-1) == (None, None)
    assert pg.numeric_typmod(((12 << 16) | 2) + 4) == (12, 2)
    assert pg.numeric_typmod(((1000 << 16) | 1000) + 4) == (1000, 1000)
    # PostgreSQL 15+: the scale is an 11-bit signed field
    assert pg.numeric_typmod(((5 << 16) | (-2 & 0x7FF)) + 4) == (5, -2)
    assert pg.numeric_typmod(((3 << 16) | 5) + 4) == (3, 5)
    assert pg.numeric_typmod(((10 << 16) | (-1000 & 0x7FF)) + 4) == (10, -1000)


@pytest.mark.parametrize(
    ("precision", "scale", "expected"),
    [
        (5, -2, pa.decimal128(7, 0)),  # whole numbers rounded to hundreds: up to 7 digits
        (36, -2, pa.decimal128(38, 0)),
        (3, 5, pa.decimal128(5, 5)),  # fractions below 0.01 with 5 decimals
        (38, 0, pa.decimal128(38, 0)),
        (None, None, pg.UNCONSTRAINED_NUMERIC),
    ],
)
def test_postgres_numeric_maps_to_a_decimal_that_holds_every_value(
    precision: int | None, scale: int | None, expected: pa.DataType
) -> None:
    assert pg.column_arrow_type(pg.PgColumn("n", "numeric", "b", precision, scale), "l") == expected


@pytest.mark.parametrize(("precision", "scale"), [(50, 2), (37, -2), (39, 0)])
def test_postgres_numeric_beyond_38_digits_is_cfg001_or_text_with_a_contract(precision: int, scale: int) -> None:
    column = pg.PgColumn("amount", "numeric", "b", precision, scale)
    with pytest.raises(ConfigError, match=rf"column 'amount' has type numeric\({precision},{scale}\)") as info:
        pg.column_arrow_type(column, "acme/db/t")
    assert "contract" in str(info.value) and "query" in str(info.value)
    assert pg.column_arrow_type(column, "acme/db/t", contract=True) == pa.string()


def test_postgres_result_typmod_rebuilds_what_psycopg2_split() -> None:
    class Described:
        def __init__(self, precision: int, scale: int) -> None:
            self.precision, self.scale = precision, scale

    assert pg.numeric_typmod(pg._result_typmod(Described(65535, 65535))) == (None, None)
    assert pg.numeric_typmod(pg._result_typmod(Described(5, 2046))) == (5, -2)
    assert pg.numeric_typmod(pg._result_typmod(Described(12, 2))) == (12, 2)


def test_postgres_arrays_are_typed_lists_of_exact_elements() -> None:
    assert pg.column_arrow_type(pg.PgColumn("a", "_numeric", "b", element="numeric"), "l") == pa.list_(pa.string())
    assert pg.column_arrow_type(pg.PgColumn("a", "_jsonb", "b", element="jsonb"), "l") == pa.list_(pa.string())
    assert pg.column_arrow_type(pg.PgColumn("a", "_bytea", "b", element="bytea"), "l") == pa.list_(pa.binary())
    assert pg.column_arrow_type(pg.PgColumn("a", "_uuid", "b", element="uuid"), "l") == pa.list_(pa.uuid())
    assert pg.column_arrow_type(pg.PgColumn("a", "_date", "b", element="date"), "l") == pa.list_(pa.date32())
    column = pg.PgColumn("a", "_int4", "b", element="int4")
    assert "array_to_json" in repr(pg.select_expression(column)) and "text[]" in repr(pg.select_expression(column))


def test_postgres_array_conversion_is_exact_and_marks_only_the_odd_rows() -> None:
    texts = pa.array(['["1.10","NaN"]', None, '[["1","2"],["3","4"]]', "[]", '["12345678901234567890.5",null]'])
    lists, reasons = pg._arrays(texts, pa.list_(pa.string()), "n")
    assert lists.to_pylist() == [["1.10", "NaN"], None, None, [], ["12345678901234567890.5", None]]
    assert reasons is not None and reasons[2] is not None and "n: " in reasons[2] and "2-dimensional" in reasons[2]
    assert [r is None for i, r in enumerate(reasons) if i != 2] == [True] * 4

    days = pa.array(['["2024-01-01","infinity"]', '["2024-01-02"]', None, '["-infinity"]', '["2024-01-03",null]'])
    lists, reasons = pg._arrays(days, pa.list_(pa.date32()), "days")
    assert lists.type == pa.list_(pa.date32())
    assert lists.to_pylist() == [None, [dt.date(2024, 1, 2)], None, None, [dt.date(2024, 1, 3), None]]
    assert reasons == [
        "days: element 2 ('infinity') cannot be held by date", None, None,
        "days: element 1 ('-infinity') cannot be held by date", None,
    ]  # fmt: skip

    raw, reasons = pg._arrays(pa.array(['["\\\\x00ff",null,"\\\\x"]']), pa.list_(pa.binary()), "raw")
    assert raw.to_pylist() == [[b"\x00\xff", None, b""]] and reasons is None
    floats, _ = pg._arrays(pa.array(['["0.1","NaN","-Infinity"]']), pa.list_(pa.float32()), "r")
    assert floats.type == pa.list_(pa.float32()) and floats.to_pylist()[0][0] == pa.scalar(0.1, pa.float32()).as_py()


def test_postgres_unparsable_copy_output_is_permanent() -> None:
    error = pg._unparsable(pa.ArrowInvalid("CSV parse error: Expected 3 columns, got 2"), "l")
    assert not error.transient and "Expected 3 columns" in str(error)


@pytest.mark.parametrize(
    ("chunk", "in_quotes", "expected"),
    [
        (b"1,a\n2,b", False, (True, False)),
        (b"xxxxxxxx", False, (False, False)),  # the middle of a long unquoted value
        (b"1,a\n2,b", True, (False, True)),  # newlines inside a quoted value that goes on
        (b'tail"\n3,c\n', True, (True, False)),  # the quoted value closes, then rows end
        (b'1,"a\nb', False, (False, True)),  # the only newline is inside the quoted value
        (b'1,a\n2,"b\nc', False, (True, True)),  # a row ends, the next opens a quoted value
        (b'"a\n""b""\n', False, (False, True)),  # doubled quotes inside: still one open value
        (b'x""y\n', False, (True, False)),
    ],
)
def test_postgres_row_end_detection_follows_csv_quoting(
    chunk: bytes, in_quotes: bool, expected: tuple[bool, bool]
) -> None:
    assert pg._row_end_in(chunk, in_quotes) == expected


def test_postgres_copy_reader_lets_arrow_parse_rows_longer_than_a_block() -> None:
    import io

    import pyarrow.csv as pacsv

    value = 'x,\n"' * 300_000  # 1.2 MB with commas, newlines and quotes (doubled in CSV)
    data = ('1,a\n2,"' + value.replace('"', '""') + '"\n3,c\n' + "4,d\n" * 10).encode()
    block = 1 << 16
    # Arrow alone fails on a row that spans more than two of its blocks
    with pytest.raises(pa.ArrowInvalid, match="straddl"):
        pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=["id", "v"], block_size=block),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
        )
    reader = pg._WholeRowReader(io.BufferedReader(io.BytesIO(data), buffer_size=block))
    table = pacsv.open_csv(
        reader,
        read_options=pacsv.ReadOptions(column_names=["id", "v"], block_size=block),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    ).read_all()
    assert table.column("id").to_pylist() == list(range(1, 5)) + [4] * 9
    assert table.column("v").to_pylist()[1] == value and reader.bytes_read == len(data)


def test_postgres_csv_parse_types_keep_fallible_columns_as_text() -> None:
    assert pg.csv_parse_type(pa.int64()) == pa.int64()
    assert pg.csv_parse_type(pa.bool_()) == pa.bool_()
    for fallible in (pa.date32(), pa.decimal128(12, 2), pa.uuid(), pa.binary(), pa.list_(pa.int32())):
        assert pg.csv_parse_type(fallible) == pa.string()


def test_best_effort_cast_never_reads_a_number_other_than_0_or_1_as_true() -> None:
    assert best_effort_cast(pa.array([0, 1, None], pa.int8()), pa.bool_()).to_pylist() == [False, True, None]
    odd = best_effort_cast(pa.array([0, 1, 2, -1], pa.int8()), pa.bool_())
    assert odd.type == pa.int8()  # left for the enforcer, which quarantines 2 and -1
    assert best_effort_cast(pa.array([0.5], pa.float64()), pa.bool_()).type == pa.float64()
    assert best_effort_cast(pa.array(["1", "0"]), pa.bool_()).to_pylist() == [True, False]
    assert best_effort_cast(pa.array(["2"]), pa.bool_()).type == pa.string()


def test_checked_utf8_marks_only_the_rows_that_are_not_utf8() -> None:
    text, reasons = checked_utf8(pa.array([b"caf\xc3\xa9", None, b"caf\xe9"], pa.binary()), "name")
    assert text.type == pa.string() and text.to_pylist() == ["café", None, None]
    assert reasons == [None, None, "name: 'caf\\xe9' is not valid UTF-8 (byte 4)"]
    clean, none = checked_utf8(pa.array([b"ok"], pa.binary()), "name")
    assert clean.to_pylist() == ["ok"] and none is None


def test_source_reasons_ride_along_only_when_a_row_has_one() -> None:
    plain = with_source_reasons([pa.array([1])], ["id"], merge_reasons(1, None, [None]))
    assert plain.schema.names == ["id"]
    marked = with_source_reasons([pa.array([1, 2])], ["id"], merge_reasons(2, ["a: x", None], ["b: y", None]))
    assert marked.schema.names == ["id", SOURCE_REASON_COLUMN]
    assert marked.column(SOURCE_REASON_COLUMN).to_pylist() == ["a: x; b: y", None]


def test_best_effort_cast_keeps_text_when_a_value_does_not_convert() -> None:
    good = best_effort_cast(pa.array(["2024-01-01", None]), pa.date32())
    assert good.type == pa.date32()
    odd = best_effort_cast(pa.array(["2024-01-01", "infinity"]), pa.date32())
    assert odd.type == pa.string()  # the enforcer converts value by value and quarantines the odd row
    naive_utc = best_effort_cast(pa.array(["2024-01-01 10:00:00"]), pa.timestamp("us", tz="UTC"))
    assert naive_utc.to_pylist() == [dt.datetime(2024, 1, 1, 10, tzinfo=UTC)]


# --------------------------------------------------------------------------- cursor guard


def test_cursor_column_that_stayed_text_fails_loudly() -> None:
    obj = plan({"table": "t"}, {"strategy": "updated", "cursor_field": "at"}, primary_key=["id"])
    schema = pa.schema([("id", pa.int64()), ("at", pa.timestamp("us", tz="UTC"))])
    good = pa.record_batch([pa.array([1]), pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC)])], schema=schema)
    # a value the vectorised cast rejected leaves the column as text; its max would be 'infinity'
    odd = pa.record_batch([pa.array([2, 3]), pa.array(["2024-01-02 00:00:00+00", "infinity"])], names=["id", "at"])
    stream = guard_cursor_column(iter([good, odd]), obj, schema)
    assert next(stream) is good
    with pytest.raises(QualityError, match="cursor column 'at' holds 'infinity'"):
        next(stream)


def test_cursor_guard_passes_full_refresh_through() -> None:
    schema = pa.schema([("at", pa.timestamp("us"))])
    text = pa.record_batch([pa.array(["infinity"])], names=["at"])
    assert list(guard_cursor_column(iter([text]), plan({"table": "t"}), schema)) == [text]


# --------------------------------------------------------------------------- Parquet encodings


def test_dictionary_encoding_only_for_repetitive_columns() -> None:
    rows = 20_000
    data = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "status": pa.array(["paid", "new"] * (rows // 2)),
            "email": pa.array([f"c{i}@example.com" for i in range(rows)]),
            "tags": pa.array([["a"]] * rows, pa.list_(pa.string())),
        }
    )
    assert dictionary_columns(data) == ["status", "tags.list.element"]
    assert dictionary_columns(data.slice(0, 10)) is None  # too few rows to judge: pyarrow's default


@pytest.mark.parametrize(
    "query",
    [
        'SELECT a.pid AS id, "pg_terminate_backend"(a.pid) AS killed FROM pg_stat_activity a',
        "SELECT \"dblink_exec\"('x', 'delete from t')",
        'SELECT "pg_advisory_lock"(1)',
        'SELECT "PG_TERMINATE_BACKEND"(1)',
        "SELECT `GET_LOCK`('x', 1)",
        'SELECT pg_catalog."pg_terminate_backend"(1)',
    ],
)
def test_a_quoted_function_name_is_still_a_call(query: str) -> None:
    from dativo_dagster.sources.sql_common import check_read_only_query

    with pytest.raises(ValueError, match="a call of"):
        check_read_only_query(query)


def test_a_quoted_column_named_like_a_function_is_fine() -> None:
    from dativo_dagster.sources.sql_common import check_read_only_query

    assert check_read_only_query('SELECT "pg_terminate_backend", "nextval" FROM t') == (
        'SELECT "pg_terminate_backend", "nextval" FROM t'
    )
