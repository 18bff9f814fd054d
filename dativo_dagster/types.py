"""One place that maps contract types to Arrow (and through Arrow to Iceberg) and enforces them.

:class:`ContractEnforcer` takes whatever a source produced (strings from a CSV, typed columns from
a database) and returns the rows that conform, cast to the contract's Arrow schema, plus the rows
that do not, each with a reason. Casting is vectorised; only a column whose vectorised cast fails
falls back to per-value conversion, so clean data never pays for dirty data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import ColumnContract, ColumnType, SchemaContract

SYSTEM_PREFIX = "_dativo_"
"""Column names starting with this are dativo's own; source and contract columns may not use it."""

REASON_COLUMN = "_dativo_reason"
RUN_ID_COLUMN = "_dativo_run_id"
REJECTED_AT_COLUMN = "_dativo_rejected_at"
KEY_COLUMN = "_dativo_key"
"""Quarantine: the rejected row's primary key as source text (composite keys joined by U+001F)."""
CURSOR_FROM_COLUMN = "_dativo_cursor_from"
"""Quarantine: the cursor the read started from; a retry of the same range replaces its rows."""
SOURCE_REASON_COLUMN = "_dativo_source_reason"
"""Optional column of a source batch: why the source could not read the row exactly (null: fine)."""

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


def invalid_json(column: pa.Array) -> list[str | None] | None:
    """Per row, why a text value is not a JSON document (None: every value is one)."""
    errors: list[str | None] = []
    bad = False
    for value in column.to_pylist():
        if value is None:
            errors.append(None)
            continue
        try:
            json.loads(value, parse_constant=_no_constant)
            errors.append(None)
        except ValueError as exc:
            bad = True
            errors.append(f"cannot convert {_shown(value)!r} to json (is not a JSON document: {str(exc)[:60]})")
    return errors if bad else None


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
#
# Every converter below either returns the exact value or raises ValueError/TypeError with the
# reason; the row then goes to quarantine. None of them rounds, truncates or guesses.


_FRACTION = re.compile(r"[T ]?\d{1,2}:\d{2}(?::\d{2})?[.,](\d+)", re.ASCII)


def _check_fraction(text: str) -> None:
    """Refuse sub-microsecond digits that are not zero (Python would drop them silently)."""
    match = _FRACTION.search(text)
    if match and len(match.group(1)) > 6 and match.group(1)[6:].strip("0"):
        raise ValueError("has more than microsecond precision")


def _parse_time(text: str) -> dt.time:
    text = text.strip()
    _check_fraction(text)
    value = dt.time.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("has a zone offset but a time column has no time zone")
    return value


def _parse_timestamp(text: str, *, aware: bool) -> dt.datetime:
    text = text.strip()
    if not text.isascii():
        raise ValueError("is not an ISO-8601 timestamp")
    _check_fraction(text)
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if aware:
        # A CSV timestamp with no offset headed for a timestamptz column is read as UTC (documented).
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if value.tzinfo is not None:
        raise ValueError("has a zone offset but the column is a timestamp without time zone")
    return value


