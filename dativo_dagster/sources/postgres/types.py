"""PostgreSQL types to Arrow: scalar and array columns, numeric typmods, and how each column travels.

:func:`column_arrow_type` maps a discovered :class:`PgColumn` (CFG001 naming a column it cannot
map); :func:`numeric_typmod` and :func:`result_typmod` decode a numeric's precision and scale;
:func:`select_expression` and :func:`csv_parse_type` say how a column is selected into COPY's text
and how Arrow's CSV reader parses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from psycopg2 import sql

from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.sql_common import decimal_type

_INTEGERS = {"int2": pa.int32(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64()}
_FLOATS = {"float4": pa.float32(), "float8": pa.float64()}
_TEXT = {"text", "varchar", "bpchar", "char", "name", "citext", "json", "jsonb", "xml"}
# Types with no Iceberg equivalent, kept as their PostgreSQL text form (documented fallback).
_TEXT_FALLBACK = {
    "interval", "money", "inet", "cidr", "macaddr", "macaddr8", "point", "line", "lseg", "box", "path",
    "polygon", "circle", "tsvector", "tsquery", "bit", "varbit", "int4range", "int8range", "numrange",
    "tsrange", "tstzrange", "daterange", "pg_lsn", "txid_snapshot",
}  # fmt: skip
UNCONSTRAINED_NUMERIC = pa.decimal128(38, 18)
"""``numeric`` without precision: 20 integer and 18 fractional digits; other values (more decimals,
``NaN``, ``Infinity``) are quarantined with the reason, never rounded."""


@dataclass(frozen=True)
class PgColumn:
    """One column as discovered from the catalog."""

    name: str
    typname: str
    typtype: str = "b"
    precision: int | None = None
    scale: int | None = None
    element: str | None = None
    not_null: bool = False


def numeric_typmod(typmod: int) -> tuple[int | None, int | None]:
    """Precision and scale encoded in a numeric column's typmod ((None, None) when unconstrained).

    The typmod is ``((precision << 16) | (scale & 0x7ff)) + 4``. Since PostgreSQL 15 the scale is
    an 11-bit signed field (``numeric(5,-2)`` rounds to hundreds, ``numeric(3,5)`` holds values
    below 0.01); read sign-extended, it is also right for the 0..1000 scales of older servers.
    """
    if typmod < 4:
        return None, None
    value = typmod - 4
    return (value >> 16) & 0xFFFF, ((value & 0x7FF) ^ 0x400) - 0x400


def result_typmod(description: Any) -> int:
    """The typmod of a numeric result column, rebuilt from what psycopg2 decoded of it.

    psycopg2 splits the typmod into ``precision = (typmod - 4) >> 16`` and ``scale = (typmod - 4)
    & 0xffff`` (65535 each when unconstrained); :func:`numeric_typmod` decodes it properly.
    """
    precision, scale = description.precision, description.scale
    if precision is None or scale is None or (precision, scale) == (0xFFFF, 0xFFFF):
        return -1
    return ((precision << 16) | scale) + 4


def numeric_arrow_type(
    precision: int | None, scale: int | None, *, column: str = "?", label: str = "", contract: bool = False
) -> pa.DataType:
    """Arrow type of ``numeric(p, s)``: the smallest decimal that holds every value exactly.

    ``numeric(p,-s)`` holds whole numbers of up to ``p + s`` digits: ``decimal(p+s, 0)``.
    ``numeric(p,s)`` with ``s > p`` holds fractions with ``s`` decimals: ``decimal(s, s)``.

    Raises:
        ConfigError: CFG001 naming the column when more than 38 digits are needed and the object
            has no schema contract (with one, the column is read as text; see
            :func:`~dativo_dagster.sources.sql_common.decimal_type`).
    """
    if precision is None:
        return UNCONSTRAINED_NUMERIC
    scale = scale or 0
    if scale < 0:
        digits, kept = precision - scale, 0
    elif scale > precision:
        digits, kept = scale, scale
    else:
        digits, kept = precision, scale
    return decimal_type(
        digits, kept, column=column, source_type=f"numeric({precision},{scale})", label=label, contract=contract
    )


def scalar_arrow_type(
    typname: str,
    typtype: str,
    precision: int | None,
    scale: int | None,
    *,
    column: str = "?",
    label: str = "",
    contract: bool = False,
) -> pa.DataType | None:
    """Arrow type of a scalar PostgreSQL type, or None when it is unknown."""
    if typtype == "e":
        return pa.string()  # enums
    if typname in _INTEGERS:
        return _INTEGERS[typname]
    if typname in _FLOATS:
        return _FLOATS[typname]
    if typname == "numeric":
        return numeric_arrow_type(precision, scale, column=column, label=label, contract=contract)
    if typname == "bool":
        return pa.bool_()
    if typname in _TEXT or typname in _TEXT_FALLBACK:
        return pa.string()
    if typname == "date":
        return pa.date32()
    if typname == "time":
        return pa.time64("us")
    if typname == "timetz":
        return pa.string()
    if typname == "timestamp":
        return pa.timestamp("us")
    if typname == "timestamptz":
        return pa.timestamp("us", tz="UTC")
    if typname == "uuid":
        return pa.uuid()
    if typname == "bytea":
        return pa.binary()
    return None


# Array elements with a typed Arrow equivalent; every other element (numeric, text, json, jsonb,
# enums, intervals, ...) keeps PostgreSQL's exact text.
_ARRAY_ITEMS: dict[str, pa.DataType] = {
    "int2": pa.int32(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64(), "float4": pa.float32(),
    "float8": pa.float64(), "bool": pa.bool_(), "date": pa.date32(), "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"), "uuid": pa.uuid(),
    "bytea": pa.binary(),
}  # fmt: skip


def array_item_type(element: str) -> pa.DataType:
    """Arrow type of the elements of a PostgreSQL array (string: the element's exact text)."""
    return _ARRAY_ITEMS.get(element, pa.string())


def column_arrow_type(column: PgColumn, label: str, *, contract: bool = False) -> pa.DataType:
    """Arrow type of a column; CFG001 naming the column when the type cannot be mapped.

    Args:
        column: The discovered column.
        label: The object's label, for messages.
        contract: The object has a schema contract (a numeric beyond 38 digits is then read as
            text for the enforcer to convert; without one it is CFG001).
    """
    if column.element is not None:
        return pa.list_(array_item_type(column.element))
    mapped = scalar_arrow_type(
        column.typname, column.typtype, column.precision, column.scale, column=column.name, label=label,
        contract=contract,
    )  # fmt: skip
    if mapped is None:
        raise ConfigError(
            f"{label}: column '{column.name}' has PostgreSQL type '{column.typname}', which dativo cannot map",
            hint="cast it in a 'query' object (e.g. col::text) or leave it out with 'columns'",
        )
    return mapped


def csv_parse_type(arrow_type: pa.DataType) -> pa.DataType:
    """How Arrow's CSV reader should parse a column from COPY's text.

    Integers, floats and booleans always parse; anything that can hold a value Arrow rejects
    (``infinity`` dates, ``NaN`` numerics, arrays, uuids, bytea) is read as text and converted
    afterwards, so one odd value quarantines one row instead of failing a block.
    """
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return arrow_type
    return pa.string()


def select_expression(column: PgColumn) -> sql.Composable:
    """SQL for one selected column.

    Arrays travel as a JSON array of each element's exact text (``array_to_json(col::text[])``):
    quoting and nulls survive, numerics keep every digit, jsonb elements keep PostgreSQL's text,
    bytea elements their hex form, and a multi-dimensional array shows as nested arrays.
    """
    ident = sql.Identifier(column.name)
    if column.element in _OUTPUT_DIFFERS_FROM_TEXT_CAST:
        # Their cast to text is not their printed form (char(n) drops its padding, inet adds /32);
        # array_to_json already prints them as JSON strings of that form.
        return sql.SQL("array_to_json({})::text").format(ident)
    if column.element is not None:
        return sql.SQL("array_to_json({}::text[])::text").format(ident)
    return ident


_OUTPUT_DIFFERS_FROM_TEXT_CAST = frozenset({"bpchar", "inet", "cidr"})
