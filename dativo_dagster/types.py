"""One place that maps contract types to Arrow (and through Arrow to Iceberg) and enforces them.

:class:`ContractEnforcer` takes whatever a source produced (strings from a CSV, typed columns from
a database) and returns the rows that conform, cast to the contract's Arrow schema, plus the rows
that do not, each with a reason. Casting is vectorised; only a column whose vectorised cast fails
falls back to per-value conversion, so clean data never pays for dirty data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import ColumnContract, ColumnType, SchemaContract

REASON_COLUMN = "_dativo_reason"
RUN_ID_COLUMN = "_dativo_run_id"
REJECTED_AT_COLUMN = "_dativo_rejected_at"

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
        [pa.field(c.name, arrow_type(c), nullable=not c.required) for c in contract.columns],
        metadata={"dativo.contract": f"{contract.name}.v{contract.version}"},
    )


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


# --------------------------------------------------------------------------- per-value converters


def _parse_timestamp(text: str, *, aware: bool) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if aware:
        # A CSV timestamp with no offset headed for a timestamptz column is read as UTC (documented).
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if value.tzinfo is not None:
        raise ValueError("has a zone offset but the column is a timestamp without time zone")
    return value


def _python_converter(target: pa.DataType) -> Callable[[Any], Any]:
    """A converter for one value, used only where the vectorised cast failed."""

    def from_text(value: Any, parse: Callable[[str], Any]) -> Any:
        return parse(value) if isinstance(value, str) else value

    if pa.types.is_timestamp(target):
        aware = target.tz is not None
        return lambda v: from_text(v, lambda s: _parse_timestamp(s, aware=aware))
    if pa.types.is_time(target):
        return lambda v: from_text(v, lambda s: dt.time.fromisoformat(s.strip()))
    if pa.types.is_date(target):
        return lambda v: from_text(v, lambda s: dt.date.fromisoformat(s.strip()))
    if pa.types.is_decimal(target):
        scale = target.scale

        def to_decimal(v: Any) -> Any:
            d = decimal.Decimal(str(v).strip())
            if not d.is_finite():
                raise ValueError("is not a finite number")
            if d.as_tuple().exponent < -scale:
                raise ValueError(f"has more than {scale} decimal places")
            return d

        return to_decimal
    if pa.types.is_boolean(target):
        truthy = {"true", "t", "1", "yes", "y"}
        falsy = {"false", "f", "0", "no", "n"}

        def to_bool(v: Any) -> Any:
            if isinstance(v, str):
                low = v.strip().lower()
                if low in truthy:
                    return True
                if low in falsy:
                    return False
                raise ValueError("is not a boolean")
            return bool(v)

        return to_bool
    if isinstance(target, pa.BaseExtensionType) and target.extension_name == "arrow.uuid":
        return lambda v: v if isinstance(v, bytes) else uuid.UUID(str(v)).bytes
    if pa.types.is_integer(target):

        def to_int(v: Any) -> Any:
            if isinstance(v, str):
                v = v.strip()
            as_int = int(v)
            if isinstance(v, float) and v != as_int:
                raise ValueError("is not a whole number")
            return as_int

        return to_int
    if pa.types.is_floating(target):
        return float
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return lambda v: v if isinstance(v, str) else json.dumps(v, default=str)
    return lambda v: v


def is_uuid(data_type: pa.DataType) -> bool:
    """True for Arrow's canonical UUID extension type."""
    return isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.uuid"


def _array(values: list[Any], target: pa.DataType) -> pa.Array:
    if is_uuid(target):
        return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))
    return pa.array(values, type=target)


