"""Checks that a table schema is one Iceberg (and dativo's own bookkeeping) can hold."""

from __future__ import annotations

import pyarrow as pa

from dativo_dagster.types.mapping import is_uuid
from dativo_dagster.types.system_columns import SYSTEM_PREFIX


def check_table_schema(schema: pa.Schema, label: str) -> None:
    """Refuse a schema Iceberg (or dativo's own bookkeeping) cannot hold, before any table exists.

    Raises:
        ConfigError: CFG001 naming the column: a reserved ``_dativo_`` name, two names that differ
            only by case, a decimal beyond Iceberg's 38 digits or with a negative scale, or a type
            with no Iceberg equivalent.
    """
    from dativo_dagster.errors import ConfigError

    seen: dict[str, str] = {}
    for field in schema:
        name = field.name
        if name.lower().startswith(SYSTEM_PREFIX):
            raise ConfigError(
                f"{label}: column '{name}' uses the reserved prefix '{SYSTEM_PREFIX}' (dativo's own columns)",
                hint="rename it in a 'query' object or map it with source_name in the contract",
            )
        other = seen.get(name.lower())
        if other is not None:
            raise ConfigError(
                f"{label}: columns '{other}' and '{name}' differ only by case, which most Iceberg engines "
                "cannot tell apart",
                hint="rename one of them in a 'query' object or with source_name in the contract",
            )
        seen[name.lower()] = name
        problem = _unsupported(field.type)
        if problem:
            raise ConfigError(f"{label}: column '{name}': {problem}")


def _unsupported(data_type: pa.DataType) -> str | None:
    if pa.types.is_decimal(data_type):
        if data_type.precision > 38:
            return f"decimal({data_type.precision},{data_type.scale}) exceeds Iceberg's 38 digits"
        if data_type.scale < 0:
            return f"decimal with negative scale {data_type.scale} is not an Iceberg type"
        return None
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _unsupported(data_type.value_type)
    if is_uuid(data_type):
        return None
    if isinstance(data_type, pa.BaseExtensionType) or pa.types.is_dictionary(data_type) or pa.types.is_map(data_type):
        return f"type {data_type} has no Iceberg equivalent in dativo"
    if pa.types.is_struct(data_type):
        for child in data_type:
            problem = _unsupported(child.type)
            if problem:
                return problem
        return None
    supported = (
        pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_boolean(data_type)
        or pa.types.is_date(data_type)
        or pa.types.is_time(data_type)
        or pa.types.is_timestamp(data_type)
    )
    if not supported:
        return f"type {data_type} has no Iceberg equivalent"
    if pa.types.is_unsigned_integer(data_type) and data_type.bit_width == 64:
        return "unsigned 64-bit integers do not fit Iceberg's long; map the column to decimal(20,0)"
    return None