_INFINITY_TEXT = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"}
_NUMBER_TEXT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)
"""A number as a number is written: ASCII digits only (Python also reads ``1_000``, ``١٢٣`` and
full-width digits, none of which a data file means as a number)."""
_ZERO_TEXT = re.compile(r"^[+-]?(?:0+\.?0*|\.0+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)


def _number_text(value: str) -> str:
    text = value.strip()
    if not _NUMBER_TEXT.match(text):
        raise ValueError("is not a number")
    return text


def _to_float(value: Any) -> float:
    """A float from text or a number; a value that overflows to infinity or underflows to zero is refused."""
    if isinstance(value, bool):
        raise TypeError("is a boolean, not a number")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _INFINITY_TEXT:
            return float(text)
        result = float(_number_text(text))
        if math.isinf(result):
            raise ValueError("is out of the floating-point range")
        if result == 0 and not _ZERO_TEXT.match(text):
            raise ValueError("is too small for a floating-point number (it would become 0)")
        return result
    result = float(value)
    if math.isinf(result) and not (isinstance(value, float) and math.isinf(value)):
        raise ValueError("is out of the floating-point range")
    if result == 0 and value != 0:
        raise ValueError("is too small for a floating-point number (it would become 0)")
    return result


_FLOAT32_MAX = 3.4028234663852886e38


_FLOAT32_MIN_SUBNORMAL = 1.401298464324817e-45


def _to_float32(value: Any) -> float:
    """A float headed for a 32-bit column: refused beyond that type's range or below its smallest value."""
    result = _to_float(value)
    if math.isfinite(result) and abs(result) > _FLOAT32_MAX:
        raise ValueError("is out of the 32-bit floating-point range")
    if result != 0 and abs(result) < _FLOAT32_MIN_SUBNORMAL / 2:
        raise ValueError("is too small for a 32-bit floating-point number (it would become 0)")
    return result


def _to_int(value: Any) -> int:
    """An integer from decimal text or a number holding a whole value (never truncated)."""
    if isinstance(value, bool):
        raise TypeError("is a boolean, not an integer")
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_INTEGER.match(text):
            raise ValueError("is not a decimal integer")
        return int(text)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("is not a whole number")
    as_int = int(value)
    if isinstance(value, decimal.Decimal) and as_int != value:
        raise ValueError("is not a whole number")
    return as_int


_DECIMAL_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def _to_bool(value: Any) -> bool:
    """True/false from the usual spellings, or from the numbers 0 and 1 only."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUTHY:
            return True
        if low in _FALSY:
            return False
        raise ValueError("is not a boolean")
    if isinstance(value, (int, float, decimal.Decimal)) and value in (0, 1):
        return bool(value)
    raise ValueError("is not a boolean (only 0 and 1 are)")


_TRUTHY = {"true", "t", "1", "yes", "y"}
_FALSY = {"false", "f", "0", "no", "n"}


def _decimal_converter(scale: int) -> Callable[[Any], decimal.Decimal]:
    def to_decimal(value: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            raise TypeError("is a boolean, not a number")
        # A float's shortest repr is the value it was written as (0.1, not 0.1000000000000000055...).
        if isinstance(value, str):
            number = decimal.Decimal(_number_text(value))
        else:
            number = decimal.Decimal(repr(value) if isinstance(value, float) else str(value))
        if not number.is_finite():
            raise ValueError("is not a finite number")
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent < -scale and number != number.quantize(decimal.Decimal(1).scaleb(-scale)):
            raise ValueError(f"has more than {scale} decimal places")
        return number

    return to_decimal


def _ascii(text: str) -> str:
    if not text.isascii():
        raise ValueError("is not an ISO-8601 value")
    return text


def _to_text(value: Any) -> str:
    """Text of a value headed for a string column: scalars as written, objects and arrays as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8")  # UnicodeDecodeError is a ValueError: the row is rejected
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_json_default, separators=(",", ":"))
    raise TypeError(f"cannot be stored as text ({type(value).__name__})")


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # JSON numbers are written from floats: only a decimal a float holds exactly may pass.
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        if decimal.Decimal(repr(as_float)) == value:
            return as_float
        raise ValueError(f"decimal {value} cannot be written as an exact JSON number")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _list_converter(item_target: pa.DataType) -> Callable[[Any], list[Any]]:
    convert_item = _python_converter(item_target)

    def to_list(value: Any) -> list[Any]:
        # JSON numbers stay text until the item type reads them: json would turn 1e400 into
        # infinity and 1.10 into 1.1 on the way.
        items = (
            json.loads(value, parse_float=str, parse_int=str, parse_constant=_no_constant)
            if isinstance(value, str)
            else value
        )
        if not isinstance(items, (list, tuple)):
            raise ValueError("is not an array")
        out = []
        for position, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                raise ValueError("is a multi-dimensional array; only one-dimensional arrays are supported")
            try:
                out.append(None if item is None else convert_item(item))
            except (ValueError, TypeError, OverflowError, decimal.InvalidOperation) as exc:
                raise ValueError(f"element {position + 1} ({str(item)[:30]!r}) {exc}") from None
        return out

    return to_list


def _no_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON")


def _python_converter(target: pa.DataType) -> Callable[[Any], Any]:
    """A converter for one value, used only where the vectorised cast failed or is not exact."""

    def from_text(value: Any, parse: Callable[[str], Any]) -> Any:
        return parse(value) if isinstance(value, str) else value

    if pa.types.is_timestamp(target):
        aware = target.tz is not None
        return lambda v: from_text(v, lambda s: _parse_timestamp(s, aware=aware))
    if pa.types.is_time(target):
        return lambda v: from_text(v, _parse_time)
    if pa.types.is_date(target):
        return lambda v: from_text(v, lambda s: dt.date.fromisoformat(_ascii(s.strip())))
    if pa.types.is_decimal(target):
        return _decimal_converter(target.scale)
    if pa.types.is_boolean(target):
        return _to_bool
    if is_uuid(target):
        return lambda v: v if isinstance(v, bytes) else uuid.UUID(str(v)).bytes
    if pa.types.is_integer(target):
        return _to_int
    if pa.types.is_floating(target):
        if target.bit_width == 32:
            return _to_float32
        return _to_float
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return _to_text
    if pa.types.is_list(target) or pa.types.is_large_list(target):
        return _list_converter(target.value_type)
    return lambda v: v


