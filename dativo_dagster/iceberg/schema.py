"""Schema evolution as a pure differ plus an updater (the dagster-iceberg shape).

Only changes that keep every existing reader and row valid are applied automatically: a new
nullable column, integer/float/decimal widening, relaxing ``required`` to optional. Anything else
is an incompatible change and fails with a CFG001 that names the column and both types.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import cast

import pyarrow as pa
from pyiceberg.table.update.schema import UpdateSchema
from pyiceberg.types import IcebergType

from dativo_dagster.errors import ConfigError
from dativo_dagster.types import type_label


class ChangeKind(str, enum.Enum):
    """Kinds of automatic schema change."""

    ADD_COLUMN = "add_column"
    WIDEN = "widen"
    MAKE_OPTIONAL = "make_optional"


@dataclass(frozen=True)
class SchemaChange:
    """One automatic change to a table's schema."""

    kind: ChangeKind
    column: str
    field: pa.Field | None = None
    detail: str = ""


_WIDENINGS = {("int32", "int64"), ("float", "double")}  # type_label uses Arrow names


def _is_widening(current: pa.DataType, desired: pa.DataType) -> bool:
    if (type_label(current), type_label(desired)) in _WIDENINGS:
        return True
    if pa.types.is_decimal(current) and pa.types.is_decimal(desired):
        return desired.scale == current.scale and desired.precision > current.precision
    return False


def plan_schema_changes(current: pa.Schema, desired: pa.Schema, *, table: str) -> list[SchemaChange]:
    """Diff the table's schema against the one this run writes.

    Args:
        current: The table's schema (as Arrow).
        desired: The schema of the batches this run will write.
        table: ``namespace.table`` for messages.

    Raises:
        ConfigError: CFG001 for a change that cannot be applied without breaking data.
    """
    changes: list[SchemaChange] = []
    current_fields = {f.name: f for f in current}
    desired_names = set(desired.names)
    for field in desired:
        existing = current_fields.get(field.name)
        if existing is None:
            if not field.nullable:
                raise ConfigError(
                    f"table {table}: new column '{field.name}' is required, but existing rows have no value for it",
                    hint="add it as required: false, backfill, then tighten the contract",
                )
            changes.append(SchemaChange(ChangeKind.ADD_COLUMN, field.name, field, type_label(field.type)))
            continue
        current_label, desired_label = type_label(existing.type), type_label(field.type)
        if current_label != desired_label:
            if not _is_widening(existing.type, field.type):
                raise ConfigError(
                    f"table {table}: column '{field.name}' changes type {current_label} -> {desired_label}, "
                    "which is not a safe widening",
                    hint="write to a new table or contract version, or migrate the column by hand",
                )
            changes.append(SchemaChange(ChangeKind.WIDEN, field.name, field, f"{current_label} -> {desired_label}"))
        if field.nullable and not existing.nullable:
            changes.append(SchemaChange(ChangeKind.MAKE_OPTIONAL, field.name, detail="required -> optional"))
    for name, existing in current_fields.items():
        if name not in desired_names and not existing.nullable:
            # The run will not provide this column any more; it must accept nulls from now on.
            changes.append(SchemaChange(ChangeKind.MAKE_OPTIONAL, name, detail="dropped from contract"))
    return changes


def apply_schema_changes(update: UpdateSchema, changes: list[SchemaChange]) -> None:
    """Apply planned changes to a pyiceberg ``UpdateSchema`` (inside the write transaction)."""
    from dativo_dagster.compat.pyiceberg import iceberg_type_of

    for change in changes:
        if change.kind is ChangeKind.ADD_COLUMN:
            assert change.field is not None
            iceberg_type = cast(IcebergType, iceberg_type_of(change.field.type))
            update.add_column(change.column, iceberg_type, required=False)
        elif change.kind is ChangeKind.WIDEN:
            assert change.field is not None
            iceberg_type = cast(IcebergType, iceberg_type_of(change.field.type))
            update.update_column(change.column, field_type=iceberg_type)
        else:
            update.make_column_optional(change.column)