def _cast_per_value(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None]]:
    """Convert value by value; returns the array (failures as null) and an error per row."""
    convert = _python_converter(target)
    out: list[Any] = []
    errors: list[str | None] = []
    for value in column.to_pylist():
        if value is None:
            out.append(None)
            errors.append(None)
            continue
        try:
            converted = convert(value)
            _array([converted], target)  # validates range/precision exactly as Arrow will
            out.append(converted)
            errors.append(None)
        except (ValueError, TypeError, OverflowError, decimal.InvalidOperation, pa.ArrowException) as exc:
            out.append(None)
            shown = str(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            detail = str(exc).split("\n")[0][:80]
            errors.append(f"cannot convert {shown!r} to {type_label(target)} ({detail})")
    return _array(out, target), errors


def cast_column(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None] | None]:
    """Cast ``column`` to ``target``; the error list is None when every value converted."""
    if column.type == target:
        return column, None
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), type=target), None
    try:
        if pa.types.is_timestamp(target) and target.tz and pa.types.is_timestamp(column.type) and not column.type.tz:
            # A naive database timestamp headed for timestamptz is taken as UTC.
            return pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC"), None
        return pc.cast(column, target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        array, errors = _cast_per_value(column, target)
        return array, errors


@dataclass
class EnforcedBatch:
    """Conforming rows (cast to the contract schema) and rejected rows with reasons."""

    good: pa.RecordBatch
    rejected: pa.RecordBatch | None

    @property
    def rejected_rows(self) -> int:
        """How many rows were rejected."""
        return 0 if self.rejected is None else self.rejected.num_rows


class ContractEnforcer:
    """Casts batches to a target schema and splits off rows that violate it.

    Args:
        schema: Target Arrow schema; non-nullable fields are the contract's ``required`` columns.
        source_names: Optional map from table column to the column name in the source batches.
    """

    def __init__(self, schema: pa.Schema, source_names: dict[str, str] | None = None) -> None:
        self.schema = schema
        self.source_names = source_names or {}

    @classmethod
    def for_contract(cls, contract: SchemaContract) -> ContractEnforcer:
        """Build from a schema contract."""
        return cls(
            contract_arrow_schema(contract),
            {c.name: c.source_name for c in contract.columns if c.source_name},
        )

    def quarantine_schema(self) -> pa.Schema:
        """Schema of the quarantine table: every column as text, plus reason, run id and time."""
        return pa.schema(
            [pa.field(f.name, pa.string()) for f in self.schema]
            + [
                pa.field(REASON_COLUMN, pa.string(), nullable=False),
                pa.field(RUN_ID_COLUMN, pa.string(), nullable=False),
                pa.field(REJECTED_AT_COLUMN, pa.timestamp("us", tz="UTC"), nullable=False),
            ]
        )

    def enforce(self, batch: pa.RecordBatch, run_id: str) -> EnforcedBatch:
        """Split ``batch`` into conforming rows and rejected rows."""
        rows = batch.num_rows
        names = set(batch.schema.names)
        arrays: list[pa.Array] = []
        originals: list[pa.Array] = []
        reasons: list[list[str]] | None = None

        def note(row_errors: list[str | None]) -> None:
            nonlocal reasons
            if reasons is None:
                reasons = [[] for _ in range(rows)]
            for i, message in enumerate(row_errors):
                if message is not None:
                    reasons[i].append(message)

        for field in self.schema:
            source_name = self.source_names.get(field.name, field.name)
            if source_name not in names:
                original = pa.nulls(rows, type=field.type)
                casted: pa.Array = original
                if not field.nullable:
                    note([f"{field.name}: required column missing from the source"] * rows)
            else:
                original = batch.column(source_name)
                casted, errors = cast_column(original, field.type)
                if errors is not None:
                    note([f"{field.name}: {e}" if e else None for e in errors])
                if not field.nullable and casted.null_count:
                    missing = pc.is_null(casted)
                    if errors is not None:
                        # value present but unconvertible is already explained; don't double-report
                        missing = pc.and_(missing, pc.is_null(original))
                    if pc.any(missing).as_py():
                        note(
                            [
                                f"{field.name}: required value is missing" if flag else None
                                for flag in missing.to_pylist()
                            ]
                        )
            arrays.append(casted)
            originals.append(original)

        if reasons is None or not any(reasons):
            return EnforcedBatch(pa.RecordBatch.from_arrays(arrays, schema=self.schema), None)

        bad_mask = pa.array([bool(r) for r in reasons], type=pa.bool_())
        good_mask = pc.invert(bad_mask)
        good_arrays = [pc.filter(a, good_mask) for a in arrays]
        good = pa.RecordBatch.from_arrays(good_arrays, schema=self.schema)
        bad_reasons = [("; ".join(r)) for r in reasons if r]
        now = dt.datetime.now(dt.timezone.utc)
        rejected_columns = [_as_text(pc.filter(o, bad_mask)) for o in originals]
        count = len(bad_reasons)
        rejected = pa.RecordBatch.from_arrays(
            [
                *rejected_columns,
                pa.array(bad_reasons, pa.string()),
                pa.array([run_id] * count, pa.string()),
                pa.array([now] * count, pa.timestamp("us", tz="UTC")),
            ],
            schema=self.quarantine_schema(),
        )
        return EnforcedBatch(good, rejected)


def _as_text(array: pa.Array) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    try:
        return pc.cast(array, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in array.to_pylist()], pa.string())


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