def is_uuid(data_type: pa.DataType) -> bool:
    """True for Arrow's canonical UUID extension type."""
    return isinstance(data_type, pa.BaseExtensionType) and data_type.extension_name == "arrow.uuid"


def _array(values: list[Any], target: pa.DataType) -> pa.Array:
    if is_uuid(target):
        return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))
    if (pa.types.is_list(target) or pa.types.is_large_list(target)) and is_uuid(target.value_type):
        storage = pa.array(values, pa.list_(pa.binary(16)))
        return pa.ListArray.from_arrays(
            storage.offsets, pa.ExtensionArray.from_storage(target.value_type, storage.values), mask=storage.is_null()
        )
    return pa.array(values, type=target)


_CONVERSION_ERRORS = (ValueError, TypeError, OverflowError, decimal.InvalidOperation, pa.ArrowException)


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
        except _CONVERSION_ERRORS as exc:
            out.append(None)
            shown = _shown(value)
            detail = str(exc).split("\n")[0][:120]
            errors.append(f"cannot convert {shown!r} to {type_label(target)} ({detail})")
    return _array(out, target), errors


def _shown(value: Any) -> str:
    shown = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _needs_exact_path(column: pa.Array, target: pa.DataType) -> bool:
    """Casts Arrow performs without complaint that would not keep every value exact."""
    source = column.type
    if pa.types.is_boolean(target) and (
        pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    ):
        return True  # Arrow maps every non-zero number to true
    if pa.types.is_decimal(target) and pa.types.is_floating(source):
        return True  # Arrow rounds 1.5 into decimal(p,0) as 2
    if pa.types.is_integer(target) and (pa.types.is_string(source) or pa.types.is_large_string(source)):
        return bool(pc.any(pc.match_substring_regex(column, r"^\s*[+-]?0[xX]")).as_py())  # Arrow reads hex
    return False


def _overflowed(column: pa.Array, result: pa.Array) -> bool:
    """A float cast that turned a finite value into infinity or a non-zero one into zero (Arrow
    flags neither), in a flat column or in the elements of a list column."""
    if (pa.types.is_list(result.type) or pa.types.is_large_list(result.type)) and (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    ):
        return _overflowed(pc.list_flatten(column), pc.list_flatten(result))
    if not pa.types.is_floating(result.type):
        return False
    zeros = pc.equal(result, 0)
    if pc.any(zeros).as_py():
        numeric = pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)
        if numeric or pa.types.is_integer(column.type):
            underflowed = pc.and_(zeros, pc.not_equal(column, 0))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            underflowed = pc.and_(zeros, pc.invert(pc.match_substring_regex(column, _ZERO_TEXT.pattern)))
        else:
            underflowed = pa.array([False])
        if pc.any(underflowed).as_py():
            return True  # a non-zero value became zero
    if not pc.any(pc.is_inf(result)).as_py():
        return False
    if pa.types.is_floating(column.type):
        return bool(pc.any(pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(column)))).as_py())
    return True  # text or decimals: let the exact path tell 'inf' from an overflow


