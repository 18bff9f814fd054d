"""Contract types to Arrow (and through Arrow to Iceberg), and Arrow types to their short labels.

:func:`arrow_type` and :func:`contract_arrow_schema` are the one place a contract's column types
become Arrow types; :func:`type_label` names an Arrow type the same way in column-schema metadata,
messages and contracts.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from dativo_dagster.config.models import ColumnContract, ColumnType, SchemaContract

_SCALAR_ARROW: dict[ColumnType, pa.DataType] = {
    ColumnType.INT32: pa.int32(),
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT32: pa.float32(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.STRING: pa.string(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.DATE: pa.date32(),
    ColumnType.TIME: pa.time64("us"),
    ColumnType.TIMESTAMP: pa.timestamp("us"),
    ColumnType.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    ColumnType.BINARY: pa.binary(),
    ColumnType.UUID: pa.uuid(),
    ColumnType.JSON: pa.string(),
}


def arrow_type(column: ColumnContract) -> pa.DataType:
    """Arrow type of a contract column."""
    if column.type is ColumnType.DECIMAL:
        return pa.decimal128(column.precision or 38, column.scale or 0)
    if column.type is ColumnType.LIST:
        assert column.item_type is not None  # guaranteed by the model validator
        return pa.list_(_SCALAR_ARROW[column.item_type])
    return _SCALAR_ARROW[column.type]


def contract_arrow_schema(contract: SchemaContract) -> pa.Schema:
    """Arrow schema of a contract; ``required`` columns are non-nullable (Iceberg ``required``)."""
    return pa.schema(
        [
            pa.field(
                c.name,
                arrow_type(c),
                nullable=not c.required,
                metadata=JSON_FIELD_METADATA if c.type is ColumnType.JSON else None,
            )
            for c in contract.columns
        ],
        metadata={"dativo.contract": f"{contract.name}.v{contract.version}"},
    )


JSON_FIELD_METADATA = {b"dativo.type": b"json"}
"""Marks a string field whose values must be JSON documents (a contract's ``json`` type)."""


def type_label(data_type: pa.DataType) -> str:
    """Short, stable name of an Arrow type for column-schema metadata and messages."""
    if pa.types.is_decimal(data_type):
        return f"decimal({data_type.precision},{data_type.scale})"
    if pa.types.is_timestamp(data_type):
        return "timestamptz" if data_type.tz else "timestamp"
    if isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.uuid":
        return "uuid"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"list<{type_label(data_type.value_type)}>"
    if pa.types.is_large_string(data_type) or pa.types.is_string(data_type):
        return "string"
    if pa.types.is_large_binary(data_type) or pa.types.is_binary(data_type):
        return "binary"
    if pa.types.is_time(data_type):
        return "time"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_boolean(data_type):
        return "boolean"
    return str(data_type)


def is_uuid(data_type: pa.DataType) -> bool:
    """True for Arrow's canonical UUID extension type."""
    return isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.uuid"


def column_schema_metadata(schema: pa.Schema, descriptions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows for ``dagster/column_schema`` (name, type, nullability, description)."""
    descriptions = descriptions or {}
    return [
        {
            "name": f.name,
            "type": type_label(f.type),
            "required": not f.nullable,
            "description": descriptions.get(f.name),
        }
        for f in schema
    ]
