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
    guard_cursor_column,
    incremental_predicate,
    missing_columns,
    parse_table_name,
)
from dativo_dagster.state import CursorState

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
    assert text == "SELECT `id` FROM (SELECT id FROM orders WHERE id > 5) AS dativo_q"


def test_mysql_bit_and_connectorx_text_columns() -> None:
    assert my.select_expression(my.MyColumn("b", "bit", "bit(8)")) == "CAST(`b` AS UNSIGNED) AS `b`"
    at = my.MyColumn("at", "time", "time(6)")
    assert my.select_expression(at) == "`at`"
    assert my.select_expression(at, for_connectorx=True) == "CAST(`at` AS CHAR) AS `at`"
    wide = my.MyColumn("w", "decimal", "decimal(30,12)", 30, 12)
    assert my.select_expression(wide, for_connectorx=True) == "CAST(`w` AS CHAR) AS `w`"


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


def test_postgres_csv_parse_types_keep_fallible_columns_as_text() -> None:
    assert pg.csv_parse_type(pa.int64()) == pa.int64()
    assert pg.csv_parse_type(pa.bool_()) == pa.bool_()
    for fallible in (pa.date32(), pa.decimal128(12, 2), pa.uuid(), pa.binary(), pa.list_(pa.int32())):
        assert pg.csv_parse_type(fallible) == pa.string()


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