def cast_column(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None] | None]:
    """Cast ``column`` to ``target`` exactly; the error list is None when every value converted.

    The vectorised cast is used where it is exact; values it would round, truncate, overflow or
    reinterpret (a hex string as an integer, 2 as true) take the per-value path, which converts
    exactly or reports the value with the reason.
    """
    if column.type == target:
        return column, None
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), type=target), None
    if _needs_exact_path(column, target):
        return _cast_per_value(column, target)
    try:
        if pa.types.is_timestamp(target) and target.tz and pa.types.is_timestamp(column.type) and not column.type.tz:
            # A naive database timestamp headed for timestamptz is taken as UTC.
            return pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC"), None
        result = pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _cast_per_value(column, target)
    if _overflowed(column, result):
        return _cast_per_value(column, target)
    return result, None


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

    A source that finds a value it cannot read exactly (a malformed CSV line, an out-of-range
    code) marks the row with a reason in :data:`SOURCE_REASON_COLUMN`; such rows are rejected
    with that reason, like rows whose values do not convert.

    Args:
        schema: Target Arrow schema; non-nullable fields are the contract's ``required`` columns.
        source_names: Optional map from table column to the column name in the source batches.
        primary_key: Table columns whose source text identifies a rejected row
            (:data:`KEY_COLUMN` of the quarantine table).
    """

    def __init__(
        self,
        schema: pa.Schema,
        source_names: dict[str, str] | None = None,
        primary_key: tuple[str, ...] = (),
    ) -> None:
        self.schema = schema
        self.source_names = source_names or {}
        self.primary_key = tuple(primary_key)
        self._quarantine_schema = pa.schema(
            [pa.field(f.name, pa.string()) for f in self.schema]
            + [
                pa.field(REASON_COLUMN, pa.string(), nullable=False),
                pa.field(RUN_ID_COLUMN, pa.string(), nullable=False),
                pa.field(REJECTED_AT_COLUMN, pa.timestamp("us", tz="UTC"), nullable=False),
                pa.field(KEY_COLUMN, pa.string()),
                pa.field(CURSOR_FROM_COLUMN, pa.string()),
            ]
        )

    @classmethod
    def for_contract(cls, contract: SchemaContract, primary_key: tuple[str, ...] = ()) -> ContractEnforcer:
        """Build from a schema contract."""
        return cls(
            contract_arrow_schema(contract),
            {c.name: c.source_name for c in contract.columns if c.source_name},
            primary_key,
        )

    def quarantine_schema(self) -> pa.Schema:
        """Schema of the quarantine table: every column as text, then reason, run id, time, key, range."""
        return self._quarantine_schema

    def with_lineage(self, fields: list[pa.Field]) -> ContractEnforcer:
        """This enforcer with dativo's lineage columns (``_dativo_file``, ...) appended to the table schema.

        Raises:
            ValueError: a lineage field without the ``_dativo_`` prefix (a source bug).
        """
        if not fields:
            return self
        for lineage_field in fields:
            if not lineage_field.name.startswith(SYSTEM_PREFIX):
                raise ValueError(f"lineage column {lineage_field.name!r} must start with {SYSTEM_PREFIX!r}")
        extra = [f.with_nullable(True) for f in fields if self.schema.get_field_index(f.name) < 0]
        return ContractEnforcer(
            pa.schema([*self.schema, *extra], metadata=self.schema.metadata), self.source_names, self.primary_key
        )

    def enforce(self, batch: pa.RecordBatch, run_id: str) -> EnforcedBatch:
        """Split ``batch`` into conforming rows and rejected rows."""
        rows = batch.num_rows
        names = set(batch.schema.names)
        arrays: list[pa.Array] = []
        originals: list[pa.Array] = []
        reasons: list[list[str]] | None = None
        # Rows the source could not read carry its reason alone: their columns are placeholders,
        # so "required value is missing" or a cast error on them would only bury the real cause.
        flagged: list[bool] | None = None

        def note(row_errors: list[str | None]) -> None:
            nonlocal reasons
            if reasons is None:
                reasons = [[] for _ in range(rows)]
            for i, message in enumerate(row_errors):
                if message is not None and (flagged is None or not flagged[i]):
                    reasons[i].append(message)

        if SOURCE_REASON_COLUMN in names:
            source_reasons = batch.column(SOURCE_REASON_COLUMN)
            if source_reasons.null_count < rows:
                note(source_reasons.to_pylist())
                flagged = pc.is_valid(source_reasons).to_pylist()

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
                if errors is None and field.metadata and field.metadata.get(b"dativo.type") == b"json":
                    errors = invalid_json(casted)
                    if errors is not None:
                        casted = pc.if_else(
                            pa.array([e is None for e in errors]), casted, pa.nulls(len(casted), casted.type)
                        )
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
                self._row_keys(rejected_columns),
                pa.nulls(count, pa.string()),
            ],
            schema=self._quarantine_schema,
        )
        return EnforcedBatch(good, rejected)

    def _row_keys(self, text_columns: list[pa.Array]) -> pa.Array:
        """What identifies each rejected row across runs: its primary key as text, or, for a row
        without one (no key declared, or the key itself missing), a digest of all its values."""
        count = len(text_columns[0]) if text_columns else 0
        keys: pa.Array = pa.nulls(count, pa.string())
        if self.primary_key:
            index = {f.name: i for i, f in enumerate(self.schema)}
            parts = [text_columns[index[name]] for name in self.primary_key if name in index]
            if len(parts) == len(self.primary_key):
                keys = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
        if keys.null_count == 0:
            return keys
        rows = zip(*(column.to_pylist() for column in text_columns), strict=True) if text_columns else iter(())
        digests = [
            None if present else "row:" + hashlib.blake2b(repr(row).encode(), digest_size=12).hexdigest()
            for present, row in zip(pc.is_valid(keys).to_pylist(), rows, strict=False)
        ]
        return pc.coalesce(keys, pa.array(digests, pa.string()))


def _as_text(array: pa.Array) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    if not pa.types.is_nested(array.type):
        try:
            return pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    texts: list[str | None] = []
    for value in array.to_pylist():
        if value is None:
            texts.append(None)
            continue
        try:
            texts.append(_to_text(value))
        except _CONVERSION_ERRORS:
            texts.append(_shown(value) if not isinstance(value, bytes) else value.decode("utf-8", "backslashreplace"))
    return pa.array(texts, pa.string())


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
