"""MySQL and MariaDB types to Arrow, result metadata to columns, and how each column is selected.

:func:`column_arrow_type` maps a discovered :class:`MyColumn` (CFG001 naming a column it cannot
map); :func:`column_from_field` describes a query's result column the way information_schema
would; :func:`select_expression` picks the SQL that makes a value arrive exactly on either read
path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.sql_common import decimal_type


@dataclass(frozen=True)
class MyColumn:
    """One column as discovered from information_schema."""

    name: str
    data_type: str  # e.g. 'bigint'
    column_type: str  # e.g. 'bigint(20) unsigned', 'tinyint(1)'
    precision: int | None = None
    scale: int | None = None
    not_null: bool = False


_SIGNED_INTS = {"tinyint": pa.int32(), "smallint": pa.int32(), "mediumint": pa.int32(), "int": pa.int32()}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json"}
_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_TEXT_FALLBACK = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                  "multipolygon", "geometrycollection", "inet4", "inet6", "uuid"}  # fmt: skip


def column_arrow_type(column: MyColumn, label: str, *, contract: bool = False) -> pa.DataType:
    """Arrow type of a MySQL/MariaDB column; CFG001 naming the column when it cannot be mapped.

    Args:
        column: The discovered column.
        label: The object's label, for messages.
        contract: The object has a schema contract (a DECIMAL beyond 38 digits is then read as
            text for the enforcer to convert; without one it is CFG001).
    """
    data_type = column.data_type.lower()
    column_type = column.column_type.lower()
    unsigned = "unsigned" in column_type
    if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
        return pa.bool_()  # values other than 0 and 1 are quarantined, never read as true
    if data_type == "bit":
        width = _bit_width(column_type)
        if width == 1:
            return pa.bool_()
        return pa.int64() if width < 64 else pa.decimal128(20, 0)  # bit(64) exceeds a signed long
    if data_type in _SIGNED_INTS:
        return pa.int64() if unsigned and data_type == "int" else _SIGNED_INTS[data_type]
    if data_type == "bigint":
        return pa.decimal128(20, 0) if unsigned else pa.int64()
    if data_type == "year":
        return pa.int32()
    if data_type == "decimal":
        precision, scale = column.precision or 10, column.scale or 0
        return decimal_type(
            precision, scale, column=column.name, source_type=column.column_type, label=label, contract=contract
        )
    if data_type == "float":
        return pa.float32()
    if data_type == "double":
        return pa.float64()
    if data_type in _TEXT or data_type in _TEXT_FALLBACK:
        return pa.string()
    if data_type in _BINARY:
        return pa.binary()
    if data_type == "date":
        return pa.date32()
    if data_type == "time":
        return pa.time64("us")
    if data_type == "datetime":
        return pa.timestamp("us")
    if data_type == "timestamp":
        return pa.timestamp("us", tz="UTC")  # the session runs in UTC
    raise ConfigError(
        f"{label}: column '{column.name}' has MySQL type '{column.column_type}', which dativo cannot map",
        hint="cast it in a 'query' object or leave it out with 'columns'",
    )


def _bit_width(column_type: str) -> int:
    """n of ``bit(n)`` (``bit`` alone is ``bit(1)``)."""
    match = re.match(r"bit\((\d+)\)", column_type)
    return int(match.group(1)) if match else 1


_FIELD_TYPES = {
    0: "decimal", 246: "decimal", 1: "tinyint", 2: "smallint", 3: "int", 9: "mediumint", 8: "bigint",
    4: "float", 5: "double", 7: "timestamp", 10: "date", 14: "date", 11: "time", 12: "datetime",
    13: "year", 16: "bit", 245: "json", 247: "enum", 248: "set", 15: "varchar", 253: "varchar",
    254: "char", 249: "blob", 250: "blob", 251: "blob", 252: "blob", 255: "geometry", 6: "varchar",
}  # fmt: skip
_BINARY_CHARSET = 63


_UNSIGNED_FLAG = 32


def column_from_field(field: Any) -> MyColumn:
    """Describe a result column (pymysql field metadata) the way information_schema would."""
    data_type = _FIELD_TYPES.get(field.type_code, "varchar")
    unsigned = bool(field.flags & _UNSIGNED_FLAG)
    if data_type in ("varchar", "char", "blob") and field.charsetnr == _BINARY_CHARSET:
        data_type = "varbinary" if data_type != "blob" else "blob"
    elif data_type == "blob":
        data_type = "text"
    column_type = data_type
    precision = scale = None
    if data_type == "tinyint" and field.length == 1:
        column_type = "tinyint(1)"
    elif data_type == "bit":
        column_type = f"bit({field.length})"
    elif data_type == "year" and field.length == 2:
        column_type = "year(2)"
    elif data_type == "decimal":
        scale = field.scale
        precision = field.length - (1 if scale else 0) - (0 if unsigned else 1)
    if unsigned:
        column_type += " unsigned"
    return MyColumn(field.name, data_type, column_type, precision, scale)


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier (embedded backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


# TIME holds durations (negative, over 24 h) that connectorx cannot decode: it travels as text.
_AS_TEXT_FOR_CONNECTORX = {"time"}
# connectorx holds a DECIMAL in a 96-bit decimal (28 digits) rescaled to decimal(38,10): a wider
# one fails or panics there, so it travels as text.
_CONNECTORX_DECIMAL_DIGITS = 28
_CONNECTORX_DECIMAL_SCALE = 10


def select_expression(column: MyColumn, *, for_connectorx: bool = False) -> str:
    """SQL for one selected column, chosen so the value arrives exactly.

    * BIT travels as an unsigned integer, not as raw bytes.
    * ``YEAR(2)`` holds 70..99 for 1970..1999 and 00..69 for 2000..2069: it travels as the year.
    * FLOAT and DOUBLE travel as ``CAST(col AS DOUBLE)`` on the text protocol (pymysql): the
      server prints a FLOAT with 6 significant digits, a double's text round-trips. connectorx
      receives the binary value, which is exact.
    * For connectorx, TIME columns and decimals wider than it holds travel as text: it aborts the
      whole read on a TIME it cannot represent (a negative duration) and holds decimals in 28
      digits rescaled to ``decimal(38,10)``.
    """
    ident = quote_identifier(column.name)
    data_type = column.data_type.lower()
    column_type = column.column_type.lower()
    if data_type == "bit":
        return f"CAST({ident} AS UNSIGNED) AS {ident}"
    if data_type == "year" and column_type.startswith("year(2)"):
        return f"CAST({ident} + IF({ident} < 70, 2000, 1900) AS UNSIGNED) AS {ident}"
    if for_connectorx:
        wide_decimal = data_type == "decimal" and (
            (column.scale or 0) > _CONNECTORX_DECIMAL_SCALE or (column.precision or 10) > _CONNECTORX_DECIMAL_DIGITS
        )
        if data_type in _AS_TEXT_FOR_CONNECTORX or wide_decimal:
            return f"CAST({ident} AS CHAR) AS {ident}"
    elif data_type in ("float", "double"):
        return f"CAST({ident} AS DOUBLE) AS {ident}"
    return ident
